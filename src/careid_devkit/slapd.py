"""A throwaway OpenLDAP `slapd` with the project's schema and demo seed, on loopback.

Used by the directory tests and the demo. It builds a cn=config from
config/ldap/slapd-config.ldif.in with `slapadd -n0`, loads the seed with `slapadd`, and
runs `slapd -d 0` (foreground) as a child process. The handle can stop and start the
same directory again (a directory that went down and came back) and pause it with
SIGSTOP (a hung directory: connections are accepted by the kernel, never answered).

DEMO/TEST MATERIAL: the credentials below are public and the directory has no TLS
unless asked for.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import secrets
import shutil
import signal
import string
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from careid_devkit.net import free_port, port_answers

log = logging.getLogger(__name__)

LDAP_CONFIG_DIR = Path(__file__).resolve().parents[2] / "config" / "ldap"
DEMO_SEED = LDAP_CONFIG_DIR / "demo.ldif"
CAREID_SCHEMA = LDAP_CONFIG_DIR / "careid.ldif"
CONFIG_TEMPLATE = LDAP_CONFIG_DIR / "slapd-config.ldif.in"

DEBIAN_SBIN = Path("/usr/sbin")
DEBIAN_MODULE_PATH = Path("/usr/lib/ldap")
DEBIAN_SCHEMA_DIR = Path("/etc/ldap/schema")

# The demo seed's names and passwords (config/ldap/demo.ldif). Public demo material.
DEMO_SUFFIX = "dc=nhs,dc=example"
DEMO_ACCOUNTS_BASE = f"ou=people,{DEMO_SUFFIX}"
DEMO_CARE_IDENTITIES_BASE = f"ou=careidentities,{DEMO_SUFFIX}"
DEMO_SERVICE_DN = f"cn=careid-broker,ou=services,{DEMO_SUFFIX}"
DEMO_SERVICE_PASSWORD = "Demo-Broker-Service-1"  # noqa: S105 - demo material
DEMO_AUP_WRITER_DN = f"cn=careid-aup-writer,ou=services,{DEMO_SUFFIX}"
DEMO_AUP_WRITER_PASSWORD = "Demo-Aup-Writer-1"  # noqa: S105 - demo material
DEMO_USER_PASSWORD = "Demo-Password-1"  # noqa: S105 - demo material
DEMO_AUP_VERSION = "2024-1"
ROOT_DN = f"cn=admin,{DEMO_SUFFIX}"

_SSHA_PREFIX = "{SSHA}"
_SHA1_LENGTH = 20


class SlapdUnavailable(RuntimeError):
    """slapd is not installed, or the directory could not be built or started."""


def ssha_hash(password: str, *, salt: bytes | None = None) -> str:
    """An OpenLDAP {SSHA} userPassword value: base64(SHA-1(password + salt) + salt)."""
    salt = secrets.token_bytes(8) if salt is None else salt
    # SHA-1 because {SSHA} is what every OpenLDAP build verifies; demo material only.
    digest = hashlib.sha1(password.encode("utf-8") + salt).digest()  # noqa: S324
    return _SSHA_PREFIX + base64.b64encode(digest + salt).decode("ascii")


def ssha_verify(password: str, hashed: str) -> bool:
    """Whether a {SSHA} value is the hash of that password."""
    if not hashed.startswith(_SSHA_PREFIX):
        return False
    try:
        raw = base64.b64decode(hashed[len(_SSHA_PREFIX) :], validate=True)
    except ValueError:
        return False
    digest, salt = raw[:_SHA1_LENGTH], raw[_SHA1_LENGTH:]
    if len(digest) != _SHA1_LENGTH or not salt:
        return False
    expected = hashlib.sha1(password.encode("utf-8") + salt).digest()  # noqa: S324
    return hmac.compare_digest(digest, expected)


@dataclass(frozen=True, kw_only=True)
class SlapdTls:
    """A server certificate and its unencrypted PEM key, to serve LDAPS and StartTLS."""

    cert_file: Path
    key_file: Path


@dataclass(kw_only=True)
class Slapd:
    """A handle on one throwaway directory; `stop()` and `start()` keep its data."""

    workdir: Path
    binary: Path
    config_dir: Path
    port: int
    tls_port: int | None
    base_dn: str = DEMO_SUFFIX
    accounts_base: str = DEMO_ACCOUNTS_BASE
    care_identities_base: str = DEMO_CARE_IDENTITIES_BASE
    service_bind_dn: str = DEMO_SERVICE_DN
    service_password: str = field(default=DEMO_SERVICE_PASSWORD, repr=False)
    aup_writer_bind_dn: str = DEMO_AUP_WRITER_DN
    aup_writer_password: str = field(default=DEMO_AUP_WRITER_PASSWORD, repr=False)
    root_dn: str = ROOT_DN
    root_password: str = field(repr=False)
    start_timeout: float = 10.0
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _paused: bool = field(default=False, repr=False)

    @property
    def url(self) -> str:
        """ldap://127.0.0.1:PORT"""
        return f"ldap://127.0.0.1:{self.port}"

    @property
    def ldaps_url(self) -> str | None:
        """ldaps://127.0.0.1:PORT when TLS was configured."""
        return f"ldaps://127.0.0.1:{self.tls_port}" if self.tls_port else None

    @property
    def log_path(self) -> Path:
        """slapd's own output (with log_level other than "none", its log)."""
        return self.workdir / "slapd.log"

    @property
    def running(self) -> bool:
        """Whether the slapd process is alive (paused counts as alive)."""
        return self._process is not None and self._process.poll() is None

    def directory_settings(self, **overrides: object) -> dict[str, object]:
        """A `[directory]` settings table for this instance (DirectoryConfig.from_mapping)."""
        settings: dict[str, object] = {
            "urls": [self.url],
            "bind_dn": self.service_bind_dn,
            "bind_password": self.service_password,
            "accounts_base": self.accounts_base,
            "care_identities_base": self.care_identities_base,
            "current_aup_version": DEMO_AUP_VERSION,
        }
        settings.update(overrides)
        return settings

    def start(self) -> None:
        """Run slapd on the configured ports and wait until it accepts connections."""
        if self.running:
            return
        listeners = [f"ldap://127.0.0.1:{self.port}/"]
        if self.tls_port:
            listeners.append(f"ldaps://127.0.0.1:{self.tls_port}/")
        # -d 0: stay in the foreground (a child we can signal) with no debug output.
        command = [str(self.binary), "-d", "0", "-h", " ".join(listeners)]
        command += ["-F", str(self.config_dir)]
        with open(self.log_path, "ab") as out:
            self._process = subprocess.Popen(  # noqa: S603 - fixed argument list
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self._paused = False
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                status = self._process.returncode
                self._process = None
                raise SlapdUnavailable(
                    f"slapd exited at start with status {status}: {self._log_tail()}"
                )
            if port_answers(self.port) and (not self.tls_port or port_answers(self.tls_port)):
                log.info("slapd listening on %s (pid %s)", self.url, self._process.pid)
                return
            time.sleep(0.02)
        self._kill()
        raise SlapdUnavailable(f"slapd did not start listening in time: {self._log_tail()}")

    def stop(self) -> None:
        """Stop slapd (cleanly, so the data is kept for `start()`)."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            if self._paused:
                self.resume()  # a stopped process cannot act on SIGTERM
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._kill()
        self._process = None

    def pause(self) -> None:
        """SIGSTOP: the port still accepts connections but nothing is ever answered."""
        if not self.running or self._process is None:
            raise SlapdUnavailable("slapd is not running")
        self._process.send_signal(signal.SIGSTOP)
        self._paused = True

    @contextmanager
    def paused(self) -> Iterator[None]:
        """`pause()` for the block, `resume()` after it, however it ends."""
        self.pause()
        try:
            yield
        finally:
            self.resume()

    def resume(self) -> None:
        """SIGCONT after `pause()`."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGCONT)
        self._paused = False

    def _kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(timeout=5)
        self._process = None

    def _log_tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(lines[-5:]) or "(empty log)"

    def __enter__(self) -> Slapd:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _run(command: list[str], what: str) -> None:
    done = subprocess.run(  # noqa: S603 - fixed argument list
        command, capture_output=True, text=True, check=False, timeout=60
    )
    if done.returncode != 0:
        output = (done.stderr or done.stdout).strip().splitlines()
        raise SlapdUnavailable(f"{what} failed ({done.returncode}): {' | '.join(output[-5:])}")


def _config_ldif(*, workdir: Path, root_password: str, tls: SlapdTls | None, log_level: str) -> str:
    template = CONFIG_TEMPLATE.read_text(encoding="utf-8")
    if tls is not None:
        template = template.replace("\n#tls ", "\n")
    values = {
        "run_dir": str(workdir / "run"),
        "log_level": log_level,
        "module_path": str(DEBIAN_MODULE_PATH),
        "schema_dir": str(DEBIAN_SCHEMA_DIR),
        "careid_schema": str(CAREID_SCHEMA),
        "suffix": DEMO_SUFFIX,
        "root_dn": ROOT_DN,
        "root_password_hash": ssha_hash(root_password),
        "data_dir": str(workdir / "data"),
        "service_dn": DEMO_SERVICE_DN,
        "aup_writer_dn": DEMO_AUP_WRITER_DN,
        "tls_cert_file": str(tls.cert_file.resolve()) if tls else "",
        "tls_key_file": str(tls.key_file.resolve()) if tls else "",
    }
    return string.Template(template).substitute(values)


def start_slapd(
    workdir: Path,
    *,
    port: int = 0,
    seed: Path | None = DEMO_SEED,
    tls: SlapdTls | None = None,
    tls_port: int = 0,
    log_level: str = "none",
    sbin_dir: Path = DEBIAN_SBIN,
) -> Slapd:
    """Build a fresh directory in `workdir` (replacing one built there before) and run it.

    Port 0 picks a free loopback port. `seed` is an LDIF loaded with slapadd (None: an
    empty database). With `tls`, slapd also serves LDAPS on `tls_port` and StartTLS.
    """
    binary, slapadd = sbin_dir / "slapd", sbin_dir / "slapadd"
    if not (os.access(binary, os.X_OK) and os.access(slapadd, os.X_OK)):
        raise SlapdUnavailable(
            f"OpenLDAP slapd is not installed (no {binary}); install the Debian package slapd"
        )
    if not (DEBIAN_MODULE_PATH / "back_mdb.so").exists():
        raise SlapdUnavailable(
            f"slapd's modules are missing from {DEBIAN_MODULE_PATH} (Debian package slapd)"
        )
    workdir = workdir.resolve()
    config_dir, data_dir = workdir / "slapd.d", workdir / "data"
    for old in (config_dir, data_dir):
        if old.exists():
            shutil.rmtree(old)
    for new in (config_dir, data_dir, workdir / "run"):
        new.mkdir(parents=True, exist_ok=True)
    root_password = secrets.token_urlsafe(24)
    config_ldif = workdir / "config.ldif"
    config_ldif.write_text(
        _config_ldif(workdir=workdir, root_password=root_password, tls=tls, log_level=log_level),
        encoding="utf-8",
    )
    _run([str(slapadd), "-n0", "-F", str(config_dir), "-l", str(config_ldif)], "slapadd (config)")
    if seed is not None:
        _run(
            [str(slapadd), "-F", str(config_dir), "-b", DEMO_SUFFIX, "-l", str(seed)],
            "slapadd (seed)",
        )
    # A port picked here could be taken before slapd binds it; try a few times.
    attempts = 3 if port == 0 or (tls is not None and tls_port == 0) else 1
    for attempt in range(attempts):
        slapd = Slapd(
            workdir=workdir,
            binary=binary,
            config_dir=config_dir,
            port=port or free_port(),
            tls_port=(tls_port or free_port()) if tls is not None else None,
            root_password=root_password,
        )
        try:
            slapd.start()
        except SlapdUnavailable:
            if attempt + 1 == attempts:
                raise
            continue
        return slapd
    raise AssertionError("unreachable")
