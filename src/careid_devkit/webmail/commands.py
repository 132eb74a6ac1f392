"""`careid-devkit webmail`: serve the demo relying party on port 5001."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from flask import Flask
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from careid_devkit.webmail.app import create_webmail_app
from careid_devkit.webmail.config import (
    CLIENT_SECRET_ENV,
    DEFAULT_ISSUER,
    DEFAULT_PORT,
    ISSUER_ENV,
    WebmailConfig,
    client_secret_from,
)
from careid_devkit.webmail.errors import WebmailError

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `webmail` to the `careid-devkit` subparsers."""
    parser = sub.add_parser(
        "webmail",
        help="serve the demo relying party (an NHSmail-style webmail)",
        description=(
            "Serve the demo relying party. It signs people in through the broker with"
            " OpenID Connect and ends their session on back-channel logout."
        ),
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="default: %(default)s")
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s)"
    )
    parser.add_argument(
        "--issuer",
        default=None,
        help=f"the broker's issuer URL (default: ${ISSUER_ENV} or {DEFAULT_ISSUER})",
    )
    parser.add_argument("--client-id", default="webmail", help="default: %(default)s")
    parser.add_argument(
        "--client-secret",
        default=None,
        help=(
            f"the client secret (default: ${CLIENT_SECRET_ENV}, else the public demo secret);"
            " prefer the environment variable: command lines are visible to other users"
        ),
    )
    parser.add_argument(
        "--base-url",
        default=None,
        help="the webmail's public URL, as registered at the broker (default: http://localhost:PORT)",
    )
    parser.set_defaults(func=run_webmail)


def build_config(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> tuple[WebmailConfig, bool]:
    """The config from the command line and environment; and whether the demo secret is used."""
    env = os.environ if environ is None else environ
    secret, demo_secret = client_secret_from(args.client_secret, env)
    config = WebmailConfig(
        issuer=(args.issuer or env.get(ISSUER_ENV) or DEFAULT_ISSUER).rstrip("/"),
        client_id=args.client_id,
        client_secret=secret,
        base_url=(args.base_url or f"http://localhost:{args.port}").rstrip("/"),
    )
    return config, demo_secret


class _RedactingRequestHandler(WSGIRequestHandler):
    """Access log lines without query strings: /callback's carries the authorization code."""

    def log_request(self, code: Any = "-", size: Any = "-") -> None:
        path = urlsplit(getattr(self, "path", "") or "").path or "-"
        self.log("info", '"%s %s %s" %s %s', self.command, path, self.request_version, code, size)


def make_webmail_server(app: Flask, host: str, port: int) -> BaseWSGIServer:
    """A threaded HTTP server for the app (port 0 picks a free one)."""
    return make_server(host, port, app, threaded=True, request_handler=_RedactingRequestHandler)


def run_webmail(args: argparse.Namespace) -> int:
    """Serve until Ctrl-C; 0, or 2 when the settings or the port are not usable."""
    try:
        config, demo_secret = build_config(args)
    except WebmailError as exc:
        print(f"careid-devkit webmail: {exc}", file=sys.stderr)
        return 2
    if demo_secret:
        log.warning(
            "using the PUBLIC demo client secret from config/clients.toml; set %s for"
            " anything but the demo",
            CLIENT_SECRET_ENV,
        )
    app = create_webmail_app(config)
    try:
        server = make_webmail_server(app, args.host, args.port)
    except OSError as exc:
        print(
            f"careid-devkit webmail: cannot listen on {args.host}:{args.port} ({exc.strerror});"
            " stop whatever uses the port or pass --port",
            file=sys.stderr,
        )
        return 2
    print(f"Webmail (demo) at {config.base_url}/  — signing in through {config.issuer}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
