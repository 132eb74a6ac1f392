"""Reading settings: `SettingsReader`, shared by every section's `read_<section>` function.

Each area owns its section's frozen dataclass and its reader (`careid_broker.config`
assembles them into `BrokerConfig`); this package holds only the generic, typed reading
of a TOML table that names every problem at once, below every layer that reads settings.
"""

from __future__ import annotations

from careid_broker.settings.reader import (
    SettingsReader,
    did_you_mean,
    is_attribute_name,
    not_utf8,
)

__all__ = ["SettingsReader", "did_you_mean", "is_attribute_name", "not_utf8"]
