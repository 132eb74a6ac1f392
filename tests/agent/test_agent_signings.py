"""A card session is kept for the card that signed that sign-in, named by the signing
handle `/v1/authenticate` gives the page: never for whichever card signed last for the
origin. The agent's HTTP API in-process over the virtual card, and the handle table."""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from agent_fakes import PIN, KeyAlgorithm, VirtualReader, make_test_profile
from agent_service_support import ORIGIN, QuietSource, Reply, call, new_challenge, wait_for

from careid_agent.config import AgentConfig
from careid_agent.journal import SessionJournal
from careid_agent.pin import PinEntry
from careid_agent.serve import Agent
from careid_agent.sessions import CardSession, NoticeAnswer, Poster
from careid_agent.signings import SIGNING_HEADER, Signings
from careid_agent.watcher import CardEvent, CardEventType

OTHER = "https://rostering.example.nhs.uk"
ALICE = make_test_profile(KeyAlgorithm.P256, name="Alice Able", uuid="555000000001")
BOB = make_test_profile(KeyAlgorithm.P256, name="Bob Baker", uuid="555000000002")
S_ALICE = "alice-session-0123456789"
S_BOB = "bob-session-0123456789ab"
S_OTHER = "bob-rostering-0123456789"


@dataclass
class Workstation:
    """One reader, the agent over it, and the `card/removed` notices it sent."""

    reader: VirtualReader
    agent: Agent
    notices: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def port(self) -> int:
        return self.agent.server.port

    def _event(self, kind: CardEventType, insertion_id: str) -> None:
        self.agent.service.on_card_event(
            CardEvent(
                type=kind,
                reader=self.reader.name,
                insertion_id=insertion_id,
                at=dt.datetime.now(dt.UTC),
            )
        )

    def insert(self, profile: object) -> None:
        self.reader.insert(profile)  # type: ignore[arg-type]
        self._event(CardEventType.INSERTED, self.insertion())

    def remove(self) -> None:
        gone = self.insertion()
        self.reader.remove()
        self._event(CardEventType.REMOVED, gone)

    def insertion(self) -> str:
        insertion = self.reader.info().insertion_id
        assert insertion is not None
        return insertion

    def sign(self, origin: str = ORIGIN) -> Reply:
        reply = call(
            self.port,
            "POST",
            "/v1/authenticate",
            body={"challenge": new_challenge()},
            origin=origin,
        )
        assert reply.status == 200, reply.body
        return reply

    def hand_over(self, body: dict[str, object], origin: str = ORIGIN) -> Reply:
        return call(self.port, "POST", "/v1/card-sessions", body=body, origin=origin)

    def ended(self) -> list[str]:
        with self.lock:
            return [session for _, session in self.notices]

    def kept(self) -> dict[str, list[str]]:
        return {
            insertion: sorted(s.card_session for s in sessions.values())
            for insertion, sessions in self.agent.sessions._by_card.items()
            if sessions
        }


def _agent(reader: VirtualReader, journal: Path, post: Poster) -> Agent:
    config = AgentConfig(
        port=0, allowed_origins=(ORIGIN, OTHER), dev=True, card_sessions_file=journal
    )
    return Agent(
        config,
        connect=reader.connect,
        list_readers=lambda: [reader.info()],
        reader_source=QuietSource(),
        pin_entry=PinEntry(provider=lambda request: bytearray(PIN.encode()), pin_pad=None),
        post=post,
    )


@pytest.fixture
def station(tmp_path: Path) -> Iterator[Workstation]:
    reader = VirtualReader()
    reader.insert(ALICE)
    holder: list[Workstation] = []

    def post(url: str, body: bytes, timeout: float) -> NoticeAnswer:
        with holder[0].lock:
            holder[0].notices.append((url, json.loads(body)["cardSession"]))
        return NoticeAnswer(status=204)

    agent = _agent(reader, tmp_path / "state" / "card-sessions.json", post)
    holder.append(Workstation(reader=reader, agent=agent))
    agent.start()
    try:
        yield holder[0]
    finally:
        agent.stop()


def _handle(reply: Reply) -> str:
    handle = reply.header(SIGNING_HEADER)
    assert handle is not None, "no signing handle"
    return handle


def test_the_handle_travels_in_a_header_the_page_may_read_and_the_token_is_unchanged(
    station: Workstation,
) -> None:
    reply = station.sign()
    handle = _handle(reply)
    assert len(handle) == 22 and handle != _handle(station.sign())  # 128 random bits
    assert SIGNING_HEADER in (reply.header("Access-Control-Expose-Headers") or "")
    # The page forwards the token to its broker as it is: careid-auth:1's five fields.
    assert set(reply.json) == {"format", "certificate", "algorithm", "signature", "agentVersion"}


def test_a_late_page_cannot_hand_its_session_to_the_next_persons_card(
    station: Workstation,
) -> None:
    # Alice signs; her page waits on the broker (or her registration's confirmation).
    alice = _handle(station.sign())
    station.remove()
    station.insert(BOB)
    bob = _handle(station.sign())
    late = station.hand_over({"cardSession": S_ALICE, "signing": alice})
    assert (late.status, late.json["error"]) == (409, "card_removed")
    assert wait_for(lambda: station.ended() == [S_ALICE])
    kept = station.hand_over({"cardSession": S_BOB, "signing": bob})
    assert (kept.status, kept.json) == (201, {"cardSession": S_BOB, "reader": station.reader.name})
    assert station.kept() == {station.insertion(): [S_BOB]}
    station.remove()
    assert wait_for(lambda: station.ended() == [S_ALICE, S_BOB])


def test_a_page_without_a_handle_is_refused_when_two_cards_signed_for_its_origin(
    station: Workstation,
) -> None:
    # An older page sends no handle: "the card that last signed" would be Bob's.
    station.sign()
    station.remove()
    station.insert(BOB)
    station.sign()
    late = station.hand_over({"cardSession": S_ALICE})
    assert (late.status, late.json["error"]) == (409, "card_removed")
    assert wait_for(lambda: station.ended() == [S_ALICE])
    assert station.kept() == {}


def test_a_page_without_a_handle_is_kept_when_one_card_signed(station: Workstation) -> None:
    station.sign()
    station.sign(OTHER)  # another origin's sign-in does not make this one ambiguous
    reply = station.hand_over({"cardSession": S_ALICE})
    assert reply.status == 201
    assert station.kept() == {station.insertion(): [S_ALICE]}
    # The same page reloaded hands the same session over again: answered as it stands.
    assert station.hand_over({"cardSession": S_ALICE}).status == 201
    assert station.ended() == []


@pytest.mark.parametrize(
    "handle",
    ["A" * 22, "short", "", None, 42, ["x"]],
    ids=["unknown", "short", "empty", "null", "number", "list"],
)
def test_a_handle_that_names_no_signing_ends_the_session(
    station: Workstation, handle: object
) -> None:
    station.sign()
    reply = station.hand_over({"cardSession": S_ALICE, "signing": handle})
    assert (reply.status, reply.json["error"]) == (409, "card_removed")
    assert wait_for(lambda: station.ended() == [S_ALICE])
    assert station.kept() == {}


def test_a_handle_is_used_once_and_by_its_own_origin_only(station: Workstation) -> None:
    handle = _handle(station.sign())
    assert station.hand_over({"cardSession": S_ALICE, "signing": handle}).status == 201
    again = station.hand_over({"cardSession": S_BOB, "signing": handle})
    assert (again.status, again.json["error"]) == (409, "card_removed")
    other = _handle(station.sign(OTHER))
    crossed = station.hand_over({"cardSession": S_BOB, "signing": other})
    assert (crossed.status, crossed.json["error"]) == (409, "card_removed")
    assert wait_for(lambda: station.ended() == [S_BOB, S_BOB])
    # Used up by the attempt: its own origin cannot use it afterwards either.
    used = station.hand_over({"cardSession": S_BOB, "signing": other}, origin=OTHER)
    assert used.status == 409
    assert station.kept() == {station.insertion(): [S_ALICE]}


def test_stopping_the_agent_ends_the_card_sessions_it_keeps(station: Workstation) -> None:
    # An agent update, a crash-restart by the logon task or a sign-out stops the agent
    # with Alice's card still in: no later removal could be reported, so her sessions
    # must end now (fail closed), not stay open for the next person.
    alice = _handle(station.sign())
    assert station.hand_over({"cardSession": S_ALICE, "signing": alice}).status == 201
    other = _handle(station.sign(OTHER))
    assert station.hand_over({"cardSession": S_BOB, "signing": other}, origin=OTHER).status == 201
    station.agent.stop()
    with station.lock:
        assert sorted(station.notices) == [
            (f"{OTHER}/card/removed", S_BOB),
            (f"{ORIGIN}/card/removed", S_ALICE),
        ]
    assert station.kept() == {}
    station.agent.stop()  # stopping twice (the fixture does) reports nothing again
    assert len(station.ended()) == 2


def test_the_card_sessions_of_an_agent_that_did_not_stop_are_ended_by_the_next(
    station: Workstation,
) -> None:
    # A crash, a kill from Task Manager or a power cut: the agent cannot report anything,
    # and what it held in memory is gone. What it wrote down is not: the next agent
    # reports those sessions ended as it starts, before the next person sits down.
    journal = station.agent.config.card_sessions_file
    assert journal is not None
    assert (
        station.hand_over({"cardSession": S_ALICE, "signing": _handle(station.sign())}).status
        == 201
    )
    other = _handle(station.sign(OTHER))
    assert station.hand_over({"cardSession": S_BOB, "signing": other}, origin=OTHER).status == 201
    assert journal.stat().st_mode & 0o777 == 0o600
    assert journal.parent.stat().st_mode & 0o077 == 0
    notices: list[tuple[str, str]] = []

    def post(url: str, body: bytes, timeout: float) -> NoticeAnswer:
        notices.append((url, json.loads(body)["cardSession"]))
        return NoticeAnswer(status=204)

    # The first agent is left as it is (it is the fixture's to stop): the next one knows
    # of it only what it left on disk.
    _as_if_killed(station.agent)
    successor = _agent(station.reader, journal, post)
    successor.start()
    try:
        wait_for(lambda: len(notices) == 2)
        assert sorted(notices) == [
            (f"{OTHER}/card/removed", S_BOB),
            (f"{ORIGIN}/card/removed", S_ALICE),
        ]
        wait_for(lambda: not journal.exists())  # each delivered: nothing more owed
    finally:
        successor.stop()
    assert len(notices) == 2  # nothing kept by the successor, nothing more reported


def test_the_file_follows_the_sessions_and_keeps_what_a_stop_could_not_report(
    tmp_path: Path,
) -> None:
    journal = tmp_path / "card-sessions.json"
    reader = VirtualReader()
    reader.insert(ALICE)

    def post(url: str, body: bytes, timeout: float) -> NoticeAnswer:
        if json.loads(body)["cardSession"] == S_BOB:
            raise OSError("connection refused")  # Bob's sign-in service is unreachable
        return NoticeAnswer(status=204)

    agent = _agent(reader, journal, post)
    station = Workstation(reader=reader, agent=agent)
    agent.start()
    try:
        alice = _handle(station.sign())
        assert station.hand_over({"cardSession": S_ALICE, "signing": alice}).status == 201
        assert _written(journal) == [S_ALICE]
        station.remove()
        wait_for(lambda: not journal.exists())  # her card left: reported, not kept
        station.insert(BOB)
        bob = _handle(station.sign())
        assert station.hand_over({"cardSession": S_BOB, "signing": bob}).status == 201
        other = _handle(station.sign(OTHER))
        assert (
            station.hand_over({"cardSession": S_OTHER, "signing": other}, origin=OTHER).status
            == 201
        )
        assert sorted(_written(journal)) == sorted([S_BOB, S_OTHER])
    finally:
        agent.stop()  # the other service takes its notice; Bob's cannot be reached
    assert _written(journal) == [S_BOB]  # left for the next agent to report


def _written(journal: Path) -> list[str]:
    return [item["cardSession"] for item in json.loads(journal.read_text())]


def _as_if_killed(agent: Agent) -> None:
    """What the system does for an agent's process that dies: the lock on its card
    sessions file goes. (The agent object itself is left for its test to stop.)"""
    assert agent.journal is not None and agent.journal._owner is not None
    agent.journal._owner.close()
    agent.journal._owner = None


def test_a_notice_is_written_down_until_its_origin_takes_it(tmp_path: Path) -> None:
    # Every notice owed is in the file until delivered: one queued when a card leaves
    # while the broker is slow, and one a new agent inherits but cannot deliver (the
    # network not up yet at logon), survive the agent that owed them.
    journal = tmp_path / "card-sessions.json"
    reader = VirtualReader()
    reader.insert(ALICE)
    answering = threading.Event()
    notices: list[str] = []

    def slow(url: str, body: bytes, timeout: float) -> NoticeAnswer:
        answering.wait(10)
        notices.append(json.loads(body)["cardSession"])
        return NoticeAnswer(status=204)

    agent = _agent(reader, journal, slow)
    station = Workstation(reader=reader, agent=agent)
    agent.start()
    try:
        alice = _handle(station.sign())
        assert station.hand_over({"cardSession": S_ALICE, "signing": alice}).status == 201
        station.remove()
        assert _written(journal) == [S_ALICE]  # her card left; the notice is on its way
        _as_if_killed(agent)
        answering.set()
    finally:
        agent.stop()

    def unreachable(url: str, body: bytes, timeout: float) -> NoticeAnswer:
        raise OSError("network unreachable")

    journal.write_text(json.dumps([_entry_of(S_ALICE), _entry_of(S_BOB)]))
    successor = _agent(VirtualReader(), journal, unreachable)
    successor.start()
    successor.stop()  # gave up: both still owed
    assert sorted(_written(journal)) == sorted([S_ALICE, S_BOB])
    delivered: list[str] = []

    def fine(url: str, body: bytes, timeout: float) -> NoticeAnswer:
        delivered.append(json.loads(body)["cardSession"])
        return NoticeAnswer(status=204)

    third = _agent(VirtualReader(), journal, fine)
    third.start()
    try:
        wait_for(lambda: not journal.exists())
        assert sorted(delivered) == sorted([S_ALICE, S_BOB])
    finally:
        third.stop()


def _entry_of(card_session: str, origin: str = ORIGIN) -> dict[str, str]:
    return {
        "origin": origin,
        "insertionId": "r#1",
        "reader": "Virtual PCD 00 00",
        "cardSession": card_session,
    }


def test_one_agent_owns_the_file_and_leaves_other_origins_entries_alone(tmp_path: Path) -> None:
    journal = tmp_path / "card-sessions.json"
    elsewhere = _entry_of("someone-elses-0123456789", origin="https://other.trust.example")
    journal.write_text(json.dumps([elsewhere]))
    first = SessionJournal(journal, is_ours=lambda origin: origin == ORIGIN)
    assert first.open() == []  # not this agent's origin: left as it is
    first.owe([CardSession(**_session_fields(S_ALICE))])
    second = SessionJournal(journal)
    assert second.open() == []  # another agent (a demo, say) owns the file
    second.owe([CardSession(**_session_fields(S_BOB))])  # and keeps nothing in it
    second.close()
    assert json.loads(journal.read_text()) == [elsewhere, _entry_of(S_ALICE)]
    first.close()
    third = SessionJournal(journal)
    assert [s.card_session for s in third.open()] == ["someone-elses-0123456789", S_ALICE]
    third.close()


def _session_fields(card_session: str) -> dict[str, str]:
    entry = _entry_of(card_session)
    return {
        "origin": entry["origin"],
        "insertion_id": entry["insertionId"],
        "reader": entry["reader"],
        "card_session": card_session,
    }


def test_a_file_that_is_not_the_agents_is_ignored(tmp_path: Path) -> None:
    journal = tmp_path / "card-sessions.json"
    for garbage in (b"not json", b'{"a": 1}', b'[{"origin": 1}, {"cardSession": "short"}]'):
        journal.write_bytes(garbage)
        reader = SessionJournal(journal)
        assert reader.open() == []
        reader.close()
        assert not journal.exists()


def test_a_member_the_agent_does_not_know_is_still_a_bad_request(station: Workstation) -> None:
    reply = station.hand_over({"cardSession": S_ALICE, "signing": "A" * 22, "extra": 1})
    assert (reply.status, reply.json["error"]) == (400, "bad_request")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_handles_expire_and_the_table_is_bounded() -> None:
    clock = Clock()
    table = Signings(max_entries=3, max_age=60, clock=clock)
    old = table.record(origin=ORIGIN, insertion_id="r#1", reader="r")
    clock.now += 61
    assert table.claim(ORIGIN, old) is None and len(table) == 0
    handles = [table.record(origin=ORIGIN, insertion_id="r#2", reader="r") for _ in range(4)]
    assert len(table) == 3
    assert table.claim(ORIGIN, handles[0]) is None  # the oldest made room
    signing = table.claim(ORIGIN, handles[3])
    assert signing is not None and signing.insertion_id == "r#2"


def test_without_a_handle_only_unclaimed_young_signings_count() -> None:
    clock = Clock()
    table = Signings(max_age=60, clock=clock)
    table.record(origin=ORIGIN, insertion_id="r#1", reader="r")
    clock.now += 61  # Alice's signing is too old to make Bob's ambiguous
    bob = table.record(origin=ORIGIN, insertion_id="r#2", reader="r")
    claimed = table.claim_sole(ORIGIN)
    assert claimed is not None and claimed.insertion_id == "r#2"
    assert table.claim(ORIGIN, bob) is None  # claimed already
    table.record(origin=ORIGIN, insertion_id="r#3", reader="r")
    alice = table.record(origin=ORIGIN, insertion_id="r#4", reader="r")
    assert table.claim_sole(ORIGIN) is None  # two cards: whose is it?
    assert table.claim(ORIGIN, alice) is not None  # a page with its handle still works
