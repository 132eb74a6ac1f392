"""JSON log lines with the request id, for the broker and for gunicorn.

Secrets are kept out of log lines at the source (no view logs a form, a cookie, a query
string or a header). As a second line of defence the formatter blanks any extra field
whose name says it holds a secret, so `log.info("...", extra={"password": ...})` can
never reach a file.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from flask import g, has_request_context

from careid_broker.config import LogFormat, LoggingSettings

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = frozenset(
    vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None)).keys()
    | {"message", "asctime", "taskName"}
)
_SECRET_WORDS = frozenset({"password", "secret", "token", "cookie", "passphrase", "pin", "puk"})
# "code" alone is an OAuth authorization code; "error_code" is not a secret.
_SECRET_NAMES = frozenset({"code", "authorization_code", "credentials", "authorization"})
REDACTED = "[redacted]"


def current_request_id() -> str | None:
    """The id of the request being served on this thread, if any."""
    if has_request_context():
        value = g.get("request_id")
        return value if isinstance(value, str) else None
    return None


def _is_secret_name(name: str) -> bool:
    lowered = name.lower()
    return lowered in _SECRET_NAMES or not _SECRET_WORDS.isdisjoint(lowered.split("_"))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id and extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = current_request_id() or record.__dict__.get("request_id")
        if request_id:
            entry["request_id"] = request_id
        for key, value in record.__dict__.items():
            if key in _STANDARD or key.startswith("_") or key in entry:
                continue
            entry[key] = REDACTED if _is_secret_name(key) else value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """Plain lines for a developer's terminal, still carrying the request id."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        record.request_id = current_request_id() or record.__dict__.get("request_id") or "-"
        return super().format(record)


def formatter_for(settings: LoggingSettings) -> logging.Formatter:
    """The formatter the settings ask for."""
    return JsonFormatter() if settings.format is LogFormat.JSON else TextFormatter()


#: Libraries kept above DEBUG whatever the configured level, for what they would log:
#: Werkzeug's development server logs each request line with its query string, which
#: carries login transaction ids (the broker logs its own request lines instead);
#: authlib logs every token it issues ("Issue token {...}": live access and refresh
#: tokens, the admin API's bearer tokens) at DEBUG.
QUIETENED = {"werkzeug": logging.WARNING, "authlib": logging.INFO}


def configure_logging(settings: LoggingSettings) -> None:
    """Send every log line to stderr in the configured format and level."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter_for(settings))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.level)
    for name, level in QUIETENED.items():
        logging.getLogger(name).setLevel(level)


def gunicorn_logconfig(settings: LoggingSettings) -> dict[str, Any]:
    """A logging dictConfig for gunicorn: its own lines in our format, no access log."""
    formatter = (
        {"()": f"{__name__}.JsonFormatter"}
        if settings.format is LogFormat.JSON
        else {"()": f"{__name__}.TextFormatter"}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"broker": formatter},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "broker",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"level": settings.level, "handlers": ["stderr"]},
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": [], "propagate": True},
            # gunicorn's access lines would carry query strings: the broker writes its own.
            "gunicorn.access": {"level": "WARNING", "handlers": [], "propagate": False},
            **{name: {"level": logging.getLevelName(level)} for name, level in QUIETENED.items()},
        },
    }
