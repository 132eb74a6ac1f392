"""The card tray's web page and JSON API (Flask), and a server to run it on a thread.

    GET  /                      the page: every demo card with Insert, and Remove
    GET  /cards                 the same as JSON
    POST /cards/<id>/insert     put that card in the reader (the one there comes out)
    POST /cards/remove          take the card out

POSTs must carry the `X-Card-Tray` header: a page on another site cannot add a custom
header without a CORS preflight, which the tray never answers, so it cannot press the
buttons for you (CSRF). The Host header must be the tray's own loopback address (DNS
rebinding). The page's script is a static file: the CSP allows no inline script.
"""

from __future__ import annotations

import logging
import threading
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, current_app, jsonify, render_template, request
from flask.typing import ResponseReturnValue
from flask.wrappers import Response
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from careid_devkit.codes import DevkitCode, message_for
from careid_devkit.tray.reader import CardTray, TrayError
from careid_protocol.errors import ErrorCode

log = logging.getLogger(__name__)

EXTENSION = "careid_tray"
REQUEST_HEADER = "X-Card-Tray"
DEFAULT_PORT = 5003
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self';"
    " img-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
)
_LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")


def _tray() -> CardTray:
    tray: CardTray = current_app.extensions[EXTENSION]
    return tray


def _state() -> dict[str, Any]:
    tray = _tray()
    inserted = tray.inserted
    return {
        "reader": tray.reader,
        "inserted": inserted.card_id if inserted else None,
        "cards": [view.to_json() for view in tray.views()],
    }


def _refused(detail: str) -> TrayError:
    return TrayError(DevkitCode.DEVKIT_TRAY_REQUEST_REFUSED, detail, status=403)


def _check_host() -> None:
    host = (request.host or "").lower()
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    if name not in _LOOPBACK_HOSTS:
        raise _refused(f"Host {host[:100]!r} is not the tray's loopback address")


def _check_post() -> None:
    if request.headers.get(REQUEST_HEADER) is None:
        raise _refused(f"a POST without the {REQUEST_HEADER} header")
    origin = request.headers.get("Origin")
    if origin is not None and origin != "null":
        parts = urlsplit(origin)
        if parts.netloc.lower() != (request.host or "").lower():
            raise _refused(f"a POST from origin {origin[:100]!r}")
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("same-origin", "none"):
        raise _refused(f"a POST with Sec-Fetch-Site {site[:40]!r}")


def create_tray_app(tray: CardTray) -> Flask:
    """The tray's Flask app around a `CardTray`."""
    app = Flask("careid_devkit.tray")
    app.config["MAX_CONTENT_LENGTH"] = 4096
    app.extensions[EXTENSION] = tray

    @app.before_request
    def guard() -> None:
        _check_host()
        if request.method == "POST":
            _check_post()

    @app.after_request
    def headers(response: Response) -> Response:
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cache-Control"] = "no-store"
        return response

    @app.errorhandler(TrayError)
    def tray_error(error: TrayError) -> ResponseReturnValue:
        log.warning("%s: %s", error.code, error.detail)
        return jsonify(error=error.code.value, message=error.message), error.status

    @app.errorhandler(404)
    def not_found(_error: Exception) -> ResponseReturnValue:
        code = DevkitCode.PAGE_NOT_FOUND
        return jsonify(error=code.value, message=message_for(code)), 404

    @app.errorhandler(405)
    def wrong_method(_error: Exception) -> ResponseReturnValue:
        code = ErrorCode.METHOD_NOT_ALLOWED
        return jsonify(error=code.value, message=message_for(code)), 405

    @app.get("/")
    def page() -> ResponseReturnValue:
        return render_template("tray.html", state=_state(), header=REQUEST_HEADER)

    @app.get("/favicon.ico")
    def favicon() -> ResponseReturnValue:
        # Browsers ask for it on every page; an empty answer keeps their console clean.
        return Response(status=204)

    @app.get("/cards")
    def cards() -> ResponseReturnValue:
        return jsonify(_state())

    @app.post("/cards/<card_id>/insert")
    def insert(card_id: str) -> ResponseReturnValue:
        _tray().insert(card_id)
        return jsonify(_state())

    @app.post("/cards/remove")
    def remove() -> ResponseReturnValue:
        removed = _tray().remove()
        return jsonify(_state() | {"removed": removed.card_id if removed else None})

    return app


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, code: Any = "-", size: Any = "-") -> None:
        log.debug('"%s %s" %s', self.command, getattr(self, "path", "-"), code)


class TrayServer:
    """The tray's app served on a daemon thread until `close()`."""

    def __init__(self, tray: CardTray, *, host: str = "127.0.0.1", port: int = DEFAULT_PORT):
        self.tray = tray
        self._server: BaseWSGIServer = make_server(
            host, port, create_tray_app(tray), threaded=True, request_handler=_QuietHandler
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.1,), name="card-tray", daemon=True
        )
        self._thread.start()

    @property
    def port(self) -> int:
        """The port served (the real one when 0 was asked for)."""
        return int(self._server.server_port)

    @property
    def url(self) -> str:
        """http://localhost:PORT"""
        return f"http://localhost:{self.port}"

    def close(self) -> None:
        """Stop serving, then take the card out."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        self.tray.close()
