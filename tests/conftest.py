"""Shared fixtures: real holistream servers on loopback, started as subprocesses.

Each server binds port 0 and reports the port it got in its log; a fixture waits for /readyz.
Servers are always stopped at the end of their scope, with SIGKILL as the last resort, and their
logs are kept under test-artifacts/ for post-mortems.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import websockets.asyncio.connection
import websockets.exceptions

from tests import protocol_schema

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
ARTIFACTS = ROOT / "test-artifacts"
HOLISTREAM = Path(sys.executable).parent / "holistream"
_LISTENING = re.compile(r"listening on http://\S+:(\d+)")


_violations: list[str] = []


def _checked_recv(recv):  # type: ignore[no-untyped-def]
    async def recv_and_check(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        data = await recv(self, *args, **kwargs)
        try:
            protocol_schema.check_server_message(data)
        except protocol_schema.ContractViolation as exc:
            _violations.append(str(exc))
        return data

    return recv_and_check


def _checked_status(init):  # type: ignore[no-untyped-def]
    def init_and_check(self, response, *args, **kwargs):  # type: ignore[no-untyped-def]
        init(self, response, *args, **kwargs)
        body = getattr(response, "body", None) or b""
        if body.startswith(b'{"error"'):
            try:
                protocol_schema.check_http_error(body)
            except protocol_schema.ContractViolation as exc:
                _violations.append(str(exc))

    return init_and_check


@pytest.fixture(scope="session", autouse=True)
def _contract_hook() -> Iterator[None]:
    """Every message a server sends to a WebSocket client in this test process (the tests' own
    client, holistream.client, the load generator) is checked against docs/protocol.schema.json;
    so are HTTP refusals of an upgrade. The socket gets the message either way; the test fails."""
    conn_cls = websockets.asyncio.connection.Connection
    status_cls = websockets.exceptions.InvalidStatus
    recv, init = conn_cls.recv, status_cls.__init__
    conn_cls.recv = _checked_recv(recv)  # type: ignore[method-assign]
    status_cls.__init__ = _checked_status(init)  # type: ignore[method-assign]
    try:
        yield
    finally:
        conn_cls.recv = recv  # type: ignore[method-assign]
        status_cls.__init__ = init  # type: ignore[method-assign]


@pytest.fixture(autouse=True)
def _contract_kept() -> Iterator[None]:
    """Fail the test (at teardown) that received a message the contract does not allow."""
    _violations.clear()
    yield
    if _violations:
        found, _violations[:] = list(_violations), []
        pytest.fail(
            f"{len(found)} server message(s) break the protocol contract:\n" + "\n".join(found[:5]),
            pytrace=False,
        )


def media(name: str) -> Path:
    """A fixture file: tests/fixtures, or the runtime fixtures of the server package."""
    for folder in (FIXTURES, ROOT / "server" / "fixtures"):
        if (folder / name).exists():
            return folder / name
    raise FileNotFoundError(name)


@dataclass
class ServerProcess:
    proc: subprocess.Popen[bytes]
    log_path: Path
    port: int = 0
    args: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def readyz(self) -> dict:
        return json.loads(self.get("/readyz")[1])

    def worker_pids(self) -> list[int]:
        return [w["pid"] for w in self.readyz()["workers"] if w["alive"]]

    def metric(self, name: str, labels: str = "") -> float:
        """Sum of a Prometheus sample, optionally only where labels contain `labels`."""
        text = self.get("/metrics")[1].decode()
        total = 0.0
        for line in text.splitlines():
            if line.startswith("#"):
                continue
            key, _, value = line.rpartition(" ")
            base, _, lab = key.partition("{")
            if base == name and (not labels or labels in lab):
                total += float(value)
        return total

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            if not self.port:
                match = _LISTENING.search(self.log())
                if match:
                    self.port = int(match.group(1))
            if self.port:
                with contextlib.suppress(OSError):
                    if self.get("/readyz", timeout=2)[0] == 200:
                        return
            time.sleep(0.1)
        raise TimeoutError(f"server not ready after {timeout}s:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


def start_server(*flags: str, port: int = 0, env: dict[str, str] | None = None,
                 name: str = "server", ready: bool = True,
                 preexec: Callable[[], object] | None = None) -> ServerProcess:
    ARTIFACTS.mkdir(exist_ok=True)
    log_path = ARTIFACTS / f"{name}-{os.getpid()}-{time.monotonic_ns()}.log"
    args = [str(HOLISTREAM), "serve", "--host", "127.0.0.1", "--port", str(port), *flags]
    full_env = {**os.environ, **(env or {})}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=full_env,
                                preexec_fn=preexec)
    server = ServerProcess(proc, log_path, port if port else 0, args)
    if ready:
        try:
            server.wait_ready()
        except BaseException:
            server.stop(signal.SIGKILL)
            raise
    return server


@pytest.fixture
def server_factory() -> Iterator[type[ServerProcess] | object]:
    """Start servers with custom flags; all are stopped when the test ends."""
    started: list[ServerProcess] = []

    def factory(*flags: str, **kwargs: object) -> ServerProcess:
        server = start_server(*flags, **kwargs)  # type: ignore[arg-type]
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def server() -> Iterator[ServerProcess]:
    """One shared server for tests that do not change its settings: two workers, and CPU
    admission relaxed so tests may open a few sessions at once on this 2-core machine."""
    srv = start_server("--workers", "2", "--cpu-overcommit", "20", "--max-sessions", "40",
                       name="shared")
    yield srv
    srv.stop()


# Fixtures that start real processes (a holistream server, nginx, Redis, Chromium, an HTTP file
# server, a model build). A test that uses one, directly or through another fixture, is marked
# `server`; so is every test of a module that sets `pytestmark = pytest.mark.server` because it
# starts processes itself. `pytest -m "not server"` is the fast tier (README, Tests).
PROCESS_FIXTURES = frozenset(
    {"server", "server_factory", "browser", "page", "pool", "redis", "pair", "base_url",
     "serve_file", "built"}
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        uses = PROCESS_FIXTURES & set(getattr(item, "fixturenames", ()))
        if uses or item.get_closest_marker("slow") is not None:
            item.add_marker(pytest.mark.server)
