"""Card sign-in tests: the fixtures are shared with tests/registration (card_fixtures)."""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
_BROKER_TESTS = str(Path(__file__).resolve().parents[1] / "broker")
for _path in (_HERE, _BROKER_TESTS):
    if _path not in sys.path:
        sys.path.append(_path)

from card_fixtures import (  # noqa: E402, F401 - fixtures are found by name
    _reset_card_clock,
    browser,
    card_app,
    card_app_factory,
    card_clock,
    card_pg_database,
    card_pki,
    card_slapd,
    card_slapd_factory,
    card_sqlite_template,
    own_card_slapd,
    session_ended,
    store_url,
    test_rp,
)
