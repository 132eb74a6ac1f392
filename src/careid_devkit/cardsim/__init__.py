"""The virtual PIV card: an applet (pure), an in-process connection and a vpcd client.

DEMO/TEST MATERIAL: the card's private key and PIN live in a plain JSON profile.
"""

from __future__ import annotations

from careid_devkit.cardsim.apdu import ApduCounters, ApduLogEntry, Direction
from careid_devkit.cardsim.applet import PIV_ATR, PivApplet
from careid_devkit.cardsim.contents import CardProfileError
from careid_devkit.cardsim.inprocess import InProcessConnection
from careid_devkit.cardsim.vpcd import VpcdCardClient

__all__ = [
    "PIV_ATR",
    "ApduCounters",
    "ApduLogEntry",
    "CardProfileError",
    "Direction",
    "InProcessConnection",
    "PivApplet",
    "VpcdCardClient",
]
