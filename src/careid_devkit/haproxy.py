"""Debian's HAProxy as a round-robin load balancer in front of broker instances, on loopback.

Used by the load-balanced integration test and benchmark. It writes a configuration
into a folder of its own and runs `haproxy -f CONF -db` (foreground, no daemon, no
chroot, no privileges) as a child process.

What the configuration says, and why:

- `balance roundrobin`, no cookie, no stick table, no `prefer-last-server`: each request
  goes to the next instance, so one browser's consecutive requests land on different
  instances. Every response carries `X-Served-By: <server name>` to show it.
- `X-Forwarded-For` (appended), `X-Forwarded-Proto` and `X-Forwarded-Host` (replaced,
  whatever the client sent): the broker trusts one hop (`[broker] trusted_proxies = 1`).
- Health checks on `/readyz` take an instance out when it stops answering or cannot
  reach its database or directory.
- Retries only when the connection to an instance could not be made (`retry-on
  conn-failure`, HAProxy's default), each to another instance (`option redispatch 1`):
  the request was never sent, so retrying a POST cannot submit it twice. A request
  already sent to an instance that dies is answered 502 and not retried: a sign-in POST
  or a code redemption may have taken effect there, and sending it again elsewhere
  could act on it twice (the code would be refused as used, the person told it failed).
- `http-reuse never`: a request is never written into an idle connection another client
  left to an instance, which may have died a moment ago without HAProxy having noticed
  (the request would be lost, answered 502). Each client connection gets its own
  connection to an instance, refused at once when the instance is gone, and retried.
- `observe layer4` marks an instance down at its first refused connection, before the
  next health check would.
- With a `RateLimit`: requests from one client address to the endpoints that create
  state, an audit entry or work before anyone is known (`/authorize`, `/login/card`, the
  card challenges, `/token`, `/revoke`, `/userinfo`, anything under `/api/v1/`, and
  every POST: a form without its CSRF token is an audited refusal) are counted in a stick
  table over a sliding window, and past the limit answered 429 by HAProxy itself, before
  they reach an instance. Other
  paths are never counted. Behind a NAT a whole site shares an address: size the limit
  for it (docs/reverse-proxy-tls.md).

DEMO/TEST MATERIAL: plain HTTP on 127.0.0.1, no TLS.
"""

from __future__ import annotations

import logging
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from careid_devkit.net import free_port, port_answers

log = logging.getLogger(__name__)

DEBIAN_SBIN = Path("/usr/sbin")
SERVED_BY_HEADER = "X-Served-By"


class HaproxyUnavailable(RuntimeError):
    """haproxy is not installed, or it refused its configuration or did not start."""


def haproxy_binary() -> Path | None:
    """Debian's haproxy (package haproxy), or None when it is not installed."""
    found = shutil.which("haproxy") or shutil.which("haproxy", path=str(DEBIAN_SBIN))
    return Path(found) if found else None


#: The paths a flood would aim at: each creates a row (an audit entry for each refusal
#: included) or costs a signature or a hash, whatever the method. Every POST is counted
#: too: a form posted without its CSRF token is an audited refusal.
FLOOD_PATHS = (
    "/authorize",
    "/login/card",
    "/card/challenge",
    "/register/challenge",
    "/token",
    "/revoke",
    "/userinfo",
)
#: And every path under these: the administration API audits each refused request.
FLOOD_PREFIXES = ("/api/v1/",)


@dataclass(frozen=True, kw_only=True)
class RateLimit:
    """At most `requests` per client address per `window_seconds` to `FLOOD_PATHS`."""

    requests: int
    window_seconds: int = 10

    def frontend_lines(self) -> str:
        """The frontend's stick table, tracking and refusal."""
        paths = " ".join(FLOOD_PATHS)
        prefixes = " ".join(FLOOD_PREFIXES)
        return (
            f"    stick-table type ip size 100k expire {max(60, self.window_seconds * 2)}s"
            f" store http_req_rate({self.window_seconds}s)\n"
            # Matched on the decoded path, as the broker routes it: `/%74oken` is /token.
            f"    acl flood_path path,url_dec -m str {paths}\n"
            f"    acl flood_path path,url_dec -m beg {prefixes}\n"
            "    acl flood_path method POST\n"
            "    http-request track-sc0 src if flood_path\n"
            "    http-request deny deny_status 429 if flood_path"
            f" {{ sc_http_req_rate(0) gt {self.requests} }}\n"
        )


@dataclass(frozen=True, kw_only=True)
class Upstream:
    """One broker instance behind the load balancer."""

    name: str
    port: int
    host: str = "127.0.0.1"


def haproxy_config(
    *,
    port: int,
    upstreams: Sequence[Upstream],
    check_path: str = "/readyz",
    log_requests: bool = False,
    source: str | None = None,
    rate_limit: RateLimit | None = None,
) -> str:
    """The configuration text (see the module docstring for each choice).

    `source`: the local address HAProxy connects to the instances from, so that a test
    can tell the balancer's address from the client's (both are on loopback).
    """
    request_log = "    log stdout format raw local0\n    option httplog\n" if log_requests else ""
    source_line = f"    source {source}\n" if source else ""
    limit_lines = rate_limit.frontend_lines() if rate_limit else ""
    servers = "\n".join(
        f"    server {u.name} {u.host}:{u.port} check inter 1s fall 2 rise 1"
        " observe layer4 error-limit 1 on-error mark-down"
        for u in upstreams
    )
    return f"""\
global
    maxconn 1024

defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout check 3s
    retries 2
    retry-on conn-failure
    option redispatch 1
    option forwardfor
{request_log}
frontend broker
    bind 127.0.0.1:{port}
    http-request set-header X-Forwarded-Proto http
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
{limit_lines}    default_backend brokers

backend brokers
    balance roundrobin
    http-reuse never
{source_line}    option httpchk
    http-check send meth GET uri {check_path} ver HTTP/1.1 hdr Host 127.0.0.1
    http-check expect status 200
    http-response set-header {SERVED_BY_HEADER} %[srv_name]
{servers}
"""


@dataclass(kw_only=True)
class Haproxy:
    """A running HAProxy in front of `upstreams`; `stop()` ends it."""

    workdir: Path
    port: int
    upstreams: tuple[Upstream, ...]
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """http://127.0.0.1:PORT, the public issuer of the brokers behind it."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """The haproxy process's id (it runs as one process, with threads)."""
        if self._process is None:
            raise HaproxyUnavailable("haproxy is not running")
        return self._process.pid

    @property
    def log_path(self) -> Path:
        return self.workdir / "haproxy.log"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def stop(self) -> None:
        """SIGUSR1 (soft stop: finish what is in flight), then SIGKILL after 5 s."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGUSR1)
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        self._process = None

    def log_tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(lines[-5:]) or "(empty log)"

    def __enter__(self) -> Haproxy:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_haproxy(
    workdir: Path,
    upstreams: Sequence[Upstream],
    *,
    port: int = 0,
    check_path: str = "/readyz",
    log_requests: bool = False,
    source: str | None = None,
    rate_limit: RateLimit | None = None,
    start_timeout: float = 10.0,
) -> Haproxy:
    """Write the configuration into `workdir`, check it, run haproxy; port 0: a free one."""
    binary = haproxy_binary()
    if binary is None:
        raise HaproxyUnavailable("haproxy is not installed (Debian package haproxy)")
    workdir.mkdir(parents=True, exist_ok=True)
    listen = port or free_port()
    config = workdir / "haproxy.cfg"
    config.write_text(
        haproxy_config(
            port=listen,
            upstreams=upstreams,
            check_path=check_path,
            log_requests=log_requests,
            source=source,
            rate_limit=rate_limit,
        ),
        encoding="utf-8",
    )
    checked = subprocess.run(  # noqa: S603 - fixed argument list
        [str(binary), "-c", "-q", "-f", str(config)],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    if checked.returncode != 0:
        raise HaproxyUnavailable(f"haproxy refused its configuration: {checked.stderr.strip()}")
    handle = Haproxy(workdir=workdir, port=listen, upstreams=tuple(upstreams))
    with open(handle.log_path, "ab") as out:
        # -db: foreground, no daemon; a child we can signal. -Ws would need systemd.
        handle._process = subprocess.Popen(  # noqa: S603 - fixed argument list
            [str(binary), "-db", "-f", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + start_timeout
    while time.monotonic() < deadline:
        process = handle._process
        if process.poll() is not None:
            raise HaproxyUnavailable(
                f"haproxy exited at start with status {process.returncode}: {handle.log_tail()}"
            )
        if port_answers(listen):
            log.info("haproxy listening on %s (pid %s)", handle.url, process.pid)
            return handle
        time.sleep(0.02)
    handle.stop()
    raise HaproxyUnavailable(f"haproxy did not start listening in time: {handle.log_tail()}")
