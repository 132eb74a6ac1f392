"""The broker's services for one app, kept in `app.extensions["careid"]`.

Views reach them with `services()`; tests build an app with fakes passed to
`create_app` and may swap a service on the instance (it is a plain dataclass).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from flask import current_app

from careid_broker.config import BrokerConfig
from careid_broker.directory import Directory
from careid_broker.metrics import BrokerMetrics
from careid_broker.signin.password import PasswordSignin
from careid_broker.store import EndedSession, Repositories, Store

log = logging.getLogger(__name__)

EXTENSION_KEY = "careid"

SessionEndedHook = Callable[[EndedSession], None]


@dataclass(kw_only=True)
class BrokerServices:
    """Everything a view needs: configuration, store, directory, clock and metrics."""

    config: BrokerConfig
    store: Store
    repos: Repositories
    directory: Directory
    clock: Callable[[], datetime]
    metrics: BrokerMetrics
    password_signin: PasswordSignin
    # Called for every session that ends (sign-out, a new sign-in, expiry): tells the
    # session's relying parties by back-channel logout.
    session_ended: SessionEndedHook


def services() -> BrokerServices:
    """The services of the app handling the current request (or app context)."""
    found = current_app.extensions.get(EXTENSION_KEY)
    if not isinstance(found, BrokerServices):
        raise RuntimeError("the broker's services are not set up: build the app with create_app")
    return found


def notify_relying_parties(ended: EndedSession) -> None:
    """Queue back-channel logout for the session's relying parties (the OP's outbox).

    Imported when first needed: the OpenID Provider package depends on this module.
    """
    module = importlib.import_module("careid_broker.oidc.backchannel")
    module.notify_session_ended(ended)
