"""Authorization codes and tokens: hashed at rest, single use, rotation, revocation."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import text

from careid_broker.store import (
    AuthorizationCodes,
    CodeGrant,
    RedeemOutcome,
    Repositories,
    RevokeOutcome,
    RotateOutcome,
    Store,
    TokenKind,
    Tokens,
    UsedJtis,
    new_opaque_token,
)
from support.clock import FakeClock


def _grant(repos: Repositories, client_id: str = "webmail") -> CodeGrant:
    sub = repos.subjects.sub_for_account(mail="alice@nhs.net", dn="uid=alice")
    session = repos.sessions.create(
        sub=sub,
        account_mail="alice@nhs.net",
        acr="AAL3_SMARTCARD",
        amr=["sc", "pin", "hwk"],
        auth_time=repos.store.now(),
        card_uuid="100000000001",
    )
    return CodeGrant(
        client_id=client_id,
        redirect_uri="https://webmail.example/cb",
        scope="openid email",
        sid=session.record.sid,
        sub=sub,
        auth_time=repos.store.now(),
        acr="AAL3_SMARTCARD",
        amr=("sc", "pin", "hwk"),
        nonce="n-1",
        code_challenge="E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        code_challenge_method="S256",
        claims={"email": "alice@nhs.net", "nhsid_useruid": "100000000001"},
    )


def _all_text(store: Store, table: str) -> str:
    with store.engine.connect() as conn:
        return repr(conn.execute(text(f"SELECT * FROM {table}")).all())  # noqa: S608


def _issue_pair(
    repos: Repositories, grant: CodeGrant, code_id: int | None = None
) -> tuple[str, str]:
    access, refresh = new_opaque_token(), new_opaque_token()
    repos.tokens.issue(
        client_id=grant.client_id,
        sub=grant.sub,
        scope=grant.scope,
        access_token=access,
        refresh_token=refresh,
        sid=grant.sid,
        code_id=code_id,
    )
    return access, refresh


# -- codes ----------------------------------------------------------------------------


def test_a_code_redeems_once_with_its_grant(repos: Repositories, store: Store) -> None:
    grant = _grant(repos)
    issued = repos.codes.issue(grant)
    assert issued.code not in _all_text(store, "authorization_codes")
    assert issued.expires_at == store.now() + timedelta(seconds=60)

    result = repos.codes.redeem(issued.code, client_id="webmail")
    assert result.outcome is RedeemOutcome.OK
    assert result.code_id == issued.code_id
    assert result.grant is not None
    assert result.grant.claims == grant.claims and tuple(result.grant.amr) == grant.amr
    assert result.grant.nonce == "n-1" and result.grant.code_challenge_method == "S256"


def test_a_replayed_code_revokes_the_tokens_it_produced(repos: Repositories) -> None:
    grant = _grant(repos)
    issued = repos.codes.issue(grant)
    first = repos.codes.redeem(issued.code, client_id="webmail")
    access, refresh = _issue_pair(repos, grant, code_id=first.code_id)
    assert repos.tokens.lookup_access_token(access) is not None

    replay = repos.codes.redeem(issued.code, client_id="webmail")
    assert replay.outcome is RedeemOutcome.REUSED
    assert replay.tokens_revoked == 2 and replay.grant is None
    assert repos.tokens.lookup_access_token(access) is None
    rotated = repos.tokens.rotate_refresh_token(
        refresh, client_id="webmail", new_access_token="a2", new_refresh_token="r2"
    )
    assert rotated.outcome is RotateOutcome.REVOKED


def test_a_code_is_burned_by_the_wrong_client_or_when_late(
    repos: Repositories, clock: FakeClock
) -> None:
    grant = _grant(repos)
    stolen = repos.codes.issue(grant)
    assert repos.codes.redeem(stolen.code, client_id="evil").outcome is RedeemOutcome.WRONG_CLIENT
    assert repos.codes.redeem(stolen.code, client_id="webmail").outcome is RedeemOutcome.REUSED

    late = repos.codes.issue(grant)
    clock.advance(timedelta(seconds=60))
    assert repos.codes.redeem(late.code, client_id="webmail").outcome is RedeemOutcome.EXPIRED

    assert repos.codes.redeem("no-such-code", client_id="webmail").outcome is RedeemOutcome.UNKNOWN


def test_one_code_from_many_threads_and_two_instances_redeems_once(
    repos: Repositories,
    store: Store,
    other_store: Store,
    concurrently: Callable[..., list[Any]],
) -> None:
    instances = [AuthorizationCodes(store), AuthorizationCodes(other_store)]
    code = repos.codes.issue(_grant(repos)).code
    outcomes = concurrently(8, lambda i: instances[i % 2].redeem(code, client_id="webmail"))
    kinds = [o.outcome for o in outcomes]
    assert kinds.count(RedeemOutcome.OK) == 1
    assert set(kinds) == {RedeemOutcome.OK, RedeemOutcome.REUSED}


# -- access tokens ----------------------------------------------------------------------


def test_access_tokens_are_hashed_and_looked_up_while_live(
    repos: Repositories, store: Store, clock: FakeClock
) -> None:
    grant = _grant(repos)
    code_id = repos.codes.redeem(repos.codes.issue(grant).code, client_id="webmail").code_id
    access, refresh = _issue_pair(repos, grant, code_id=code_id)
    stored = _all_text(store, "oauth_tokens")
    assert access not in stored and refresh not in stored

    info = repos.tokens.lookup_access_token(access)
    assert info is not None
    assert (info.client_id, info.sub, info.scope, info.sid) == (
        "webmail",
        grant.sub,
        "openid email",
        grant.sid,
    )
    assert info.claims == grant.claims
    assert info.expires_at == clock.now + timedelta(minutes=10)
    # A refresh token is not an access token.
    assert repos.tokens.lookup_access_token(refresh) is None
    assert repos.tokens.lookup_access_token("unknown") is None
    clock.advance(timedelta(minutes=10))
    assert repos.tokens.lookup_access_token(access) is None


# -- refresh rotation --------------------------------------------------------------------


def test_rotation_hands_out_new_tokens_and_reuse_revokes_the_family(
    repos: Repositories,
) -> None:
    grant = _grant(repos)
    access, refresh = _issue_pair(repos, grant)
    new_access, new_refresh = new_opaque_token(), new_opaque_token()
    rotated = repos.tokens.rotate_refresh_token(
        refresh,
        client_id="webmail",
        new_access_token=new_access,
        new_refresh_token=new_refresh,
        scope="openid",
    )
    assert rotated.outcome is RotateOutcome.OK
    assert rotated.issued is not None and rotated.issued.refresh_token_id is not None
    assert (rotated.sub, rotated.sid, rotated.scope) == (grant.sub, grant.sid, "openid")
    new_info = repos.tokens.lookup_access_token(new_access)
    assert new_info is not None and new_info.scope == "openid"
    assert repos.tokens.lookup_access_token(access) is not None  # old one lives on to expiry

    # The old refresh token again: someone else holds it. Everything in the family dies.
    replay = repos.tokens.rotate_refresh_token(
        refresh, client_id="webmail", new_access_token="x1", new_refresh_token="y1"
    )
    assert replay.outcome is RotateOutcome.REUSED and replay.tokens_revoked == 4
    assert repos.tokens.lookup_access_token(new_access) is None
    assert repos.tokens.lookup_access_token(access) is None
    after = repos.tokens.rotate_refresh_token(
        new_refresh, client_id="webmail", new_access_token="x2", new_refresh_token="y2"
    )
    assert after.outcome is RotateOutcome.REVOKED


def test_rotation_refusals(repos: Repositories, clock: FakeClock) -> None:
    grant = _grant(repos)

    def rotate(token: str, client_id: str = "webmail") -> RotateOutcome:
        return repos.tokens.rotate_refresh_token(
            token,
            client_id=client_id,
            new_access_token=new_opaque_token(),
            new_refresh_token=new_opaque_token(),
        ).outcome

    assert rotate("unknown") is RotateOutcome.UNKNOWN
    access, refresh = _issue_pair(repos, grant)
    assert rotate(access) is RotateOutcome.UNKNOWN  # an access token cannot refresh

    # Another client presenting it means it leaked: refused and the family revoked.
    assert rotate(refresh, client_id="other-rp") is RotateOutcome.WRONG_CLIENT
    assert repos.tokens.lookup_access_token(access) is None
    assert rotate(refresh) is RotateOutcome.REVOKED

    _, old_refresh = _issue_pair(repos, grant)
    clock.advance(timedelta(hours=8))
    assert rotate(old_refresh) is RotateOutcome.EXPIRED


def test_one_refresh_token_from_many_threads_and_two_instances_rotates_once(
    repos: Repositories,
    store: Store,
    other_store: Store,
    concurrently: Callable[..., list[Any]],
) -> None:
    instances = [Tokens(store), Tokens(other_store)]
    _, refresh = _issue_pair(repos, _grant(repos))

    def rotate(i: int) -> RotateOutcome:
        return (
            instances[i % 2]
            .rotate_refresh_token(
                refresh,
                client_id="webmail",
                new_access_token=new_opaque_token(),
                new_refresh_token=new_opaque_token(),
            )
            .outcome
        )

    outcomes = concurrently(8, rotate)
    assert outcomes.count(RotateOutcome.OK) == 1
    assert set(outcomes) <= {RotateOutcome.OK, RotateOutcome.REUSED, RotateOutcome.REVOKED}


# -- revocation (RFC 7009) ----------------------------------------------------------------


def test_revoking_an_access_token_leaves_the_refresh_token(repos: Repositories) -> None:
    grant = _grant(repos)
    access, refresh = _issue_pair(repos, grant)
    result = repos.tokens.revoke_token(access, client_id="webmail")
    assert result.outcome is RevokeOutcome.REVOKED and result.tokens_revoked == 1
    assert repos.tokens.lookup_access_token(access) is None
    assert (
        repos.tokens.rotate_refresh_token(
            refresh, client_id="webmail", new_access_token="a", new_refresh_token="r"
        ).outcome
        is RotateOutcome.OK
    )


def test_revoking_a_refresh_token_revokes_its_grant(repos: Repositories) -> None:
    grant = _grant(repos)
    access, refresh = _issue_pair(repos, grant)
    other_access, _ = _issue_pair(repos, grant)  # another grant: untouched
    result = repos.tokens.revoke_token(refresh, client_id="webmail")
    assert result.outcome is RevokeOutcome.REVOKED and result.tokens_revoked == 2
    assert repos.tokens.lookup_access_token(access) is None
    assert repos.tokens.lookup_access_token(other_access) is not None


def test_only_the_owning_client_may_revoke(repos: Repositories) -> None:
    access, _ = _issue_pair(repos, _grant(repos))
    refused = repos.tokens.revoke_token(access, client_id="other-rp")
    assert refused.outcome is RevokeOutcome.WRONG_CLIENT
    assert repos.tokens.lookup_access_token(access) is not None
    missing = repos.tokens.revoke_token("unknown", client_id="webmail")
    assert missing.outcome is RevokeOutcome.NOT_FOUND


def test_find_reports_any_stored_token_as_it_stands(repos: Repositories) -> None:
    grant = _grant(repos)
    access, refresh = _issue_pair(repos, grant)
    found = repos.tokens.find(refresh)
    assert found is not None and found.kind is TokenKind.REFRESH
    assert (found.client_id, found.sub, found.sid) == ("webmail", grant.sub, grant.sid)
    assert found.rotated_at is None and found.revoked_at is None
    repos.tokens.rotate_refresh_token(
        refresh, client_id="webmail", new_access_token="a", new_refresh_token="r"
    )
    rotated = repos.tokens.find(refresh)
    assert rotated is not None and rotated.rotated_at is not None
    repos.tokens.revoke_token(access, client_id="webmail")
    revoked = repos.tokens.find(access)
    assert revoked is not None and revoked.kind is TokenKind.ACCESS
    assert revoked.revoked_at is not None
    assert repos.tokens.find("unknown") is None


# -- single-use JWT ids ------------------------------------------------------------------


def test_a_jti_is_accepted_once_per_scope_until_it_expires(
    repos: Repositories, clock: FakeClock
) -> None:
    expires = clock.now + timedelta(minutes=5)
    use = repos.jtis.use_once
    assert use(scope="client_assertion:webmail", jti="j1", expires_at=expires) is True
    assert use(scope="client_assertion:webmail", jti="j1", expires_at=expires) is False
    assert use(scope="client_assertion:rostering", jti="j1", expires_at=expires) is True
    assert use(scope="client_assertion:webmail", jti="x" * 5000, expires_at=expires) is True
    short = clock.now + timedelta(minutes=1)
    assert use(scope="s", jti="j2", expires_at=short) is True
    clock.advance(timedelta(minutes=1))
    # An entry past its expiry protects nothing more (the JWT's own exp refuses it).
    assert use(scope="s", jti="j2", expires_at=clock.now + timedelta(minutes=1)) is True
    assert repos.jtis.purge() == 0
    clock.advance(timedelta(minutes=4))
    assert repos.jtis.purge() == 4
    assert use(scope="client_assertion:webmail", jti="j1", expires_at=clock.now) is True


def test_one_jti_from_two_instances_at_once_is_accepted_once(
    repos: Repositories,
    store: Store,
    other_store: Store,
    clock: FakeClock,
    concurrently: Callable[..., list[Any]],
) -> None:
    instances = [UsedJtis(store), UsedJtis(other_store)]
    expires = clock.now + timedelta(minutes=5)
    results = concurrently(
        8, lambda i: instances[i % 2].use_once(scope="s", jti="same", expires_at=expires)
    )
    assert results.count(True) == 1
