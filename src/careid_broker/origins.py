"""Web origins (`scheme://host[:port]`): what tokens are signed for and forms may reach."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

# scheme://host[:port] with nothing a header could be split on.
ORIGIN_RE = re.compile(r"https?://(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")


def origin_of(url: str) -> str | None:
    """`scheme://host[:port]` of an http(s) URL, or None."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    origin = f"{parts.scheme}://{host}" + (f":{port}" if port is not None else "")
    return origin if ORIGIN_RE.fullmatch(origin) else None
