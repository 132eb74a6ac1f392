"""The demo's ports: the documented defaults, a free port for 0, a clear refusal when taken."""

from __future__ import annotations

import socket
from dataclasses import dataclass, fields, replace

from careid_devkit.codes import DevkitCode, message_for
from careid_devkit.net import free_port


class PortInUseError(Exception):
    """A port the demo needs is taken; names the part and the flag that moves it."""

    code = DevkitCode.DEVKIT_DEMO_PORT_IN_USE

    def __init__(self, part: str, port: int) -> None:
        self.part = part
        self.port = port
        self.flag = f"--{part}-port"
        super().__init__(
            f"port {port} (the {part}) is in use by another program: stop it, or pass"
            f" {self.flag} with another port (0 picks a free one). {message_for(self.code)}"
        )


def port_is_free(port: int) -> bool:
    """Whether a server could listen on 127.0.0.1:port, and nothing answers on [::1]:port.

    Browsers try `localhost` on ::1 as well, so a program listening there would take
    the demo's requests even though 127.0.0.1 is free.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As the servers themselves do: a port in TIME_WAIT after a restart is usable.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    if socket.has_ipv6:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.2)
            try:
                sock.connect(("::1", port))
            except OSError:
                return True
            return False
    return True


@dataclass(frozen=True, kw_only=True)
class DemoPorts:
    """Where each part listens on 127.0.0.1 (0: any free port)."""

    broker: int = 5000
    webmail: int = 5001
    tray: int = 5003
    agent: int = 47600
    pki: int = 5080
    ldap: int = 0

    def resolve(self) -> DemoPorts:
        """Every 0 replaced by a free port; PortInUseError for a named port that is taken."""
        chosen: dict[str, int] = {}
        for item in fields(self):
            port = getattr(self, item.name)
            if port == 0:
                port = free_port()
                while port in chosen.values():
                    port = free_port()
            elif port in chosen.values() or not port_is_free(port):
                raise PortInUseError(item.name, port)
            chosen[item.name] = port
        return replace(self, **chosen)

    @classmethod
    def defaults_or_free(cls) -> DemoPorts:
        """The documented ports where they are free, other free ports where not (tests)."""
        defaults = cls()
        chosen = {
            item.name: port if port and port_is_free(port) else 0
            for item in fields(defaults)
            for port in [getattr(defaults, item.name)]
        }
        return cls(**chosen).resolve()
