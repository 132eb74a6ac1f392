"""What the broker's HTML forms share: the typed email address, and the fields of a
form shown again after its CSRF token expired."""

from __future__ import annotations

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
