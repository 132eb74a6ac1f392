"""Web origins (`scheme://host[:port]`): what tokens are signed for and forms may reach."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

# scheme://host[:port] with nothing a header could be split on.
ORIGIN_RE = re.compile(r"https?://(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")


_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin_of(url: str) -> str | None:
    """`scheme://host[:port]` of an http(s) URL, as a browser serialises it, or None.

    Without the scheme's default port (RFC 6454 §6.1): a browser's `Origin` never has
    it, and the agent signs the origin the page has, so an issuer written as
    `https://broker:443` must still expect `https://broker`. The issuer itself, which
    relying parties compare as text, is left as it was written.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    if port == _DEFAULT_PORTS[parts.scheme]:
        port = None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    origin = f"{parts.scheme}://{host}" + (f":{port}" if port is not None else "")
    return origin if ORIGIN_RE.fullmatch(origin) else None
