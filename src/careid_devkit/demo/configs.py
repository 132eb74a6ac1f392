"""The settings files the demo writes into its workspace: broker, clients, agent.

Each part runs from its own generated file rather than the repository's examples, so
the demo's ports, PKI and directory are the ones it started, and nothing in the user's
own settings (~/.config/careid/agent.toml, CAREID_* variables) leaks in.
DEMO MATERIAL: the secrets below are random per run or public demo values.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from careid_broker.config_env import SECTIONS
from careid_broker.oidc.client_secrets import hash_secret
from careid_devkit.demo.ports import DemoPorts
from careid_devkit.pki import DEV_CARD_AUTH_POLICY_OID, Pki
from careid_devkit.slapd import Slapd
from careid_devkit.webmail.config import DEFAULT_SCOPES, DEMO_CLIENT_SECRET

LOOPBACK = "127.0.0.1"
# The demo directory's made-up organisations, by ODS code (DEMO MATERIAL).
DEMO_ORGANISATIONS = Path(__file__).resolve().parents[3] / "config" / "organisations.csv"


@dataclass(frozen=True, kw_only=True)
class DemoUrls:
    """Where each part is reached (browsers use `localhost`, as the broker's issuer does)."""

    ports: DemoPorts

    @property
    def broker(self) -> str:
        return f"http://localhost:{self.ports.broker}"

    @property
    def webmail(self) -> str:
        return f"http://localhost:{self.ports.webmail}"

    @property
    def tray(self) -> str:
        return f"http://localhost:{self.ports.tray}"

    @property
    def agent(self) -> str:
        return f"http://{LOOPBACK}:{self.ports.agent}"

    @property
    def pki(self) -> str:
        return f"http://{LOOPBACK}:{self.ports.pki}"


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{escaped}"'
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def to_toml(tables: Mapping[str, Mapping[str, Any]], *, header: str = "") -> str:
    """A TOML document from `{table: {key: value}}`; nested mappings become [a.b] tables."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()]

    def emit(name: str, values: Mapping[str, Any]) -> None:
        lines.append(f"\n[{name}]" if lines else f"[{name}]")
        nested = []
        for key, value in values.items():
            if isinstance(value, Mapping):
                nested.append((f"{name}.{key}", value))
            elif value is not None:
                lines.append(f"{key} = {_toml_value(value)}")
        for child, child_values in nested:
            emit(child, child_values)

    for table, values in tables.items():
        emit(table, values)
    return "\n".join(lines) + "\n"


def broker_sections() -> tuple[str, ...]:
    """The sections this broker knows (parts of it are still being added)."""
    return tuple(SECTIONS)


def broker_settings(
    *,
    urls: DemoUrls,
    slapd: Slapd | Mapping[str, Any],
    database_url: str,
    pki: Pki,
    clients_file: Path,
    workers: int = 2,
    secret_key: str | None = None,
) -> dict[str, dict[str, Any]]:
    """The demo broker's settings as TOML tables (development mode)."""
    directory = (
        slapd.directory_settings(
            connect_timeout=2.0,
            receive_timeout=3.0,
            # Tests stop and restart the directory; a demo should notice it is back soon.
            server_retry_after=1.0,
            writable=True,
            write_bind_dn=slapd.aup_writer_bind_dn,
            write_bind_password=slapd.aup_writer_password,
        )
        if isinstance(slapd, Slapd)
        else dict(slapd)
    )
    tables: dict[str, dict[str, Any]] = {
        "broker": {
            "issuer": urls.broker,
            "secret_key": secret_key or secrets.token_urlsafe(36),
            "dev": True,
        },
        "server": {"bind": f"{LOOPBACK}:{urls.ports.broker}", "workers": workers, "threads": 4},
        "logging": {"level": "INFO", "format": "text"},
        "database": {"url": database_url},
        "directory": directory,
        "signin": {"help_contact": "the demo's README"},
        "oidc": {"clients_file": str(clients_file), "organisations_file": str(DEMO_ORGANISATIONS)},
    }
    known = broker_sections()
    if "pki" in known:
        tables["pki"] = {
            "trust_anchors": [str(pki.paths.root_certificate)],
            "intermediates": [str(pki.paths.issuing_certificate)],
            "require_policies": [DEV_CARD_AUTH_POLICY_OID.dotted_string],
            # The OCSP URL is in every card (AIA), pointing at the demo's responder.
            "revocation": "ocsp",
            "crl": {"use_distribution_points": True},
        }
    if "card" in known:
        tables["card"] = card_settings(urls)
    return {name: values for name, values in tables.items() if name in known}


def card_settings(urls: DemoUrls) -> dict[str, Any]:
    """The `[card]` table: where the sign-in page finds the agent."""
    return {"agent_url": urls.agent}


def clients_settings(urls: DemoUrls, *, secret: str = DEMO_CLIENT_SECRET) -> dict[str, Any]:
    """clients.toml: the webmail, at the demo's webmail port."""
    return {
        "clients.webmail": {
            "name": "Webmail (demo)",
            "secret_hash": hash_secret(secret),
            "token_endpoint_auth_method": ["client_secret_basic", "client_secret_post"],
            "redirect_uris": [f"{urls.webmail}/callback"],
            "post_logout_redirect_uris": [f"{urls.webmail}/"],
            "backchannel_logout_uri": f"{urls.webmail}/backchannel-logout",
            "scopes": list(DEFAULT_SCOPES),
        }
    }


def agent_settings(
    urls: DemoUrls,
    *,
    reader: str,
    pin_provider: str,
    extra_origins: tuple[str, ...] = (),
    log_file: Path | None = None,
    card_sessions_file: Path | None = None,
) -> dict[str, Any]:
    """agent.toml (top-level keys): the broker's origin only, pinned to the demo's reader."""
    settings: dict[str, Any] = {
        "port": urls.ports.agent,
        "allowed_origins": [urls.broker, *extra_origins],
        "pin_provider": pin_provider,
        "pin_policy": "every-signin",
        "pin_timeout_seconds": 120,
        "reader": reader,
        "card_wait_seconds": 10,
        "removal_notice_timeout_seconds": 2,
        "removal_notice_attempts": 3,
        "log_level": "info",
    }
    if log_file is not None:
        settings["log_file"] = str(log_file)
    if card_sessions_file is not None:
        settings["card_sessions_file"] = str(card_sessions_file)
    return settings


def write_agent_toml(path: Path, settings: Mapping[str, Any]) -> Path:
    """agent.toml has no tables: its keys sit at the top."""
    lines = ["# careid-agent settings written by `careid-devkit demo` (DEMO MATERIAL)."]
    lines.extend(f"{key} = {_toml_value(value)}" for key, value in settings.items())
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_toml(path: Path, tables: Mapping[str, Mapping[str, Any]], *, header: str) -> Path:
    """Write a TOML file readable by its owner only (it may hold a secret key)."""
    path.write_text(to_toml(tables, header=header), encoding="utf-8")
    path.chmod(0o600)
    return path
