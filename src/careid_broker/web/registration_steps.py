"""The views of a registration in progress, each given this browser's pending step.

`page_step` wraps the pages: no pending step (expired, finished, never begun) restarts
the registration. `script_step` wraps the page script's JSON calls: a request from
another origin is refused, and no pending step is answered in JSON (like `/card/*`) for
the script to show; every refusal of a script call is audited (`script_refused`).
Either way the view runs as `view(card, service, pending)`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

from flask import request
from flask.wrappers import Response
from werkzeug.wrappers import Response as BaseResponse

from careid_broker.card.wiring import CardServices
from careid_broker.codes import BrokerCode
from careid_broker.errors import BrokerError
from careid_broker.registration.service import RegistrationExpiredError, RegistrationService
from careid_broker.registration.state import PendingRegistration
from careid_broker.store import Outcome
from careid_broker.web.card_pages import json_refusal, same_origin
from careid_broker.web.context import current_broker
from careid_broker.web.registration_pages import (
    available_card,
    current_pending,
    restart,
)

R = TypeVar("R", bound=BaseResponse)
StepView = Callable[[CardServices, RegistrationService, PendingRegistration], R]


def page_step(view: StepView[BaseResponse]) -> Callable[[], BaseResponse]:
    """Run a registration page with the pending step; restart when there is none."""

    @functools.wraps(view)
    def wrapper() -> BaseResponse:
        card = available_card()
        service = current_broker().registration
        try:
            pending = current_pending(service)
        except RegistrationExpiredError:
            return restart()
        try:
            return view(card, service, pending)
        except RegistrationExpiredError:
            # A page that found the account is no longer the entry step 1 checked
            # (forms refused so are audited by their views, with why).
            return restart()

    return wrapper


def script_refused(exc: BrokerError, *, mail: str | None = None) -> Response:
    """A script call refused: audited as a `registration.card` failure naming the
    endpoint (as `/card/*`'s refusals are), and answered in JSON with the code."""
    current_broker().audit(
        "registration.card",
        outcome=Outcome.FAILURE,
        code=exc.code,
        actor=mail,
        subject=mail,
        details={"endpoint": request.endpoint, "detail": exc.detail},
    )
    return json_refusal(exc.code)


def script_step(
    *, refused: type[BrokerError] = RegistrationExpiredError
) -> Callable[[StepView[Response]], Callable[[], Response]]:
    """Run a same-origin JSON call with the pending step.

    A `refused` error while loading the step (by default: there is none) is answered in
    JSON with its code; any other goes on to the app's error handler.
    """

    def decorate(view: StepView[Response]) -> Callable[[], Response]:
        @functools.wraps(view)
        def wrapper() -> Response:
            card = available_card()
            if not same_origin(card.origin):
                # Audited as its /card/* twins are: a cross-site page trying the script's
                # calls is what an investigator looks for.
                current_broker().audit(
                    "registration.card",
                    outcome=Outcome.FAILURE,
                    code=BrokerCode.REQUEST_NOT_SAME_ORIGIN,
                    details={"endpoint": request.endpoint},
                )
                return json_refusal(BrokerCode.REQUEST_NOT_SAME_ORIGIN)
            service = current_broker().registration
            try:
                pending = current_pending(service)
            except refused as exc:
                return script_refused(exc)
            return view(card, service, pending)

        return wrapper

    return decorate
