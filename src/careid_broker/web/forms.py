"""What the broker's HTML forms share: the typed email address, the fields of a form
shown again after its CSRF token expired, and the tag that ties a form to its step."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from flask import request

from careid_broker.codes import BrokerCode, message_for

#: The longest email address a form takes (RFC 5321's path limit, as the directory's).
MAX_MAIL_LENGTH = 320


def typed_mail() -> str:
    """The email address the form sent, trimmed and cut to `MAX_MAIL_LENGTH`."""
    return request.form.get("email", "").strip()[:MAX_MAIL_LENGTH]


def expired_form_fields() -> dict[str, Any]:
    """A password form's arguments when it comes back with an expired token: the
    address typed kept, the expiry said at the password field, `csrf_invalid`, 400."""
    return {
        "email": typed_mail(),
        "summary": [("password", message_for(BrokerCode.CSRF_INVALID))],
        "code": BrokerCode.CSRF_INVALID,
        "status": 400,
    }


#: The hidden field that names the step a page's form acts on (`step_tag`).
STEP_FIELD = "step"


def step_tag(step_id: str) -> str:
    """What a page puts in its form to name the pending step it shows.

    A browser holds one sign-in or registration step at a time, in its session; a step
    begun in another tab (another person at a shared workstation, say) replaces it. The
    tag lets a form posted from the older page be refused instead of acting on the newer
    step. It is a digest: the step's id stays only in the session cookie.
    """
    return hashlib.sha256(b"careid-step\x00" + step_id.encode()).hexdigest()[:32]


def names_step(sent: object, step_id: str) -> bool:
    """Whether `sent` (a form field or JSON value) is the tag of `step_id`."""
    return isinstance(sent, str) and hmac.compare_digest(sent.encode(), step_tag(step_id).encode())


def step_refusal(sent: object, step_id: str, *, unnamed: BrokerCode) -> BrokerCode | None:
    """None when `sent` names the step `step_id`; else the code to refuse with.

    Another step's tag comes from a page for an earlier step: this browser's step was
    begun since, in another tab, perhaps by another person (`step_superseded`). No tag
    at all comes from a page shown before pages named their step (across an upgrade):
    `unnamed`, the step's own "start again" code, which leads back to the step."""
    if names_step(sent, step_id):
        return None
    return BrokerCode.STEP_SUPERSEDED if sent else unnamed
