"""`DemoChain`: every part of the sign-in chain on this machine, started and stopped as one.

webmail (5001) → broker (5000) → agent (47600) → pcscd → vpcd → the card tray (5003),
with slapd (the demo directory) and the PKI server (OCSP, CRL) behind the broker.
`careid-devkit demo` runs one; the end-to-end tests share one per session. Everything
started here is stopped by `stop()`, in reverse order, by its own handle.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from careid_broker.config import load_config
from careid_broker.store import Repositories, create_store
from careid_devkit.codes import DevkitCode, message_for
from careid_devkit.demo.accounts import DEMO_PIN, CardSpec
from careid_devkit.demo.configs import (
    DemoUrls,
    agent_settings,
    broker_settings,
    clients_settings,
    write_agent_toml,
    write_toml,
)
from careid_devkit.demo.ports import DemoPorts
from careid_devkit.demo.processes import (
    ServiceFailedError,
    ServiceProcess,
    child_environment,
    http_answers,
)
from careid_devkit.demo.workspace import IssuedCards, Workspace, issue_demo_cards
from careid_devkit.ocsp_responder import PkiServer, start_pki_server
from careid_devkit.pcscd import Pcscd, PcscdUnavailable, ensure_pcscd
from careid_devkit.slapd import Slapd, SlapdUnavailable, start_slapd
from careid_devkit.tray import DEFAULT_READER, CardTray, TrayServer, pcsc_reader_state

log = logging.getLogger(__name__)

VPCD_PORT = 35963
START_TIMEOUT = 60.0
PIN_ENV = "CAREID_AGENT_PIN"
_CONFIG_HEADER = (
    "careid-broker settings written by `careid-devkit demo` (DEMO MATERIAL: development"
    "\nmode, a random secret key, the demo directory and PKI)."
)


class PartMissingError(Exception):
    """A system part (pcscd, slapd, vpcd) is not installed or will not start."""

    code = DevkitCode.DEVKIT_DEMO_PART_MISSING

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(f"{detail}. {message_for(self.code)}")


@dataclass(frozen=True, kw_only=True)
class ChainSettings:
    """How to run the chain."""

    workspace: Path
    ports: DemoPorts = field(default_factory=DemoPorts)
    headless: bool = True
    """The agent takes the PIN from CAREID_AGENT_PIN (development only) instead of asking."""
    pin: str = DEMO_PIN
    reader: str = DEFAULT_READER
    vpcd_port: int = VPCD_PORT
    broker_workers: int = 2
    extra_agent_origins: tuple[str, ...] = ()
    card_specs: tuple[CardSpec, ...] | None = None
    start_timeout: float = START_TIMEOUT
    # More relying parties for clients.toml, by client id (tests add their own RPs).
    extra_clients: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


def _python(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


class DemoChain:
    """The running chain; use as a context manager, or `start()` and `stop()`."""

    def __init__(self, settings: ChainSettings) -> None:
        self.settings = settings
        self.ports = settings.ports.resolve()
        self.urls = DemoUrls(ports=self.ports)
        self.workspace = Workspace(root=settings.workspace.resolve())
        self.cards: IssuedCards | None = None
        self.pcscd: Pcscd | None = None
        self.slapd: Slapd | None = None
        self.pki_server: PkiServer | None = None
        self.tray_server: TrayServer | None = None
        self.broker: ServiceProcess | None = None
        self.webmail: ServiceProcess | None = None
        self.agent: ServiceProcess | None = None
        self.extra_brokers: dict[str, ServiceProcess] = {}
        self._migrate: ServiceProcess | None = None
        self.agent_pin = settings.pin

    # -- the parts' paths ------------------------------------------------------------------

    @property
    def broker_config(self) -> Path:
        return self.workspace.broker_dir / "broker.toml"

    @property
    def clients_file(self) -> Path:
        return self.workspace.broker_dir / "clients.toml"

    @property
    def agent_config(self) -> Path:
        return self.workspace.agent_dir / "agent.toml"

    @property
    def database_url(self) -> str:
        return f"sqlite:///{self.workspace.broker_dir / 'broker.db'}"

    @property
    def tray(self) -> CardTray:
        if self.tray_server is None:
            raise RuntimeError("the card tray is not running")
        return self.tray_server.tray

    def processes(self) -> list[ServiceProcess]:
        """Every child process started, in start order."""
        found = [self.webmail, self.agent, self.broker, *self.extra_brokers.values()]
        return [process for process in found if process is not None]

    # -- start and stop --------------------------------------------------------------------

    def start(self) -> DemoChain:
        """Start every part and wait until each answers; on failure stop what started."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        settings, ws = self.settings, self.workspace
        self.cards = issue_demo_cards(ws, pki_base_url=self.urls.pki, specs=settings.card_specs)
        try:
            self.pcscd = ensure_pcscd(log_path=ws.logs_dir / "pcscd.log")
        except PcscdUnavailable as exc:
            raise PartMissingError(f"pcscd: {exc}") from exc
        try:
            self.slapd = start_slapd(ws.slapd_dir, port=self.ports.ldap)
        except SlapdUnavailable as exc:
            raise PartMissingError(f"slapd: {exc}") from exc
        self.pki_server = start_pki_server(ws.pki_dir, port=self.ports.pki)
        self._write_configs()

        self._migrate = migrate = ServiceProcess(
            name="broker database upgrade",
            command=_python(
                "careid_broker.cli", "--config", str(self.broker_config), "db", "upgrade"
            ),
            log_path=ws.logs_dir / "broker.log",
            env=child_environment(),
        )
        migrate.start()
        self.webmail = self._webmail_process()
        self.webmail.start()
        self.agent = self._agent_process()
        self.agent.start()
        tray = CardTray(
            self.cards.cards,
            reader=settings.reader,
            vpcd_port=settings.vpcd_port,
            reader_state=pcsc_reader_state(settings.reader),
        )
        self.tray_server = TrayServer(tray, port=self.ports.tray)

        if migrate.wait(settings.start_timeout) != 0:
            raise ServiceFailedError(migrate.name, "failed", migrate.log_path)
        self._ensure_signing_keys()
        self.broker = self.broker_process("broker", port=self.ports.broker)
        self.broker.start()
        self.wait_ready(settings.start_timeout)

    def _write_configs(self) -> None:
        assert self.cards is not None and self.slapd is not None  # noqa: S101 - start order
        clients = clients_settings(self.urls)
        for client_id, client in self.settings.extra_clients.items():
            clients[f"clients.{client_id}"] = dict(client)
        write_toml(self.clients_file, clients, header="Demo relying parties.")
        tables = broker_settings(
            urls=self.urls,
            slapd=self.slapd,
            database_url=self.database_url,
            pki=self.cards.pki,
            clients_file=self.clients_file,
            workers=self.settings.broker_workers,
        )
        write_toml(self.broker_config, tables, header=_CONFIG_HEADER)
        settings = agent_settings(
            self.urls,
            reader=self.settings.reader,
            pin_provider="env" if self.settings.headless else "dialog",
            extra_origins=self.settings.extra_agent_origins,
            # The demo's own: never the workstation user's real agent's file.
            card_sessions_file=self.workspace.agent_dir / "card-sessions.json",
        )
        write_agent_toml(self.agent_config, settings)

    def _ensure_signing_keys(self) -> None:
        # Before the workers start, so the first request finds the keys made once.
        config = load_config(self.broker_config, env=child_environment())
        store = create_store(config.database.url)
        try:
            Repositories.build(store).keys.ensure_keys()
        finally:
            store.dispose()

    def _webmail_process(self) -> ServiceProcess:
        return ServiceProcess(
            name="webmail",
            command=_python(
                "careid_devkit.cli",
                "webmail",
                "--port",
                str(self.ports.webmail),
                "--issuer",
                self.urls.broker,
                "--base-url",
                self.urls.webmail,
            ),
            log_path=self.workspace.logs_dir / "webmail.log",
            env=child_environment(),
        )

    def _agent_process(self) -> ServiceProcess:
        env = {PIN_ENV: self.agent_pin} if self.settings.headless else {}
        command = _python(
            "careid_agent.cli",
            "serve",
            "--config",
            str(self.agent_config),
            "--dev",
            "--port",
            str(self.ports.agent),
            "--reader",
            self.settings.reader,
        )
        for origin in (self.urls.broker, *self.settings.extra_agent_origins):
            command += ["--allow-origin", origin]
        command += ["--pin-provider", "env" if self.settings.headless else "dialog"]
        return ServiceProcess(
            name="agent",
            command=command,
            log_path=self.workspace.logs_dir / "agent.log",
            env=child_environment(env),
            interactive=not self.settings.headless,
        )

    def broker_process(
        self, name: str, *, port: int, env: Mapping[str, str] | None = None, workers: int = 0
    ) -> ServiceProcess:
        """A `careid-broker serve` on this port (its issuer http://localhost:PORT)."""
        overrides = {"CAREID_BROKER_ISSUER": f"http://localhost:{port}", **(env or {})}
        command = _python(
            "careid_broker.cli",
            "--config",
            str(self.broker_config),
            "serve",
            "--bind",
            f"127.0.0.1:{port}",
        )
        if workers:
            command += ["--workers", str(workers)]
        return ServiceProcess(
            name=name,
            command=command,
            log_path=self.workspace.logs_dir / f"{name.replace(' ', '-')}.log",
            env=child_environment(overrides),
        )

    def start_extra_broker(
        self, name: str, *, port: int, env: Mapping[str, str], timeout: float = START_TIMEOUT
    ) -> ServiceProcess:
        """Another broker on the same store and directory, with settings overridden by
        CAREID_* variables (e.g. CAREID_PKI_REVOCATION=crl); stopped with the chain."""
        if name in self.extra_brokers:
            return self.extra_brokers[name]
        process = self.broker_process(name, port=port, env=env, workers=1)
        self.extra_brokers[name] = process
        process.start()
        process.wait_ready(
            lambda: http_answers(f"http://127.0.0.1:{port}/healthz") == 200, timeout=timeout
        )
        return process

    def restart_agent(self, *, pin: str | None = None, timeout: float = START_TIMEOUT) -> None:
        """Stop the agent and start it again (with another PIN from the environment)."""
        if self.agent is not None:
            self.agent.stop()
        self.agent_pin = pin if pin is not None else self.settings.pin
        self.agent = self._agent_process()
        self.agent.start()
        self.agent.wait_ready(self.agent_answers, timeout=timeout)

    def agent_answers(self) -> bool:
        """Whether the agent answers /v1/status for the broker's origin."""
        url = f"{self.urls.agent}/v1/status"
        return http_answers(url, headers={"Origin": self.urls.broker}) == 200

    def wait_ready(self, timeout: float) -> None:
        """Wait until the broker, webmail, agent and tray answer."""
        assert self.broker and self.webmail and self.agent  # noqa: S101 - after start
        self.broker.wait_ready(
            lambda: http_answers(f"{self.urls.broker}/readyz") == 200, timeout=timeout
        )
        self.webmail.wait_ready(
            lambda: http_answers(f"{self.urls.webmail}/") == 200, timeout=timeout
        )
        self.agent.wait_ready(self.agent_answers, timeout=timeout)
        if http_answers(f"{self.urls.tray}/cards") != 200:
            raise ServiceFailedError("card tray", "does not answer")

    def failure(self) -> ServiceFailedError | None:
        """A child that exited although nobody stopped it, as an error; else None."""
        for process in self.processes():
            status = process.exit_status
            if status is not None and not process.stopping:
                return ServiceFailedError(
                    process.name, f"exited with status {status}", process.log_path
                )
        return None

    def stop(self) -> None:
        """Stop everything this chain started, the agent first (it reports removals)."""
        others = (*self.extra_brokers.values(), self.broker, self._migrate)
        for process in (self.agent, self.webmail, *others):
            if process is not None:
                _quietly(process.stop, process.name)
        if self.tray_server is not None:
            _quietly(self.tray_server.close, "card tray")
            self.tray_server = None
        if self.pki_server is not None:
            _quietly(self.pki_server.close, "PKI server")
            self.pki_server = None
        if self.slapd is not None:
            _quietly(self.slapd.stop, "slapd")
        if self.pcscd is not None:
            _quietly(self.pcscd.stop, "pcscd")
            self.pcscd = None

    def __enter__(self) -> DemoChain:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _quietly(action: Callable[[], None], name: str) -> None:
    try:
        action()
    except Exception:  # noqa: BLE001 - one part failing to stop must not strand the rest
        log.exception("stopping the %s failed", name)
