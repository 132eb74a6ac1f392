"""The federation broker: OpenID Provider for web apps, card sign-in, registration."""

from __future__ import annotations

from typing import Any

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    # Lazy, so `import careid_broker.store` (the CLI, migrations) does not load Flask
    # and every view module first.
    if name == "create_app":
        from careid_broker.app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
