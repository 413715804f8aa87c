"""``clientela up``: the development stack as supervised child processes.

Temporal's dev server (state in ``<home>/temporal.db``), the SMTP catcher (unless a real SMTP
server is configured), the SMS sink (unless Twilio credentials are set), the HTTP API and the
worker. A child that dies is restarted with backoff; Ctrl-C (or ``clientela down``) stops them
all, newest first. Logs go to ``<home>/logs/<service>.log``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from clientela import ROOT
from clientela.messaging.bounces import bounce_address, mailbox_dir
from clientela.settings import Settings
from workflows import search

PYTHON = sys.executable
TEMPORAL = str(Path(sys.executable).parent / "temporal")


class StackError(RuntimeError):
    pass


@dataclass
class Service:
    name: str
    argv: list[str]
    port: int | None = None  # ready when this port accepts connections
    process: subprocess.Popen[bytes] | None = None
    restarts: list[float] = field(default_factory=list)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex((host, port)) == 0


def services(settings: Settings) -> list[Service]:
    home = settings.home.resolve()
    host, port = settings.temporal_address.rsplit(":", 1)
    attrs = [a for key in search.ALL for a in ("--search-attribute", f"{key.name}=Keyword")]
    result = [
        Service(
            "temporal",
            [
                TEMPORAL,
                "server",
                "start-dev",
                "--db-filename",
                str(home / "temporal.db"),
                "--ip",
                host,
                "--port",
                port,
                "--ui-port",
                str(settings.temporal_ui_port),
                "--namespace",
                settings.temporal_namespace,
                "--log-level",
                "warn",
                *attrs,
            ],
            port=int(port),
        )
    ]
    if settings.uses_catcher:
        result.append(
            Service(
                "smtp",
                [
                    PYTHON,
                    "-m",
                    "clientela.devstack.smtp_catcher",
                    "--outbox",
                    str(settings.outbox_dir.resolve()),
                    "--port",
                    str(settings.catcher_port),
                    "--bounces",
                    str(mailbox_dir(settings).resolve()),
                    "--bounce-local",
                    bounce_address(settings).rpartition("@")[0],
                ],
                port=settings.catcher_port,
            )
        )
    if settings.uses_sms_sink:
        result.append(
            Service(
                "sms",
                [
                    PYTHON,
                    "-m",
                    "clientela.devstack.sms_sink",
                    "--dir",
                    str(settings.sms_dir.resolve()),
                    "--port",
                    str(settings.sms_sink_port),
                ],
                port=settings.sms_sink_port,
            )
        )
    result.append(
        Service(
            "api",
            [
                PYTHON,
                "-m",
                "uvicorn",
                "--factory",
                "api.app:app_from_env",
                "--host",
                settings.api_host,
                "--port",
                str(settings.api_port),
                "--log-level",
                "warning",
            ],
            port=settings.api_port,
        )
    )
    result.append(Service("worker", [PYTHON, str(ROOT / "worker.py")]))
    return result


def pid_file(settings: Settings) -> Path:
    return settings.home / "up.pid"


def running_pid(settings: Settings) -> int | None:
    path = pid_file(settings)
    try:
        pid = int(path.read_text().strip())
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
        return None
    return pid


def is_up(settings: Settings) -> bool:
    ports = [s.port for s in services(settings) if s.port]
    return all(port_open(p) for p in ports)


class Supervisor:
    def __init__(self, settings: Settings, log: Callable[[str], None] = print) -> None:
        self.settings = settings
        self.services = services(settings)
        self.log = log
        self.stopping = False
        self.env = {**os.environ, "CLIENTELA_HOME": str(settings.home.resolve())}

    def check_ports(self) -> None:
        for service in self.services:
            if service.port and port_open(service.port):
                raise StackError(
                    f"port {service.port} ({service.name}) is already in use: stop what uses it "
                    f"or choose another port (see README, Configuration)"
                )

    def _spawn(self, service: Service) -> None:
        logs = self.settings.home / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        out = (logs / f"{service.name}.log").open("ab")
        service.process = subprocess.Popen(
            service.argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env,
            cwd=ROOT,
        )
        out.close()

    def _wait_ready(self, service: Service, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while service.port and not port_open(service.port):
            assert service.process is not None
            if service.process.poll() is not None:
                raise StackError(
                    f"{service.name} exited with code {service.process.returncode} while "
                    f"starting; see {self.settings.home / 'logs' / (service.name + '.log')}"
                )
            if time.monotonic() > deadline:
                raise StackError(f"{service.name} did not open port {service.port} in {timeout}s")
            time.sleep(0.2)

    def start(self) -> None:
        self.settings.home.mkdir(parents=True, exist_ok=True)
        self.check_ports()
        for service in self.services:
            self._spawn(service)
            self._wait_ready(service)
            self.log(
                f"  {service.name:<8} started"
                + (f" on port {service.port}" if service.port else "")
            )

    def supervise(self) -> None:
        """Restart children that die, until stop() is called."""
        while not self.stopping:
            for service in self.services:
                proc = service.process
                if self.stopping or proc is None or proc.poll() is None:
                    continue
                now = time.monotonic()
                service.restarts = [t for t in service.restarts if now - t < 60] + [now]
                if len(service.restarts) > 5:
                    self.log(f"{service.name} keeps exiting; stopping the stack (see its log)")
                    self.stop()
                    raise StackError(f"{service.name} exited {len(service.restarts)} times in 60s")
                delay = min(2 ** (len(service.restarts) - 1), 10)
                self.log(f"{service.name} exited with code {proc.returncode}; restart in {delay}s")
                time.sleep(delay)
                self._spawn(service)
            time.sleep(0.5)

    def stop(self) -> None:
        self.stopping = True
        for service in reversed(self.services):
            proc = service.process
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGINT if service.name == "temporal" else signal.SIGTERM)
        for service in reversed(self.services):
            proc = service.process
            if proc is None:
                continue
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            self.log(f"  {service.name:<8} stopped")


def run_foreground(settings: Settings, log: Callable[[str], None] = print) -> None:
    sup = Supervisor(settings, log)

    def _stop(_sig: int, _frame: object) -> None:
        sup.stopping = True

    sup.start()
    pid_file(settings).write_text(str(os.getpid()))
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    log(
        f"Clientela is up. Temporal UI http://127.0.0.1:{settings.temporal_ui_port}  "
        f"API http://{settings.api_host}:{settings.api_port}  (Ctrl-C stops)"
    )
    try:
        sup.supervise()
    finally:
        log("stopping...")
        sup.stop()
        with contextlib.suppress(FileNotFoundError):
            pid_file(settings).unlink()


def start_detached(settings: Settings, timeout: float = 90) -> int:
    """Run ``clientela up`` in the background and wait until every service answers."""
    settings.home.mkdir(parents=True, exist_ok=True)
    Supervisor(settings).check_ports()
    logs = settings.home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with (logs / "up.log").open("ab") as out:
        proc = subprocess.Popen(
            [PYTHON, str(ROOT / "cli.py"), "up"],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=Path.cwd(),
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StackError(f"the stack did not start; see {logs / 'up.log'}")
        if running_pid(settings) == proc.pid and is_up(settings):
            return proc.pid
        time.sleep(0.3)
    raise StackError(f"the stack did not become ready in {timeout}s; see {logs / 'up.log'}")


def stop_detached(settings: Settings, timeout: float = 30) -> bool:
    pid = running_pid(settings)
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if running_pid(settings) is None:
            return True
        time.sleep(0.3)
    raise StackError(f"the stack (pid {pid}) did not stop in {timeout}s")
