"""Subjects and registrations: stable opaque subs, unique links, conflicts, listing."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from careid_broker.codes import BrokerCode
from careid_broker.store import (
    ConflictSide,
    LinkMode,
    NewRegistration,
    RegistrationConflictError,
    Registrations,
    Repositories,
    Store,
    Subjects,
)
from careid_broker.store.models import Registration, Subject
from careid_protocol.errors import ErrorCode
from support.clock import FakeClock


def _new(
    uuid: str = "100000000001", mail: str = "Alice.Smith@NHS.net", org: str = "RXX"
) -> NewRegistration:
    return NewRegistration(
        card_uuid=uuid,
        account_mail=mail,
        account_dn=f"uid={mail.split('@')[0].lower()},ou=people,dc=nhs",
        org_code=org,
        link_mode=LinkMode.UUID,
        cert_issuer_dn="CN=Dev Issuing CA",
        cert_serial="0A1B2C",
        cert_fingerprint="AB" * 32,
    )


# -- subjects -------------------------------------------------------------------------


def test_a_sub_is_opaque_random_and_stable_per_account(repos: Repositories) -> None:
    sub = repos.subjects.sub_for_account(mail="Alice.Smith@nhs.net", dn="uid=alice")
    assert re.fullmatch(r"[A-Za-z0-9_-]{22,}", sub)
    assert "alice" not in sub.lower()
    # The same account however the mail is cased, and even after a directory move.
    assert repos.subjects.sub_for_account(mail=" alice.smith@NHS.NET ", dn="uid=alice") == sub
    assert repos.subjects.sub_for_account(mail="alice.smith@nhs.net", dn="uid=a2,ou=x") == sub
    assert repos.subjects.find_sub("ALICE.SMITH@nhs.net") == sub
    assert repos.subjects.account_for_sub(sub) == "alice.smith@nhs.net"
    other = repos.subjects.sub_for_account(mail="bob@nhs.net", dn="uid=bob")
    assert other != sub


def test_the_dn_is_kept_current_beside_the_sub(repos: Repositories, store: Store) -> None:
    repos.subjects.sub_for_account(mail="a@nhs.net", dn="uid=a,ou=old")
    repos.subjects.sub_for_account(mail="a@nhs.net", dn="uid=a,ou=new")
    with store.session() as session:
        assert session.scalar(select(Subject.account_dn)) == "uid=a,ou=new"


def test_unknown_accounts_have_no_sub_until_asked(repos: Repositories) -> None:
    assert repos.subjects.find_sub("nobody@nhs.net") is None
    assert repos.subjects.account_for_sub("no-such-sub") is None
    with pytest.raises(ValueError):
        repos.subjects.sub_for_account(mail="  ", dn="uid=x")


def test_an_address_given_to_another_entry_gets_a_new_sub_and_retires_the_old(
    repos: Repositories, store: Store
) -> None:
    first = repos.subjects.subject_for_account(mail="a@nhs.net", dn="uid=a", entry_id="e-1")
    assert first.replaced_sub is None
    # Renamed and moved, the same entry: the same sub.
    moved = repos.subjects.subject_for_account(mail="A@nhs.net", dn="uid=a2,ou=x", entry_id="e-1")
    assert moved == first
    # The address now names another entry: a new sub, the old one named as replaced.
    second = repos.subjects.subject_for_account(mail="a@nhs.net", dn="uid=b", entry_id="e-2")
    assert second.sub != first.sub and second.replaced_sub == first.sub
    assert (
        repos.subjects.sub_for_account(mail="a@nhs.net", dn="uid=b", entry_id="e-2") == second.sub
    )
    assert repos.subjects.find_sub("a@nhs.net") == second.sub
    # The old sub stays for audit, retired, and is never handed out again.
    assert repos.subjects.account_for_sub(first.sub) == "a@nhs.net"
    with store.session() as session:
        rows = session.execute(
            select(Subject.sub, Subject.account_entry_id, Subject.retired_at)
        ).all()
    retired = {sub: (entry_id, at is not None) for sub, entry_id, at in rows}
    assert retired == {first.sub: ("e-1", True), second.sub: ("e-2", False)}


def test_a_sub_kept_without_an_entry_id_takes_the_next_one_given(
    repos: Repositories, store: Store
) -> None:
    # Made before the directory gave identifiers (or before the upgrade).
    sub = repos.subjects.sub_for_account(mail="a@nhs.net", dn="uid=a")
    assert repos.subjects.sub_for_account(mail="a@nhs.net", dn="uid=a", entry_id="e-1") == sub
    with store.session() as session:
        assert session.scalar(select(Subject.account_entry_id)) == "e-1"
    # A directory that gives none: the mail alone decides, as it did.
    assert repos.subjects.sub_for_account(mail="a@nhs.net", dn="uid=a") == sub
    changed = repos.subjects.subject_for_account(mail="a@nhs.net", dn="uid=a", entry_id="e-2")
    assert changed.sub != sub


def test_concurrent_first_sign_ins_agree_on_one_sub(
    store: Store, other_store: Store, concurrently: Callable[..., list[Any]]
) -> None:
    stores = [Subjects(store), Subjects(other_store)]
    subs = concurrently(8, lambda i: stores[i % 2].sub_for_account(mail="x@nhs.net", dn="uid=x"))
    assert len(set(subs)) == 1


# -- registrations --------------------------------------------------------------------


def test_create_and_find_by_either_side(repos: Repositories, clock: FakeClock) -> None:
    created = repos.registrations.create(_new())
    assert created.account_mail == "alice.smith@nhs.net"
    assert created.cert_serial == "0a1b2c" and created.cert_fingerprint == "ab" * 32
    assert created.registered_at == clock.now
    assert created.how == "self-service" and created.link_mode is LinkMode.UUID
    assert repos.registrations.by_uuid("100000000001") == created
    assert repos.registrations.by_mail("ALICE.smith@nhs.NET") == created
    assert repos.registrations.by_uuid("999999999999") is None
    assert repos.registrations.by_mail("nobody@nhs.net") is None


@pytest.mark.parametrize(
    ("second", "sides", "code"),
    [
        (_new(mail="bob@nhs.net"), {ConflictSide.CARD}, BrokerCode.REGISTRATION_CARD_LINKED),
        (
            _new(uuid="200000000002", mail="alice.smith@nhs.net"),
            {ConflictSide.ACCOUNT},
            BrokerCode.REGISTRATION_ACCOUNT_LINKED,
        ),
        (_new(), {ConflictSide.CARD, ConflictSide.ACCOUNT}, BrokerCode.REGISTRATION_CARD_LINKED),
    ],
)
def test_conflicts_name_the_side_already_linked(
    repos: Repositories, second: NewRegistration, sides: set[ConflictSide], code: ErrorCode
) -> None:
    first = repos.registrations.create(_new())
    with pytest.raises(RegistrationConflictError) as caught:
        repos.registrations.create(second)
    assert caught.value.sides == sides
    assert caught.value.code is code
    assert caught.value.message.endswith(".")
    assert repos.registrations.search().items == (first,)


def test_a_conflict_leaves_the_callers_transaction_usable(
    repos: Repositories, store: Store
) -> None:
    repos.registrations.create(_new())
    with store.transaction():
        with pytest.raises(RegistrationConflictError):
            repos.registrations.create(_new(mail="bob@nhs.net"))
        # PostgreSQL would refuse this if the failed INSERT had aborted the transaction.
        repos.registrations.create(_new(uuid="300000000003", mail="carol@nhs.net"))
    assert repos.registrations.by_mail("carol@nhs.net") is not None


def test_two_instances_racing_to_link_one_card_link_it_once(
    store: Store, other_store: Store, concurrently: Callable[..., list[Any]]
) -> None:
    instances = [Registrations(store), Registrations(other_store)]

    def register(i: int) -> str:
        try:
            instances[i % 2].create(_new(mail=f"user{i}@nhs.net"))
        except RegistrationConflictError as exc:
            return "+".join(sorted(exc.sides))
        return "ok"

    outcomes = concurrently(8, register)
    assert outcomes.count("ok") == 1
    assert set(outcomes) - {"ok"} == {"card"}
    with store.session() as session:
        assert len(session.scalars(select(Registration.id)).all()) == 1


def test_search_filters_by_organisation_uuid_and_text(
    repos: Repositories, clock: FakeClock
) -> None:
    for i, (mail, org) in enumerate(
        [("ann_lee@nhs.net", "RXX"), ("annXlee@nhs.net", "RYY"), ("bob@nhs.net", "RXX")]
    ):
        clock.advance(timedelta(minutes=1))
        repos.registrations.create(_new(uuid=f"10000000000{i}", mail=mail, org=org))

    page = repos.registrations.search(org_codes=["RXX"])
    assert [r.account_mail for r in page.items] == ["bob@nhs.net", "ann_lee@nhs.net"]
    assert page.total == 2
    assert repos.registrations.search(org_codes=[]).total == 0
    # "_" in the search text is a literal underscore, not a LIKE wildcard.
    assert [r.account_mail for r in repos.registrations.search(text="N_L").items] == [
        "ann_lee@nhs.net"
    ]
    assert repos.registrations.search(text="%").total == 0
    assert repos.registrations.search(card_uuid="100000000001").items[0].org_code == "RYY"
    assert repos.registrations.search(text="ou=PEOPLE").total == 3


def test_search_pages_are_stable_and_complete(repos: Repositories, clock: FakeClock) -> None:
    for i in range(7):
        if i % 3 == 0:
            clock.advance(timedelta(seconds=1))  # several rows share a timestamp
        repos.registrations.create(_new(uuid=f"5000000000{i:02d}", mail=f"u{i}@nhs.net"))
    seen: list[str] = []
    for offset in range(0, 7, 3):
        page = repos.registrations.search(offset=offset, limit=3)
        assert page.total == 7
        seen += [r.card_uuid for r in page.items]
    assert len(seen) == len(set(seen)) == 7
    assert seen == [r.card_uuid for r in repos.registrations.search(limit=10).items]
    with pytest.raises(ValueError):
        repos.registrations.search(limit=0)
    with pytest.raises(ValueError):
        repos.registrations.search(offset=-1)


def test_remove_returns_what_was_removed_once(repos: Repositories) -> None:
    created = repos.registrations.create(_new())
    repos.registrations.create(_new(uuid="200000000002", mail="bob@nhs.net"))
    assert repos.registrations.remove(card_uuid="100000000001") == created
    assert repos.registrations.remove(card_uuid="100000000001") is None
    assert repos.registrations.by_uuid("100000000001") is None
    removed = repos.registrations.remove(mail="BOB@nhs.net")
    assert removed is not None and removed.card_uuid == "200000000002"
    with pytest.raises(ValueError):
        repos.registrations.remove()
    # The card can be linked again once its old link is gone.
    repos.registrations.create(_new(mail="alice.new@nhs.net"))
