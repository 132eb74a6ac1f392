"""Who may open the console: a smartcard session of a local administrator.

Every console view is wrapped in `admin_view`, which runs before it:

1. no sign-in, or a password sign-in: a 303 to the sign-in page's smartcard option
   (`/login?card=required&next=<this page>`) — the console needs `AAL3_SMARTCARD`;
2. signed in with a card but administering no organisation: 403, audited;
3. otherwise the view runs with the `Actor` (the administrator and their organisations).

Rights come from the directory, kept in the signed browser-session cookie for this
sign-in session only, and re-read after `[admin] rights_cache_seconds` (≤ 5 minutes).
Each read also applies the standing check a refresh, an SSO or the role page makes
(`signin.standing`): an administrator whose account may no longer sign in, whose
card's Care Identity is suspended, or whose account now names another Care Identity,
loses the session (ended `account_refused`, as those paths end it) and the console.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Concatenate, ParamSpec

from flask import render_template, request, session, url_for
from flask.wrappers import Response
from werkzeug.wrappers import Response as BaseResponse

from careid_broker.admin.rights import Actor, CachedRights, admin_orgs, session_key
from careid_broker.assurance import ACR_CARD, level_of
from careid_broker.codes import BrokerCode, message_for
from careid_broker.directory import MailAccount
from careid_broker.errors import BrokerError, DirectoryUnavailableError
from careid_broker.signin.standing import refusal_words, session_standing
from careid_broker.store import EndReason, Outcome, SessionRecord
from careid_broker.web.context import current_broker
from careid_broker.web.signin_cookie import current_signin, end_signin

log = logging.getLogger(__name__)

P = ParamSpec("P")
#: A refused administrator: the console's, and the API's refused tokens.
EVENT_DENIED = "admin.denied"
RIGHTS_KEY = "careid_admin_rights"
CARD_LEVEL = level_of(ACR_CARD)


def is_card_session(signin: SessionRecord) -> bool:
    """Whether the session was opened with a smartcard (AAL3)."""
    level = level_of(signin.acr)
    return level is not None and CARD_LEVEL is not None and level >= CARD_LEVEL


def rights_for(signin: SessionRecord) -> frozenset[str]:
    """The organisations the signed-in person administers (cached with the session).

    A directory that cannot be reached raises `DirectoryUnavailableError`: the console
    is refused (a 503 page), never opened on stale rights. A session whose standing is
    refused ends, and the refusal (`care_identity_inactive`…) is raised, audited.
    """
    svc = current_broker()
    now = svc.store.now()
    cached = CachedRights.from_json(session.get(RIGHTS_KEY))
    if cached is not None and cached.fresh_for(
        signin.sid, now=now, ttl=svc.config.admin.rights_cache
    ):
        return cached.org_codes
    orgs = admin_orgs(_standing_account(signin), now=now)
    session[RIGHTS_KEY] = CachedRights(
        session=session_key(signin.sid), org_codes=orgs, read_at=now
    ).to_json()
    log.info("administrator rights read for a session: %d organisations", len(orgs))
    return orgs


def _standing_account(signin: SessionRecord) -> MailAccount:
    """The session's account, read now, if its holder may still be signed in."""
    try:
        account, _ = session_standing(
            current_broker().directory,
            account_mail=signin.account_mail,
            card_uuid=signin.card_uuid,
            registrations=current_broker().repos.registrations,
            sub=signin.sub,
            subjects=current_broker().repos.subjects,
        )
    except DirectoryUnavailableError:
        raise
    except BrokerError as exc:
        session.pop(RIGHTS_KEY, None)
        end_signin(EndReason.ACCOUNT_REFUSED, why=refusal_words(exc))
        current_broker().audit(
            EVENT_DENIED,
            outcome=Outcome.FAILURE,
            code=exc.code,
            actor=signin.account_mail,
            details={"path": request.path[:200], "session_ended": True},
        )
        raise
    return account


def step_up_url() -> str:
    """The sign-in page's smartcard option, coming back here afterwards."""
    # A POST cannot be replayed after signing in: come back to the console's home.
    back = request.full_path.rstrip("?") if request.method == "GET" else url_for("admin.home")
    return url_for("login.page", card="required", next=back)


def _denied(signin: SessionRecord) -> Response:
    current_broker().audit(
        EVENT_DENIED,
        outcome=Outcome.FAILURE,
        code=BrokerCode.ADMIN_NOT_AUTHORISED,
        actor=signin.account_mail,
        details={"path": request.path[:200]},
    )
    page = render_template(
        "admin_denied.html",
        code=BrokerCode.ADMIN_NOT_AUTHORISED.value,
        message=message_for(BrokerCode.ADMIN_NOT_AUTHORISED),
        account_mail=signin.account_mail,
    )
    return Response(page, status=403, mimetype="text/html")


def admin_view(
    view: Callable[Concatenate[Actor, P], BaseResponse],
) -> Callable[P, BaseResponse]:
    """Run the view only for a local administrator signed in with a smartcard."""

    @functools.wraps(view)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> BaseResponse:
        signin = current_signin()
        if signin is None or not is_card_session(signin):
            return Response(status=303, headers={"Location": step_up_url()})
        orgs = rights_for(signin)
        if not orgs:
            return _denied(signin)
        actor = Actor(name=signin.account_mail, org_codes=orgs, via="console")
        return view(actor, *args, **kwargs)

    return wrapper
