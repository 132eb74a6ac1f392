"""Starting pcscd waits for vpcd's ports: a daemon started while another socket holds one
comes up without that virtual reader and stays so (seen when a client connection got
35963 as its ephemeral local port)."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from careid_devkit import pcscd
from careid_devkit.pcscd import PcscdUnavailable


def _client_on_some_port() -> tuple[socket.socket, socket.socket, socket.socket, int]:
    """A connected client socket (no SO_REUSEADDR, like an ephemeral one); its port."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    client = socket.create_connection(server.getsockname())
    accepted, _ = server.accept()
    return server, client, accepted, client.getsockname()[1]


def test_a_port_a_client_connection_holds_is_taken_until_it_closes() -> None:
    server, client, accepted, port = _client_on_some_port()
    try:
        assert pcscd._port_taken(port)
    finally:
        # The server's side closes first, so the TIME_WAIT is on its port, not this one.
        for sock in (accepted, client, server):
            sock.close()
    assert not pcscd._port_taken(port)


def test_the_wait_ends_when_the_port_is_let_go(monkeypatch: pytest.MonkeyPatch) -> None:
    server, client, accepted, port = _client_on_some_port()
    monkeypatch.setattr(pcscd, "VPCD_PORTS", (port,))
    server.close()
    accepted.close()
    releaser = threading.Timer(1.0, client.close)
    releaser.start()
    started = time.monotonic()
    pcscd._wait_for_vpcd_ports(10.0)
    assert time.monotonic() - started >= 0.9
    assert not pcscd._port_taken(port)


def test_a_port_held_for_good_is_named_in_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    server, client, accepted, port = _client_on_some_port()
    monkeypatch.setattr(pcscd, "VPCD_PORTS", (port,))
    try:
        with pytest.raises(
            PcscdUnavailable, match=rf"vpcd's TCP ports \[{port}\] are still in use"
        ):
            pcscd._wait_for_vpcd_ports(1.0)
    finally:
        for sock in (client, accepted, server):
            sock.close()
