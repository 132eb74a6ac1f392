"""The card tray: the demo's virtual cards, one virtual reader, Insert and Remove.

A page and a JSON API (`GET /cards`, `POST /cards/<id>/insert`, `POST /cards/remove`)
over `CardTray`, which serves the inserted card through vpcd in this process.
DEMO/TEST MATERIAL.
"""

from __future__ import annotations

from careid_devkit.tray.app import DEFAULT_PORT, REQUEST_HEADER, TrayServer, create_tray_app
from careid_devkit.tray.model import (
    MANIFEST_NAME,
    CardKind,
    TrayCard,
    read_manifest,
    write_manifest,
)
from careid_devkit.tray.reader import (
    DEFAULT_READER,
    CardTray,
    CardView,
    TrayError,
    pcsc_reader_state,
)

__all__ = [
    "DEFAULT_PORT",
    "DEFAULT_READER",
    "MANIFEST_NAME",
    "REQUEST_HEADER",
    "CardKind",
    "CardTray",
    "CardView",
    "TrayCard",
    "TrayError",
    "TrayServer",
    "create_tray_app",
    "pcsc_reader_state",
    "read_manifest",
    "write_manifest",
]
