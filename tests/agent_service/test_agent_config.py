"""Settings: the documented example file, defaults, command-line overrides, and strict,
complete validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from careid_agent.card import PinPolicy
from careid_agent.config import (
    DEFAULT_PORT,
    AgentConfig,
    Overrides,
    PinProviderKind,
    default_config_paths,
    default_journal_path,
    find_config,
    load_config,
    parse_config,
    windows_program_data,
)
from careid_agent.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "agent.toml"
SSO = "https://sso.careid.example.nhs.uk"


def test_the_documented_example_is_valid_and_says_what_the_defaults_are() -> None:
    config = load_config(EXAMPLE)
    assert config.source == EXAMPLE
    assert config.allowed_origins == (SSO,)
    # The example spells out every default, so it can never drift from the code.
    assert config == AgentConfig(allowed_origins=(SSO,), card_sessions_file=default_journal_path())
    assert (config.port, config.pin_policy, config.pin_provider) == (
        DEFAULT_PORT,
        PinPolicy.EVERY_SIGNIN,
        PinProviderKind.AUTO,
    )
    assert config.pin_timeout == 60 and config.reader is None and not config.dev


def test_flags_override_the_file(tmp_path: Path) -> None:
    config = load_config(
        EXAMPLE,
        overrides=Overrides(
            port=48000,
            allowed_origins=("https://a.example.nhs.uk", "https://b.example.nhs.uk:8443"),
            pin_provider="terminal",
            pin_policy="once-per-insertion",
            reader="PCD 00 01",
            log_level="debug",
        ),
    )
    assert config.port == 48000
    assert config.allowed_origins == ("https://a.example.nhs.uk", "https://b.example.nhs.uk:8443")
    assert config.pin_provider is PinProviderKind.TERMINAL
    assert config.pin_policy is PinPolicy.ONCE_PER_INSERTION
    assert (config.reader, config.log_level) == ("PCD 00 01", "debug")


def test_log_file_paths_expand_the_home_folder_and_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HOME", "/home/alex")
    monkeypatch.setenv("CAREID_LOGS", "/var/log/careid")
    home = parse_config({"allowed_origins": [SSO], "log_file": "~/careid/agent.log"})
    assert home.log_file == Path("/home/alex/careid/agent.log")
    variable = parse_config(
        {"allowed_origins": [SSO]}, overrides=Overrides(log_file="$CAREID_LOGS/a.log")
    )
    assert variable.log_file == Path("/var/log/careid/a.log")
    with pytest.raises(ConfigError, match="log_file must be a file path"):
        parse_config({"allowed_origins": [SSO], "log_file": 3})
    # The card sessions file: the user's state folder unless the settings name one.
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    assert parse_config({"allowed_origins": [SSO]}).card_sessions_file == Path(
        "/home/alex/.local/state/careid/card-sessions.json"
    )
    named = parse_config({"allowed_origins": [SSO], "card_sessions_file": "~/s.json"})
    assert named.card_sessions_file == Path("/home/alex/s.json")
    with pytest.raises(ConfigError, match="card_sessions_file must be a file path"):
        parse_config({"allowed_origins": [SSO], "card_sessions_file": ["x"]})


def test_no_file_means_defaults_plus_flags() -> None:
    config = load_config(None, overrides=Overrides(allowed_origins=(SSO,)))
    assert config == AgentConfig(allowed_origins=(SSO,), card_sessions_file=default_journal_path())
    with pytest.raises(ConfigError, match="at least one"):
        load_config(None)


def test_every_problem_is_named_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(
            {
                "port": 80,
                "allowed_origins": ["https://ok.example.nhs.uk", "https://bad.example/path"],
                "pin_policy": "every-sign",
                "pin_provider": "carrier-pigeon",
                "pin_timeout_seconds": "60",
                "alowed_origins": [],
            },
            where="agent.toml",
        )
    message = caught.value.message
    assert caught.value.code.value == "agent_config_invalid"
    assert message.startswith("agent.toml: ")
    for part in [
        "unknown setting 'alowed_origins'",
        "port must be between 1024 and 65535",
        "'https://bad.example/path' is not an allowed origin",
        "pin_policy must be one of every-signin, once-per-insertion (got 'every-sign')",
        "pin_provider must be one of auto, pinpad, dialog, terminal, env",
        "pin_timeout_seconds must be a number",
    ]:
        assert part in message


@pytest.mark.parametrize("origin", ["http://localhost:5000", "http://127.0.0.1:5000"])
def test_http_localhost_origins_need_dev(origin: str) -> None:
    with pytest.raises(ConfigError, match="need --dev"):
        parse_config({"allowed_origins": [origin]})
    config = parse_config({"allowed_origins": [origin]}, overrides=Overrides(dev=True))
    assert config.allowed_origins == (origin,) and config.dev


@pytest.mark.parametrize(
    "origin",
    [
        "http://sso.example.nhs.uk",
        "https://SSO.example.nhs.uk",
        "https://user@sso.example.nhs.uk",
        "https://sso.example.nhs.uk/",
        "https://sso.example.nhs.uk/login",
        "null",
        "*",
        "",
    ],
)
def test_origins_must_be_exact_https_origins(origin: str) -> None:
    with pytest.raises(ConfigError, match="is not an allowed origin"):
        parse_config({"allowed_origins": [origin]}, overrides=Overrides(dev=True))


def test_the_env_pin_provider_needs_dev() -> None:
    with pytest.raises(ConfigError, match="needs --dev"):
        parse_config({"allowed_origins": [SSO], "pin_provider": "env"})
    config = parse_config(
        {"allowed_origins": [SSO], "pin_provider": "env"}, overrides=Overrides(dev=True)
    )
    assert config.pin_provider is PinProviderKind.ENV


def test_port_zero_is_for_development_only() -> None:
    with pytest.raises(ConfigError):
        parse_config({"allowed_origins": [SSO]}, overrides=Overrides(port=0))
    assert parse_config({"allowed_origins": [SSO]}, overrides=Overrides(port=0, dev=True)).port == 0


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "absent.toml")
    broken = tmp_path / "agent.toml"
    broken.write_text("port = \n")
    with pytest.raises(ConfigError, match="not valid TOML") as caught:
        load_config(broken)
    assert str(broken) in caught.value.message


def test_default_locations_per_platform_the_machine_wide_file_first(tmp_path: Path) -> None:
    linux = default_config_paths(platform="linux", environ={"HOME": "/home/alex"})
    assert linux == [Path("/etc/careid/agent.toml"), Path("/home/alex/.config/careid/agent.toml")]
    xdg = default_config_paths(platform="linux", environ={"XDG_CONFIG_HOME": "/x", "HOME": "/h"})
    assert xdg[1] == Path("/x/careid/agent.toml")
    mac = default_config_paths(platform="darwin", environ={"HOME": "/Users/alex"})
    assert mac == [
        Path("/Library/Application Support/careid/agent.toml"),
        Path("/Users/alex/Library/Application Support/careid/agent.toml"),
    ]
    # The machine-wide folder is the system's, whatever %PROGRAMDATA% the user set for
    # their own account (it would let their file pass for IT's).
    users_own = {
        "APPDATA": "C:/Users/alex/AppData/Roaming",
        "PROGRAMDATA": "C:/Users/alex/AppData/Local/mine",
    }
    windows = default_config_paths(
        platform="win32", environ=users_own, program_data=lambda: Path("D:/ProgramData")
    )
    assert windows == [
        Path("D:/ProgramData/careid/agent.toml"),
        Path("C:/Users/alex/AppData/Roaming/careid/agent.toml"),
    ]
    unknown = default_config_paths(platform="win32", environ=users_own, program_data=lambda: None)
    assert unknown[0] == Path("C:/ProgramData/careid/agent.toml")
    assert windows_program_data() is None  # no Windows API here
    # The card sessions are the user's own, kept locally (not in a roaming profile).
    assert default_journal_path(platform="linux", environ={"HOME": "/home/alex"}) == Path(
        "/home/alex/.local/state/careid/card-sessions.json"
    )
    assert default_journal_path(
        platform="linux", environ={"XDG_STATE_HOME": "/s", "HOME": "/h"}
    ) == Path("/s/careid/card-sessions.json")
    assert default_journal_path(platform="darwin", environ={"HOME": "/Users/alex"}) == Path(
        "/Users/alex/Library/Application Support/careid/card-sessions.json"
    )
    assert default_journal_path(
        platform="win32", environ={"LOCALAPPDATA": "C:/Users/alex/AppData/Local"}
    ) == Path("C:/Users/alex/AppData/Local/careid/card-sessions.json")
    # IT's file wins over one in the user's profile; the user's is read without it.
    machine, user = tmp_path / "machine.toml", tmp_path / "user.toml"
    assert find_config([machine, user]) is None
    user.write_text("")
    assert find_config([machine, user]) == user
    machine.write_text("")
    assert find_config([machine, user]) == machine
