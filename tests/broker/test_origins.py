"""`origin_of`: the origin a browser would send for a URL, or None."""

from __future__ import annotations

import pytest

from careid_broker.origins import origin_of


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("https://broker.example.nhs.uk", "https://broker.example.nhs.uk"),
        ("https://broker.example.nhs.uk/path?q=1", "https://broker.example.nhs.uk"),
        ("https://rp.example.test:8443/callback", "https://rp.example.test:8443"),
        # A browser serialises an origin without its scheme's default port (RFC 6454
        # §6.1), so the broker's must match that, however the URL was written.
        ("https://broker.example.nhs.uk:443", "https://broker.example.nhs.uk"),
        ("http://localhost:80/cb", "http://localhost"),
        ("http://localhost:443", "http://localhost:443"),  # not http's default
        ("https://broker.example.nhs.uk:80", "https://broker.example.nhs.uk:80"),
        ("HTTPS://Broker.Example.NHS.uk", "https://broker.example.nhs.uk"),
        ("https://[::1]:443/", "https://[::1]"),
        ("ftp://files.example", None),
        ("https://", None),
        ("https://host:99999", None),
    ],
)
def test_the_origin_is_what_a_browser_would_send(url: str, origin: str | None) -> None:
    assert origin_of(url) == origin
