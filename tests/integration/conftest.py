"""Integration fixtures: the development PKI and the virtual card in a real vpcd reader.

The chain under test is the real one: pyscard → libpcsclite → pcscd → vpcd → the
devkit's virtual card. Only the card's silicon is simulated.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from careid_devkit.card_profile import CardProfile, KeyAlgorithm, save_profile
from careid_devkit.cardsim.applet import PivApplet
from careid_devkit.cardsim.vpcd import VpcdCardClient
from careid_devkit.pcscd import Pcscd
from careid_devkit.pki import Pki, init_pki

READER = "Virtual PCD 00 00"
VPCD_PORT = 35963
PIN = "246810"


@pytest.fixture(scope="session")
def dev_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A development PKI shared by the integration tests."""
    return init_pki(tmp_path_factory.mktemp("pki") / "pki")


@pytest.fixture
def issue_card(dev_pki: Pki, tmp_path: Path) -> Callable[..., tuple[CardProfile, Path]]:
    """Issue a card profile from the development PKI and save it to a file."""

    def issue(
        algorithm: KeyAlgorithm = KeyAlgorithm.P256,
        *,
        uuid: str = "555000000001",
        name: str = "Alex Morgan",
    ) -> tuple[CardProfile, Path]:
        profile = dev_pki.issue_card(uuid=uuid, name=name, algorithm=algorithm, pin=PIN)
        path = tmp_path / f"card-{uuid}-{algorithm}.json"
        save_profile(profile, path)
        return profile, path

    return issue


def wait_for_reader(present: bool, *, reader: str = READER, timeout: float = 5.0) -> None:
    """Wait until pcscd reports the reader with (or without) a card."""
    from careid_agent.transport import list_readers

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = {r.name: r.card_present for r in list_readers()}
        if states.get(reader) is present:
            return
        time.sleep(0.05)
    raise AssertionError(f"{reader} did not report card_present={present} within {timeout}s")


@contextmanager
def inserted(
    profile: CardProfile,
    *,
    on_command: Callable[[bytes], bool] | None = None,
    on_counters_changed: Callable[[CardProfile], None] | None = None,
) -> Iterator[VpcdCardClient]:
    """The virtual card in the vpcd reader for the duration of the block."""
    applet = PivApplet(profile, on_counters_changed=on_counters_changed)
    client = VpcdCardClient(applet, port=VPCD_PORT, on_command=on_command)
    client.start()
    try:
        assert client.wait_inserted(10), "vpcd never asked the virtual card for its ATR"
        wait_for_reader(True)
        yield client
    finally:
        client.stop()
        wait_for_reader(False)


@pytest.fixture
def pcsc(pcscd: Pcscd) -> Pcscd:
    """pcscd up, and the test's reader empty to start with."""
    wait_for_reader(False)
    return pcscd
