"""`careid-agent readers` and `careid-agent status`, driven with an in-process card."""

from __future__ import annotations

import io
import json

import pytest
from agent_fakes import KeyAlgorithm, ScriptedConnection, VirtualReader, make_test_profile

from careid_agent.cli import CliEnv, build_parser, main
from careid_agent.errors import NoCardError, NoReaderError, ReaderBusyError
from careid_agent.transport import CardConnection, ReaderInfo
from careid_devkit.cardsim import PIV_ATR


def _env(
    reader: VirtualReader | None = None,
    *,
    readers: list[ReaderInfo] | None = None,
    connect: object = None,
) -> tuple[CliEnv, io.StringIO, io.StringIO]:
    out, err = io.StringIO(), io.StringIO()

    def list_readers() -> list[ReaderInfo]:
        return readers or []

    env = CliEnv(
        list_readers=list_readers,
        connect=connect or (reader.connect if reader else _no_reader),  # type: ignore[arg-type]
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

    env, out, err = _env(connect=connect)
    assert main(["status", "--json", "--reader", "Test Reader"], env=env) == 0
    data = json.loads(out.getvalue())
    assert data["uuid"] == "555000000042" and data["pinTriesLeft"] == 3
    assert data["keyAlgorithm"] == "ECC P-384" and data["pinBlocked"] is False
    assert asked == ["Test Reader"]


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
    ("error", "code"),
    [(NoReaderError, "no_reader"), (NoCardError, "no_card"), (ReaderBusyError, "reader_busy")],
)
def test_status_errors_exit_1_with_code_and_message(error: type, code: str) -> None:
    def connect(name: str | None) -> CardConnection:
        raise error()

    env, out, err = _env(connect=connect)
    assert main(["status"], env=env) == 1
    assert err.getvalue().startswith(f"careid-agent: {code}: ")
    assert out.getvalue() == ""


def test_status_of_a_card_without_piv() -> None:
    card = ScriptedConnection([("00 A4 04 00 0B A0 00 00 03 08 00 00 10 00 01 00 00", "6A 82")])
    env, out, err = _env(connect=lambda name: card)
    assert main(["status", "--json"], env=env) == 1
    assert json.loads(err.getvalue()) == {
        "error": "not_piv_card",
        "message": "The card in the reader is not a Care Identity smartcard. Check you"
        " inserted the right card.",
    }
    assert card.closed


def test_parser_has_room_for_more_commands() -> None:
    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args([])
    assert parser.parse_args(["-vvv", "status", "--reader", "X"]).verbose == 3
