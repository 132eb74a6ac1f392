"""allowed_origins as browsers write them: an origin with its scheme's default port
could never match the `Origin` header a browser sends, so it is refused at load."""

from __future__ import annotations

import pytest

from careid_agent.config import Overrides, parse_config
from careid_agent.errors import ConfigError


@pytest.mark.parametrize(
    ("origin", "dev", "fix"),
    [
        ("https://sso.example.nhs.uk:443", False, "https://sso.example.nhs.uk"),
        ("http://localhost:80", True, "http://localhost"),
        ("http://127.0.0.1:80", True, "http://127.0.0.1"),
    ],
)
def test_an_origin_with_its_default_port_is_refused_naming_the_setting(
    origin: str, dev: bool, fix: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"allowed_origins": [origin]}, overrides=Overrides(dev=dev))
    message = str(caught.value)
    assert f"allowed_origins: {origin!r}" in message
    assert "default port" in message and repr(fix) in message


@pytest.mark.parametrize(
    ("origin", "dev"),
    [
        ("https://sso.example.nhs.uk", False),
        ("https://sso.example.nhs.uk:8443", False),
        ("https://sso.example.nhs.uk:80", False),  # not https's default: browsers keep it
        ("http://localhost:443", True),
        ("http://localhost:5000", True),
    ],
)
def test_other_ports_are_kept(origin: str, dev: bool) -> None:
    config = parse_config({"allowed_origins": [origin]}, overrides=Overrides(dev=dev))
    assert config.allowed_origins == (origin,)
