"""`careid-agent readers` and `careid-agent status`, driven with an in-process card and,
for PC/SC's own answers, a fake `smartcard.scard` under the real transport."""

from __future__ import annotations

import functools
import io
import json
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from agent_fakes import (
    FakeScard,
    KeyAlgorithm,
    ScriptedConnection,
    VirtualReader,
    make_test_profile,
)
from smartcard import scard

from careid_agent import transport
from careid_agent.cli import CliEnv, StatusExit, build_parser, main
from careid_agent.errors import NoCardError, NoReaderError, PcscUnavailableError, ReaderBusyError
from careid_agent.transport import CardConnection, ReaderInfo
from careid_devkit.cardsim import PIV_ATR


def _env(
    reader: VirtualReader | None = None,
    *,
    readers: list[ReaderInfo] | None = None,
    connect: object = None,
    scan: Callable[[], list[ReaderInfo]] | None = None,
    config_paths: list[Path] | None = None,
) -> tuple[CliEnv, io.StringIO, io.StringIO]:
    """Commands over `reader` (listed as PC/SC would list it), or over `readers`."""
    out, err = io.StringIO(), io.StringIO()

    def list_readers() -> list[ReaderInfo]:
        if readers is not None:
            return readers
        return [reader.info()] if reader is not None else []

    env = CliEnv(
        list_readers=scan or list_readers,
        connect=connect or (reader.connect if reader else _no_reader),  # type: ignore[arg-type]
        config_paths=lambda: list(config_paths or []),
        stdout=out,
        stderr=err,
    )
    return env, out, err


def _no_reader(name: str | None) -> CardConnection:
    raise NoReaderError()


def _card(**options: str) -> VirtualReader:
    reader = VirtualReader()
    reader.insert(make_test_profile(KeyAlgorithm.P384, **options))
    return reader


def test_readers_lists_each_reader() -> None:
    readers = [
        ReaderInfo(name="Virtual PCD 00 00", card_present=True, atr=PIV_ATR, event_count=1),
        ReaderInfo(name="Virtual PCD 00 01", card_present=False, atr=b"", event_count=0),
    ]
    env, out, err = _env(readers=readers)
    assert main(["readers"], env=env) == 0
    assert out.getvalue().splitlines() == [
        "Virtual PCD 00 00: card present, ATR 3B 81 01 80 00",
        "Virtual PCD 00 01: no card",
    ]
    env, out, _ = _env(readers=readers)
    assert main(["readers", "--json"], env=env) == 0
    rows = json.loads(out.getvalue())["readers"]
    assert rows[0] == {"name": "Virtual PCD 00 00", "cardPresent": True, "atr": "3B81018000"}
    assert rows[1]["atr"] is None


def test_readers_without_any_reader() -> None:
    env, out, err = _env(readers=[])
    assert main(["readers"], env=env) == 1
    assert out.getvalue() == ""
    assert err.getvalue().startswith("careid-agent: no_reader: No smartcard reader was found.")


def test_status_text() -> None:
    env, out, err = _env(_card())
    assert main(["status"], env=env) == 0
    text = out.getvalue()
    assert "Card holder:" in text and "Alex Morgan" in text
    assert "Care Identity UUID:  555000000001" in text
    assert "Key algorithm:       ECC P-384" in text
    assert "PIN tries left:      3" in text
    assert "Certificate expires:" in text and " UTC" in text
    assert err.getvalue() == ""


def test_status_json_and_reader_choice() -> None:
    reader = _card(uuid="555000000042")
    asked: list[str | None] = []

    def connect(name: str | None) -> CardConnection:
        asked.append(name)
        return reader.connect(name)

    env, out, err = _env(reader, connect=connect)
    assert main(["status", "--json", "--reader", "Test Reader"], env=env) == 0
    data = json.loads(out.getvalue())
    assert data["uuid"] == "555000000042" and data["pinTriesLeft"] == 3
    assert data["keyAlgorithm"] == "ECC P-384" and data["pinBlocked"] is False
    assert data["readerCheck"]["readerSetting"] == "Test Reader"
    assert data["readerCheck"]["chosen"] == "Virtual Test Reader 00"
    # The card is read in the reader the check found, by its full name.
    assert asked == ["Virtual Test Reader 00"]


def test_status_of_a_blocked_card_prints_it_and_fails() -> None:
    reader = VirtualReader()
    profile = make_test_profile(KeyAlgorithm.P256)
    reader.insert(profile.with_counters(pin_retries_left=0, puk_retries_left=3))
    env, out, err = _env(reader)
    assert main(["status"], env=env) == 1
    assert "PIN tries left:      blocked" in out.getvalue()
    assert err.getvalue().startswith("careid-agent: pin_blocked: ")
    assert "Registration Authority" in err.getvalue()
    env, out, err = _env(reader)
    assert main(["status", "--json"], env=env) == 1
    assert json.loads(err.getvalue())["error"] == "pin_blocked"


@pytest.mark.parametrize(
    ("error", "code", "exit_status"),
    [
        (NoReaderError, "no_reader", 4),
        (NoCardError, "no_card", 1),
        (ReaderBusyError, "reader_busy", 1),
        (PcscUnavailableError, "no_reader", 3),
    ],
)
def test_status_errors_exit_with_code_and_message(error: type, code: str, exit_status: int) -> None:
    # The reader was listed, then failed when the card was read.
    def connect(name: str | None) -> CardConnection:
        raise error()

    env, out, err = _env(_card(), connect=connect)
    assert main(["status"], env=env) == exit_status
    assert err.getvalue().startswith(f"careid-agent: {code}: ")
    assert "Reader used:         Virtual Test Reader 00" in out.getvalue()
    assert "Card holder" not in out.getvalue()


def test_status_of_a_card_without_piv() -> None:
    card = ScriptedConnection([("00 A4 04 00 0B A0 00 00 03 08 00 00 10 00 01 00 00", "6A 82")])
    listed = [ReaderInfo(name=card.reader, card_present=True, atr=card.atr, event_count=1)]
    env, out, err = _env(readers=listed, connect=lambda name: card)
    assert main(["status", "--json"], env=env) == 1
    assert json.loads(err.getvalue()) == {
        "error": "not_piv_card",
        "message": "The card in the reader is not a Care Identity smartcard. Check you"
        " inserted the right card.",
    }
    assert json.loads(out.getvalue())["readerCheck"]["chosen"] == "Scripted Reader 00"
    assert card.closed


def test_parser_has_room_for_more_commands() -> None:
    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args([])
    assert parser.parse_args(["-vvv", "status", "--reader", "X"]).verbose == 3


def _info(name: str, present: bool = False) -> ReaderInfo:
    return ReaderInfo(
        name=name, card_present=present, atr=b"\x3b" if present else b"", event_count=1
    )


THREE_READERS = [
    _info("Virtual PCD 00 00", present=True),
    _info("Virtual PCD 00 01"),
    _info("Omnikey CardMan 3121 00 00"),
]


def _pcscd_down() -> Callable[[], list[ReaderInfo]]:
    api = FakeScard({"Virtual PCD 00 00": (scard.SCARD_STATE_PRESENT, [0x3B])})
    api.establish_rv = scard.SCARD_E_NO_SERVICE
    return functools.partial(transport.scan_readers, api=api)


def _settings(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text('allowed_origins = ["https://sso.example.nhs.uk"]\n' + extra + "\n")
    return path


def _warnings(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


def test_readers_with_pcscd_down_does_not_send_the_clinician_to_the_plug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    env, out, err = _env(scan=_pcscd_down())
    with caplog.at_level(logging.WARNING, logger="careid_agent"):
        assert main(["readers"], env=env) == 1
    assert err.getvalue().startswith("careid-agent: no_reader: ")
    assert "plugged in" not in err.getvalue()
    assert "IT support" in err.getvalue()
    # The cause is in the log, for IT support.
    assert "pcscd" in _warnings(caplog) and "0x8010001D" in _warnings(caplog)


def test_status_tells_a_stopped_service_from_no_reader() -> None:
    env, out, err = _env(scan=_pcscd_down())
    assert main(["status"], env=env) == StatusExit.SERVICE == 3
    lines = out.getvalue().splitlines()
    assert "Settings file:       none found (the agent's defaults)" in lines
    assert "Reader setting:      none: the first reader holding a card" in lines
    assert "PC/SC service:       not running" in lines
    assert "Reader used:         none" in lines
    problem = next(line for line in lines if line.startswith("Problem:"))
    assert "pcscd" in problem and "0x8010001D" in problem
    assert err.getvalue().startswith("careid-agent: no_reader: ")
    assert "plugged in" not in err.getvalue()

    env, out, err = _env(scan=functools.partial(transport.scan_readers, api=FakeScard({})))
    assert main(["status"], env=env) == StatusExit.READER == 4
    lines = out.getvalue().splitlines()
    assert "PC/SC service:       running" in lines
    assert "Readers:             none" in lines
    assert "plugged in" in err.getvalue()  # here the plug is the likely cause

    env, out, _ = _env(scan=_pcscd_down())
    assert main(["status", "--json"], env=env) == 3
    check = json.loads(out.getvalue())["readerCheck"]
    assert check["service"] == "not-running" and check["readers"] == []
    assert check["problem"]["error"] == "no_reader" and "pcscd" in check["problem"]["detail"]


def test_status_names_the_reader_it_used() -> None:
    env, out, err = _env(_card())
    assert main(["status"], env=env) == 0
    lines = out.getvalue().splitlines()
    assert "PC/SC service:       running" in lines
    assert "Readers:             Virtual Test Reader 00 (card present)" in lines
    assert "Reader used:         Virtual Test Reader 00" in lines
    assert not any(line.startswith("Problem:") for line in lines)


def test_status_lists_every_reader_the_setting_matches(tmp_path: Path) -> None:
    settings = _settings(tmp_path, 'reader = "Virtual PCD"')
    env, out, err = _env(readers=THREE_READERS, config_paths=[settings])
    assert main(["status"], env=env) == StatusExit.READER
    text = out.getvalue()
    assert f"Settings file:       {settings}\n" in text
    assert f"Reader setting:      'Virtual PCD' (from {settings})\n" in text
    assert (
        "Readers:             Virtual PCD 00 00 (card present)\n"
        "                     Virtual PCD 00 01 (no card)\n"
        "                     Omnikey CardMan 3121 00 00 (no card)\n"
    ) in text
    assert (
        "Matching readers:    Virtual PCD 00 00\n"
        "                     Virtual PCD 00 01\n"
        "                     (several match: set the full name of one)\n"
    ) in text
    assert "Reader used:         none\n" in text
    # The clinician is told what to do, not how to find out.
    message = err.getvalue()
    assert message.startswith("careid-agent: no_reader: ")
    assert "careid-agent readers" not in message and "reader's name" not in message
    assert "IT support" in message

    env, out, err = _env(readers=THREE_READERS, config_paths=[settings])
    assert main(["status", "--json"], env=env) == 4
    check = json.loads(out.getvalue())["readerCheck"]
    assert check["readerSetting"] == "Virtual PCD"
    assert check["matching"] == ["Virtual PCD 00 00", "Virtual PCD 00 01"]
    assert check["chosen"] is None
    assert "2 readers match" in check["problem"]["detail"]
    assert "2 readers match" in json.loads(err.getvalue())["detail"]


def test_status_with_a_reader_setting_that_names_no_reader(tmp_path: Path) -> None:
    settings = _settings(tmp_path, 'reader = "Virtual PCD"')
    env, out, err = _env(readers=THREE_READERS, config_paths=[settings])
    # --reader replaces the file's setting.
    assert main(["status", "--reader", "Gemalto"], env=env) == StatusExit.READER
    lines = out.getvalue().splitlines()
    assert "Reader setting:      'Gemalto' (from --reader)" in lines
    assert "Matching readers:    none" in lines
    problem = next(line for line in lines if line.startswith("Problem:"))
    assert "'Gemalto'" in problem and "'Omnikey CardMan 3121 00 00'" in problem
    assert "careid-agent" not in err.getvalue().removeprefix("careid-agent: ")


def test_status_names_the_set_reader_when_it_has_no_card() -> None:
    env, out, err = _env(readers=THREE_READERS)
    assert main(["status", "--reader", "Omnikey"], env=env) == StatusExit.CARD
    assert "Reader used:         Omnikey CardMan 3121 00 00 (no card in it)" in out.getvalue()
    assert err.getvalue().startswith("careid-agent: no_card: ")


def test_status_uses_the_reader_preference_from_the_settings(tmp_path: Path) -> None:
    readers = [_info("Virtual PCD 00 00", present=True), _info("Omnikey 00 00", present=True)]
    settings = _settings(tmp_path, 'reader_preference = ["omnikey"]')
    env, out, _ = _env(readers=readers, config_paths=[settings], connect=_no_reader)
    assert main(["status"], env=env) == StatusExit.READER  # the reader vanished at connect
    lines = out.getvalue().splitlines()
    assert "Reader preference:   'omnikey'" in lines
    assert "Reader used:         Omnikey 00 00" in lines


def test_status_with_settings_that_are_not_valid(tmp_path: Path) -> None:
    settings = _settings(tmp_path, 'reader = "Virtual"\nalowed_origins = []')
    env, out, err = _env(_card(), config_paths=[settings])
    assert main(["status"], env=env) == StatusExit.SETTINGS == 5
    text = out.getvalue()
    assert f"Settings file:       {settings} (not valid: see below)" in text
    assert "Reader used:         Virtual Test Reader 00" in text
    assert "Card holder:" in text
    assert "unknown setting 'alowed_origins'" in text
    assert err.getvalue().startswith("careid-agent: agent_config_invalid: ")


def test_status_help_lists_the_exit_statuses(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["status", "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert "exit status" in text
    for status, words in [
        (StatusExit.OK, "a reader and its card are ready"),
        (StatusExit.CARD, "the card cannot be used"),
        (StatusExit.USAGE, "the command line is not valid"),
        (StatusExit.SERVICE, "the PC/SC service"),
        (StatusExit.READER, "no reader, or the reader setting names no reader or several"),
        (StatusExit.SETTINGS, "the settings file is not valid"),
    ]:
        assert f"  {int(status)}  {words}" in text
