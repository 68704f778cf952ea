"""Shared fixtures: real holistream servers on loopback, started as subprocesses.

The server-process harness itself (ServerProcess, start_server) is tests/harness.py, shared with
bench/. Servers are always stopped at the end of their scope, with SIGKILL as the last resort,
and their logs are kept under test-artifacts/ for post-mortems.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import websockets.asyncio.connection
import websockets.exceptions

from tests import protocol_schema
from tests.harness import ARTIFACTS, HOLISTREAM, ROOT, ServerProcess, start_server

__all__ = ["ARTIFACTS", "FIXTURES", "HOLISTREAM", "ROOT", "ServerProcess", "media", "start_server"]

FIXTURES = ROOT / "tests" / "fixtures"


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


# A test is marked `server` (left out of the fast tier, `pytest -m "not server"`) when it starts
# real processes or runs the real model: it uses a fixture that starts one (a holistream server,
# nginx, Redis, Chromium, an HTTP file server, a model build), its module holds the server harness
# or the MediaPipe pipelines, or it is marked `slow`. Tests that start processes otherwise carry
# the mark explicitly.
PROCESS_FIXTURES = frozenset(
    {"server", "server_factory", "browser", "page", "pool", "redis", "pair", "base_url",
     "serve_file", "built"}
)
REAL_PARTS = frozenset({"start_server", "ServerProcess", "pipelines", "clip_landmarks"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        uses = PROCESS_FIXTURES & set(getattr(item, "fixturenames", ()))
        module = getattr(item, "module", None)
        holds = REAL_PARTS & set(vars(module)) if module is not None else set()
        if uses or holds or item.get_closest_marker("slow") is not None:
            item.add_marker(pytest.mark.server)
