"""`insert_new`: the hot path's Core INSERT of a new mapped object (SQLite and
PostgreSQL)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from careid_broker.store import Repositories, Store
from careid_broker.store._sql import insert_new
from careid_broker.store.models import OAuthToken, SigninSession


@pytest.fixture
def sub(repos: Repositories) -> str:
    return repos.subjects.sub_for_account(mail="alex@nhs.net", dn="uid=alex")


def _session_row(store: Store, sid: str, sub: str) -> SigninSession:
    now = store.now()
    return SigninSession(
        sid=sid,
        sub=sub,
        account_mail="alex@nhs.net",
        acr="AAL1_USERPASS",
        amr=["pwd"],
        auth_time=now,
        created_at=now,
        last_seen_at=now,
    )


def _token_row(store: Store, token_hash: str, sid: str, sub: str) -> OAuthToken:
    now = store.now()
    return OAuthToken(
        token_hash=token_hash,
        kind="access",
        family="fam",
        client_id="webmail",
        sub=sub,
        scope="openid",
        sid=sid,
        issued_at=now,
        expires_at=now + timedelta(minutes=5),
    )


def test_the_row_is_stored_with_its_values_and_the_id_the_database_gave(
    store: Store, sub: str
) -> None:
    with store.transaction() as session:
        insert_new(session, _session_row(store, "s1", sub))
        first = _token_row(store, "a" * 64, "s1", sub)
        second = _token_row(store, "b" * 64, "s1", sub)
        insert_new(session, first)
        insert_new(session, second)
    assert second.id == first.id + 1
    with store.session() as session:
        stored = session.scalars(select(OAuthToken).order_by(OAuthToken.id)).all()
        assert [(t.id, t.token_hash, t.sid) for t in stored] == [
            (first.id, "a" * 64, "s1"),
            (second.id, "b" * 64, "s1"),
        ]
        assert stored[0].expires_at == first.expires_at


def test_what_the_transaction_holds_unflushed_goes_first(store: Store, sub: str) -> None:
    # The token names a session added through the ORM a moment before and not yet
    # flushed: the foreign key holds only if that session is inserted first.
    with store.transaction() as session:
        session.add(_session_row(store, "s2", sub))
        insert_new(session, _token_row(store, "c" * 64, "s2", sub))
    with store.session() as session:
        assert session.scalar(select(OAuthToken.sid)) == "s2"


def test_an_object_a_session_holds_is_refused(store: Store, sub: str) -> None:
    with store.transaction() as session:
        row = _session_row(store, "s3", sub)
        session.add(row)
        with pytest.raises(ValueError, match="new object"):
            insert_new(session, row)
