"""holistream behind real nginx (nginx/): several instances, one entry point.

Real Debian nginx on loopback, started here from a config that nginx/run_local.py renders into a
temporary run directory and `nginx -t` accepts first, in front of real holistream instances.
Everything is bounded in time and connects to 127.0.0.1 only. Some clients use 127.0.0.2 as their
*source* address (another peer on the same loopback), to tell a client's address from nginx's.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import importlib.util
import itertools
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import psutil
import pytest
import websockets

from tests.conftest import ARTIFACTS, ROOT, ServerProcess, media, start_server
from tests.harness import Loopback
from tests.wsclient import Conn, connect, is_type

pytestmark = pytest.mark.server  # nginx and holistream processes

NGINX_DIR = ROOT / "nginx"
LOADGEN = Path(sys.executable).parent / "holistream-loadgen"
INSTANCE_FLAGS = ("--workers", "1", "--cpu-overcommit", "20", "--max-sessions", "20",
                  "--trusted-proxies", "127.0.0.1")
LAN_IP = "192.0.2.10"  # TEST-NET-1: a "LAN address" for the certificate; never connected to
# messi5.jpg: every part found; numbers per part (points x stride).
MESSI_PARTS = {"face": 478 * 3, "pose": 33 * 5, "pose_world": 33 * 3, "left_hand": 21 * 3,
               "right_hand": 21 * 3, "left_hand_world": 21 * 3, "right_hand_world": 21 * 3}


def _load_run_local() -> ModuleType:
    """nginx/run_local.py is a script, not a package: load it by path."""
    path = NGINX_DIR / "run_local.py"
    spec = importlib.util.spec_from_file_location("holistream_run_local", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


run_local = _load_run_local()
try:
    NGINX: str = run_local.find_nginx()
except run_local.LaunchError as exc:
    pytest.skip(f"{exc}", allow_module_level=True)
HAVE_OPENSSL = shutil.which("openssl") is not None


# --- nginx in a run directory -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class NginxProcess(Loopback):
    proc: subprocess.Popen[bytes]
    run_dir: Path
    log_path: Path
    port: int
    tls_port: int | None = None

    @property
    def wss_url(self) -> str:
        return f"wss://127.0.0.1:{self.tls_port}/ws"

    def access_log(self) -> str:
        return (self.run_dir / "access.log").read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful; worker_shutdown_timeout is 10 s
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        with contextlib.suppress(OSError):
            shutil.copy(self.run_dir / "access.log", self.log_path.with_suffix(".access.log"))
        shutil.rmtree(self.run_dir, ignore_errors=True)


def start_nginx(upstreams: Sequence[str], *, name: str, tls: tuple[Path, Path] | None = None,
                **layout: Any) -> NginxProcess:
    """Render the configs for these upstreams, check them with `nginx -t`, start nginx."""
    run_dir = Path(tempfile.mkdtemp(prefix=f"holistream-{name}-"))
    run_dir.chmod(0o755)  # started as root, nginx's workers run as nobody and use temp/ in here
    port = free_port()
    tls_port = free_port() if tls else None
    conf = run_local.render(
        run_local.Layout(
            upstreams=tuple(upstreams),
            listen=f"127.0.0.1:{port}",
            tls_listen=f"127.0.0.1:{tls_port}" if tls else None,
            cert=tls[0] if tls else None,
            key=tls[1] if tls else None,
            **layout,
        ),
        run_dir,
    )
    check = run_local.nginx_test(NGINX, conf)
    if check.returncode != 0:
        shutil.rmtree(run_dir, ignore_errors=True)
        raise AssertionError(f"nginx -t: {check.stderr}")
    ARTIFACTS.mkdir(exist_ok=True)
    log_path = ARTIFACTS / f"{name}-{os.getpid()}-{time.monotonic_ns()}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(run_local.nginx_args(NGINX, conf), stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    server = NginxProcess(proc, run_dir, log_path, port, tls_port)
    deadline = time.monotonic() + 10
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return server
        if proc.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"nginx did not start:\n{server.log()}")
        time.sleep(0.05)


def http_get(url: str, *, source: str | None = None, context: ssl.SSLContext | None = None,
             method: str = "GET", body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    """One request from an optional source address; (status, headers, body)."""
    parts = urllib.parse.urlsplit(url)
    address = (source, 0) if source else None
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(parts.hostname or "", parts.port, timeout=10,
                                           source_address=address, context=context)
    else:
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10,
                                          source_address=address)
    try:
        conn.request(method, parts.path or "/", body=body)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def instance_of(session_id: str, instances: Sequence[ServerProcess]) -> tuple[int, str]:
    """Which instance logged this session, and the client address it logged."""
    pattern = re.compile(rf"session {session_id[:8]} from (\S+) connected")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for index, server in enumerate(instances):
            if match := pattern.search(server.log()):
                return index, match.group(1)
        time.sleep(0.05)
    raise AssertionError(f"session {session_id[:8]} is in no instance's log")


def check_messi(result: dict[str, Any]) -> None:
    got = {part: len(result[part]) for part in MESSI_PARTS if result.get(part) is not None}
    assert got == MESSI_PARTS, got


@dataclass
class Producer:
    """A closed loop over one session: a frame, its result, the next frame.

    A frame can still be dropped: when several sessions start at once on one worker, it may wait
    behind their landmarkers' start-up longer than max_frame_age_ms (a documented `stale` drop,
    reported with the next result). The periodic stats show it (nothing of ours pending or in
    flight, no result on its way), and then the next frame goes out."""

    conn: Conn
    image: bytes
    sent: int = 0
    results: int = 0

    async def _send(self) -> None:
        self.sent += 1
        await self.conn.send_frame(self.sent, self.image)

    async def result(self, timeout: float = 30) -> dict[str, Any]:
        await self._send()
        deadline = time.monotonic() + timeout
        while True:
            msg = await self.conn.recv(max(deadline - time.monotonic(), 0.01))
            if is_type(msg, "result"):
                self.results += 1
                assert msg["frame"] == self.sent, msg["frame"]
                return dict(msg)
            if is_type(msg, "stats") and (msg["received"], msg["pending"], msg["in_flight"],
                                          msg["results"]) == (self.sent, 0, 0, self.results):
                await self._send()


async def first_results(conn: Conn, image: bytes, count: int) -> list[dict[str, Any]]:
    producer = Producer(conn, image)
    return [await producer.result() for _ in range(count)]


def wait_sessions(instances: Sequence[ServerProcess], expected: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while sum(s.metric("holistream_sessions") for s in instances) != expected:
        assert time.monotonic() < deadline, "sessions of earlier tests did not end"
        time.sleep(0.1)


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """nginx/make-cert, as the README tells users to run it, with a LAN address."""
    if not HAVE_OPENSSL:
        pytest.skip("openssl is not installed")
    out = tmp_path_factory.mktemp("tls")
    proc = subprocess.run([str(NGINX_DIR / "make-cert"), "-o", str(out), LAN_IP],
                          capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr
    cert, key = out / "holistream.crt", out / "holistream.key"
    assert cert.exists() and key.exists() and key.stat().st_mode & 0o077 == 0
    return cert, key


@dataclass
class Pool:
    instances: list[ServerProcess]
    nginx: NginxProcess
    cert: Path
    trust: ssl.SSLContext = field(init=False)

    def __post_init__(self) -> None:
        self.trust = ssl.create_default_context(cafile=str(self.cert))

    @property
    def addresses(self) -> list[str]:
        return [f"127.0.0.1:{s.port}" for s in self.instances]


@pytest.fixture(scope="module")
def pool(certificate: tuple[Path, Path]) -> Iterator[Pool]:
    """Two instances behind one nginx (HTTP and HTTPS), as an operator runs them."""
    with ThreadPoolExecutor(2) as starting:  # in parallel: each takes seconds to warm up
        futures = [starting.submit(start_server, *INSTANCE_FLAGS, name=f"nginx-instance{i}")
                   for i in range(2)]
    instances = [f.result() for f in futures if f.exception() is None]
    try:
        if len(instances) < 2:
            raise next(e for f in futures if (e := f.exception()) is not None)
        nginx = start_nginx([f"127.0.0.1:{s.port}" for s in instances], name="nginx-pool",
                            tls=certificate)
    except BaseException:
        for server in instances:
            server.stop()
        raise
    try:
        yield Pool(instances, nginx, certificate[0])
    finally:
        try:
            nginx.stop()
        finally:
            for server in instances:
                server.stop()


# --- configuration ------------------------------------------------------------------------------


def test_rendered_configs_pass_nginx_t(tmp_path: Path, certificate: tuple[Path, Path]) -> None:
    """Every shape the README describes renders to a config nginx accepts."""
    shapes: dict[str, dict[str, Any]] = {
        "one-box": {"upstreams": ("127.0.0.1:8001", "127.0.0.1:8002")},
        "tls": {"upstreams": ("127.0.0.1:8001",), "tls_listen": "127.0.0.1:8443",
                "cert": certificate[0], "key": certificate[1]},
        "boxes": {"upstreams": ("10.0.0.11:8000", "10.0.0.12:8000", "[2001:db8::5]:8000"),
                  "listen": "0.0.0.0:80", "operator_allow": ("10.0.0.0/8",),
                  "max_body_bytes": 8 << 20},
    }
    for shape, settings in shapes.items():
        conf = run_local.render(run_local.Layout(**settings), tmp_path / shape)
        check = run_local.nginx_test(NGINX, conf)
        assert check.returncode == 0, f"{shape}: {check.stderr}"
        text = "\n".join(p.read_text() for p in conf.parent.glob("*.conf"))
        assert not re.search(r"@[A-Z_]+@", text), shape
        for directive in ("least_conn;", "proxy_http_version 1.1;",
                          "proxy_set_header Upgrade $http_upgrade;",
                          "proxy_set_header Connection $holistream_connection_upgrade;",
                          "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
                          "proxy_read_timeout 90s;", "proxy_next_upstream error timeout;",
                          "hash $arg_stream consistent;"):
            assert directive in text, (shape, directive)
        for address in settings["upstreams"]:
            assert f"server {address} max_fails=1 fail_timeout=10s;" in text
        body = settings.get("max_body_bytes", 4 * 1024 * 1024)
        assert f"client_max_body_size {body};" in text
        assert ("listen 127.0.0.1:8443 ssl;" in text) == (shape == "tls")
    assert run_local.default_workers(1) >= 1 and run_local.default_workers(64) == 1
    with pytest.raises(run_local.LaunchError):
        run_local.Layout(upstreams=("no-port",))
    with pytest.raises(run_local.LaunchError):
        run_local.Layout(upstreams=("127.0.0.1:1",), tls_listen="127.0.0.1:2")  # no certificate


def test_scripts_are_executable_and_render_only_checks(tmp_path: Path) -> None:
    for name in ("run-local", "run_local.py", "make-cert"):
        path = NGINX_DIR / name
        assert os.access(path, os.X_OK) and path.read_text().startswith("#!"), name
    proc = subprocess.run(
        [str(NGINX_DIR / "run-local"), "--render-only", "--out", str(tmp_path / "etc"),
         "--upstream", "10.0.0.11:8000", "--upstream", "10.0.0.12:8000", "--host", "0.0.0.0",
         "--port", "80"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "test is successful" in proc.stdout
    assert "listen 0.0.0.0:80;" in (tmp_path / "etc" / "holistream.conf").read_text()
    assert not (tmp_path / "etc" / "holistream-tls.conf").exists()


# --- through the pool ---------------------------------------------------------------------------


@pytest.mark.timeout(90)
async def test_ten_sessions_spread_over_both_instances(pool: Pool) -> None:
    await asyncio.to_thread(wait_sessions, pool.instances, 0)
    image = media("messi5.jpg").read_bytes()
    conns = await asyncio.gather(*(connect(pool.nginx.ws_url, hello={}) for _ in range(10)))
    try:
        results = await asyncio.gather(*(first_results(c, image, 2) for c in conns))
        live = [s.metric("holistream_sessions") for s in pool.instances]
    finally:
        await asyncio.gather(*(c.close() for c in conns))
    for session_results in results:
        for result in session_results:
            check_messi(result)
    # least_conn: both instances hold sessions, and about as many each.
    assert all(n > 0 for n in live) and sum(live) == 10 and abs(live[0] - live[1]) <= 2, live
    where = [instance_of(c.ready["session"], pool.instances)[0] for c in conns]
    assert sorted(where.count(i) for i in (0, 1)) == sorted(int(n) for n in live)


def test_operator_paths_reach_each_instance(pool: Pool) -> None:
    base = pool.nginx.url
    status, _, body = http_get(base + "/instances/")
    assert status == 200 and body.decode().split("\n")[:2] == [
        f"{i} {a}" for i, a in enumerate(pool.addresses)
    ]
    for index, server in enumerate(pool.instances):
        status, _, body = http_get(f"{base}/instances/{index}/readyz")
        pids = [w["pid"] for w in json.loads(body)["workers"]]
        assert status == 200 and pids == server.worker_pids()  # that instance, not another
        for path in ("healthz", "metrics"):
            assert http_get(f"{base}/instances/{index}/{path}")[0] == 200
        assert b"holistream_sessions" in http_get(f"{base}/instances/{index}/metrics")[2]
    assert http_get(base + "/instances/7/metrics")[0] == 404
    # Through the pool: health of the entry point, the web demo; no misleading pooled metrics.
    assert http_get(base + "/healthz")[0] == 200
    status, _, body = http_get(base + "/metrics")
    assert status == 404 and b"/instances/N/metrics" in body
    status, _, body = http_get(base + "/")
    assert status == 200 and b"<title>holistream" in body
    assert http_get(base + "/js/main.js")[0] == 200
    assert b"Active connections" in http_get(base + "/nginx_status")[2]
    # Operator paths are for operators (loopback by default); the demo is for everyone.
    for path in ("/instances/", "/instances/0/metrics", "/nginx_status"):
        assert http_get(base + path, source="127.0.0.2")[0] == 403, path
    assert http_get(base + "/healthz", source="127.0.0.2")[0] == 200


async def test_server_sees_the_real_client_address(pool: Pool) -> None:
    """nginx appends the peer to X-Forwarded-For; an instance believes it only from a trusted
    proxy (--trusted-proxies 127.0.0.1) and takes the first untrusted hop from the right."""

    async def logged(url: str, xff: str | None = None, source: str | None = None,
                     instances: Sequence[ServerProcess] = pool.instances) -> str:
        kw: dict[str, Any] = {}
        if xff is not None:
            kw["additional_headers"] = {"X-Forwarded-For": xff}
        if source is not None:
            kw["local_addr"] = (source, 0)
        conn = await connect(url, hello={}, **kw)
        await conn.close()
        return (await asyncio.to_thread(instance_of, conn.ready["session"], instances))[1]

    url = pool.nginx.ws_url
    # The client itself, not nginx (127.0.0.1): a client on 127.0.0.2 through nginx.
    assert await logged(url, source="127.0.0.2") == "127.0.0.2"
    # Its forged header is kept but not believed: 127.0.0.2 is no trusted proxy.
    assert await logged(url, xff="198.51.100.9", source="127.0.0.2") == "127.0.0.2"
    # nginx appends rather than replaces: behind a trusted hop (a client on 127.0.0.1, which is
    # on the trusted list), the address that hop reported is the one logged.
    assert await logged(url, xff="203.0.113.7") == "203.0.113.7"
    # Directly at an instance, an untrusted peer's header is ignored too.
    direct = pool.instances[0]
    assert await logged(direct.ws_url, xff="198.51.100.9", source="127.0.0.2",
                        instances=[direct]) == "127.0.0.2"


async def test_named_streams_meet_on_one_instance(pool: Pool) -> None:
    """Every session of a stream (?stream=NAME) goes to one instance, chosen by the name, so its
    subscribers find its producer; a second producer is refused (409) across the pool."""
    producers: list[Conn] = []
    homes: dict[str, int] = {}
    try:
        for i in range(20):  # different names spread over the instances
            name = f"nginx-test-{i}"
            conn = await connect(f"{pool.nginx.ws_url}?stream={name}", hello={})
            producers.append(conn)
            homes[name] = (await asyncio.to_thread(instance_of, conn.ready["session"],
                                                   pool.instances))[0]
            if len(homes) >= 4 and len(set(homes.values())) == 2:
                break
        assert set(homes.values()) == {0, 1}, homes
        for name in homes:
            with pytest.raises(websockets.InvalidStatus) as refused:
                await connect(f"{pool.nginx.ws_url}?stream={name}", hello={})
            assert refused.value.response.status_code == 409
            assert json.loads(refused.value.response.body)["error"]["code"] == "stream_taken"
    finally:
        await asyncio.gather(*(c.close() for c in producers))


async def test_subscribers_find_their_stream_through_nginx(pool: Pool) -> None:
    """A subscriber arriving through the pool reaches the instance that holds its stream."""
    if http_get(pool.nginx.url + "/instances/0/ws/subscribe")[0] == 404:
        pytest.skip("this server build has no /ws/subscribe yet")
    image = media("messi5.jpg").read_bytes()
    conns: list[Conn] = []
    homes: set[int] = set()
    try:
        for i in range(20):  # until streams on both instances were watched
            name = f"nginx-watch-{i}"
            producer = await connect(f"{pool.nginx.ws_url}?stream={name}", hello={})
            conns.append(producer)
            home = (await asyncio.to_thread(instance_of, producer.ready["session"],
                                            pool.instances))[0]
            if home in homes:
                continue
            homes.add(home)
            watcher = await connect(f"{pool.nginx.url.replace('http', 'ws')}/ws/subscribe"
                                    f"?stream={name}", hello={})
            conns.append(watcher)
            assert watcher.ready["role"] == "subscriber"
            sent = await first_results(producer, image, 1)
            seen = await watcher.recv_until(lambda m: is_type(m, "result"), timeout=15)
            assert seen["frame"] == sent[0]["frame"] and seen["face"] == sent[0]["face"]
            if homes == {0, 1}:
                break
        assert homes == {0, 1}
    finally:
        await asyncio.gather(*(c.close() for c in conns))


async def test_origin_check_works_through_nginx(pool: Pool) -> None:
    port = pool.nginx.port
    # A page served by the proxy on a non-default port, opened by its LAN address: the browser
    # sends Origin http://LAN_IP:PORT and Host LAN_IP:PORT; nginx must pass the Host on with its
    # port, or the check refuses the page's own socket.
    conn = await connect(f"ws://{LAN_IP}:{port}/ws", hello={}, host="127.0.0.1", port=port,
                         origin=f"http://{LAN_IP}:{port}")
    await conn.close()
    # A name is trusted only when configured (--allowed-origins): with DNS rebinding, Host and
    # Origin agree on the attacker's name, so agreement proves nothing.
    for origin in ("http://evil.test", f"http://lan.test:{port}"):
        with pytest.raises(websockets.InvalidStatus) as refused:
            await connect(f"ws://lan.test:{port}/ws", host="127.0.0.1", port=port, origin=origin)
        assert refused.value.response.status_code == 403
        assert json.loads(refused.value.response.body)["error"]["code"] == "origin_not_allowed"


async def test_size_limits_match_the_server(pool: Pool) -> None:
    # HTTP bodies (POST /v1/predict): nginx refuses above --max-message-bytes, before the instance.
    big = b"\xff" * (4 * 1024 * 1024 + 1)
    status, headers, _ = await asyncio.to_thread(
        http_get, pool.nginx.url + "/v1/predict", method="POST", body=big
    )
    assert status == 413 and headers.get("Server", "").startswith("nginx")
    # WebSocket messages are not bodies: the instance closes an oversized frame with 1009.
    conn = await connect(pool.nginx.ws_url, hello={})
    conn.announce_binary(len(big))  # only the length: no race with a client still writing
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await conn.recv(timeout=20)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


async def test_wss_through_the_tls_block(pool: Pool) -> None:
    cert = pool.cert
    names = subprocess.run(["openssl", "x509", "-in", str(cert), "-noout", "-ext",
                            "subjectAltName"], capture_output=True, text=True, check=True).stdout
    for name in ("DNS:localhost", "IP Address:127.0.0.1", f"IP Address:{LAN_IP}"):
        assert name in names
    tls_port = pool.nginx.tls_port
    conn = await connect(pool.nginx.wss_url, hello={}, ssl=pool.trust)
    try:
        check_messi((await first_results(conn, media("messi5.jpg").read_bytes(), 1))[0])
    finally:
        await conn.close()
    # The phone case: the demo at https://LAN_IP:PORT/ opens its socket to the same origin.
    conn = await connect(f"wss://{LAN_IP}:{tls_port}/ws", hello={}, ssl=pool.trust,
                         host="127.0.0.1", port=tls_port, origin=f"https://{LAN_IP}:{tls_port}")
    await conn.close()
    status, _, body = await asyncio.to_thread(
        http_get, f"https://127.0.0.1:{tls_port}/", context=pool.trust
    )
    assert status == 200 and b"<title>holistream" in body
    # Trust is real: without the certificate as a CA, the handshake fails.
    with pytest.raises(ssl.SSLCertVerificationError):
        await connect(pool.nginx.wss_url, ssl=ssl.create_default_context())


async def test_refusals_by_nginx_use_the_servers_error_shape(pool: Pool) -> None:
    """Its own refusals (rate limit, no instance reachable) are JSON errors with Retry-After."""
    nowhere = f"127.0.0.1:{free_port()}"  # nothing listens there
    edge = await asyncio.to_thread(start_nginx, [nowhere], name="nginx-edge", connect_rate=1,
                                   connect_burst=1)
    try:
        statuses: dict[int, dict[str, Any]] = {}
        for _ in range(4):
            with pytest.raises(websockets.InvalidStatus) as refused:
                await connect(edge.ws_url)
            response = refused.value.response
            assert response.headers.get("Retry-After")
            statuses[response.status_code] = json.loads(response.body)["error"]
        assert statuses[502]["code"] == "unreachable"
        assert statuses[429]["code"] == "rate_limited"
    finally:
        await asyncio.to_thread(edge.stop)


# --- failure of one instance --------------------------------------------------------------------


@dataclass
class Streamer:
    """A closed-loop client that reconnects through nginx when its session is closed."""

    url: str
    image: bytes
    results: list[float] = field(default_factory=list)  # monotonic time of each result
    sessions: list[str] = field(default_factory=list)
    closes: list[float] = field(default_factory=list)
    connect_failures: list[str] = field(default_factory=list)
    notices: list[Any] = field(default_factory=list)  # warnings and errors from the server
    bad: list[str] = field(default_factory=list)  # results that were not right

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                conn = await connect(self.url, hello={})
            except (OSError, websockets.InvalidHandshake) as exc:
                self.connect_failures.append(repr(exc))
                await asyncio.sleep(0.2)
                continue
            self.sessions.append(conn.ready["session"])
            producer = Producer(conn, self.image)
            try:
                while not stop.is_set():
                    result = await producer.result(timeout=15)
                    self.results.append(time.monotonic())
                    try:
                        check_messi(result)
                    except AssertionError as exc:
                        self.bad.append(f"frame {result['frame']}: {exc}")
            except websockets.ConnectionClosed:
                self.closes.append(time.monotonic())
            finally:
                self.notices += [m for m in conn.messages
                                 if is_type(m, "warning") or is_type(m, "error")]
                await conn.close()

    def results_after(self, t: float) -> int:
        return sum(1 for r in self.results if r > t)

    def max_gap(self, start: float, end: float) -> float:
        times = [start, *(r for r in self.results if start < r < end), end]
        return max(b - a for a, b in itertools.pairwise(times))


async def _until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_killed_instance_clients_reconnect_others_do_not_notice(pool: Pool) -> None:
    survivor = pool.instances[0]
    victim = await asyncio.to_thread(start_server, *INSTANCE_FLAGS, name="nginx-victim")
    nginx = await asyncio.to_thread(
        start_nginx, [f"127.0.0.1:{survivor.port}", f"127.0.0.1:{victim.port}"], name="nginx-kill"
    )
    instances = [survivor, victim]
    stop = asyncio.Event()
    image = media("messi5.jpg").read_bytes()
    streamers = [Streamer(nginx.ws_url, image) for _ in range(6)]
    tasks: list[asyncio.Task[None]] = []
    try:
        victim_workers = victim.worker_pids()
        for streamer in streamers:  # one by one: least_conn alternates between the two
            tasks.append(asyncio.create_task(streamer.run(stop)))
            await _until(lambda s=streamer: s.sessions, 30, "no session")
        await _until(lambda: all(len(s.results) >= 3 for s in streamers), 60, "no results")
        homes = [(await asyncio.to_thread(instance_of, s.sessions[0], instances))[0]
                 for s in streamers]
        moved = [s for s, home in zip(streamers, homes, strict=True) if home == 1]
        stayed = [s for s, home in zip(streamers, homes, strict=True) if home == 0]
        assert moved and stayed, homes

        killed_at = time.monotonic()
        victim.proc.send_signal(signal.SIGKILL)
        # Its clients see a close, reconnect through the same nginx, and carry on elsewhere.
        await _until(lambda: all(s.results_after(killed_at) >= 3 and len(s.sessions) == 2
                                 for s in moved), 45, "the victim's clients did not come back")
        await asyncio.sleep(1.0)  # the survivors keep streaming a little while longer
        ended_at = time.monotonic()
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
        await asyncio.to_thread(nginx.stop)
        await asyncio.to_thread(victim.stop)

    for streamer in moved:
        assert len(streamer.closes) == 1 and streamer.closes[0] > killed_at
        assert streamer.connect_failures == []  # nginx hid the dead instance from the reconnect
        assert (await asyncio.to_thread(instance_of, streamer.sessions[1], instances))[0] == 0
    for streamer in stayed:
        # Not a close, a warning or a lost frame; results all along, at their usual pace.
        assert streamer.closes == [] and len(streamer.sessions) == 1 and streamer.notices == []
        assert streamer.results_after(killed_at) >= 3
        assert streamer.max_gap(killed_at, ended_at) < 5.0
    for streamer in streamers:
        assert streamer.bad == [], streamer.bad
    # The killed instance took its inference workers with it: nothing eats the survivor's cores.
    await _until(lambda: not any(psutil.pid_exists(p) for p in victim_workers), 10,
                 "orphaned workers of the killed instance")


# --- holistream-loadgen through nginx -----------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_loadgen_through_nginx(pool: Pool, tmp_path: Path) -> None:
    wait_sessions(pool.instances, 0)
    before = [s.metric("holistream_frames_received_total") for s in pool.instances]
    out = tmp_path / "report.json"
    proc = subprocess.run(
        [str(LOADGEN), "--url", pool.nginx.ws_url, "--clients", "4", "--fps", "5",
         "--duration", "3", "--ramp", "0", "--drain", "5", "--parts", "pose", "--quiet",
         "--metrics-url", "none", "--json", str(out)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    after = [s.metric("holistream_frames_received_total") for s in pool.instances]
    (stage,) = json.loads(out.read_text())["stages"]
    sessions, frames = stage["sessions"], stage["frames"]
    assert sessions["ok"] == 4 and sessions["failed"] == 0 and sessions["refused"] == 0
    assert frames["results"] > 0 and frames["balanced"] and frames["unanswered"] == 0
    # Every frame sent through nginx reached exactly one instance, and both instances got some.
    received = [a - b for a, b in zip(after, before, strict=True)]
    assert sum(received) == frames["sent"] and all(n > 0 for n in received), received


# --- the launcher -------------------------------------------------------------------------------


def _consecutive_free_ports(count: int) -> int:
    for _ in range(50):
        base = free_port()
        if base + count < 65536 and all(
            run_local.port_free("127.0.0.1", base + i) for i in range(count)
        ):
            return base
    raise RuntimeError("no consecutive free ports")


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_run_local_serves_and_stops_everything_on_ctrl_c(tmp_path: Path) -> None:
    if not HAVE_OPENSSL:
        pytest.skip("openssl is not installed")
    base, port, tls_port = _consecutive_free_ports(2), free_port(), free_port()
    log_path = ARTIFACTS / f"run-local-{os.getpid()}-{time.monotonic_ns()}.log"
    cmd = [str(NGINX_DIR / "run-local"), "-n", "2", "--workers", "1", "--base-port", str(base),
           "--port", str(port), "--tls", "--tls-port", str(tls_port),
           "--cert-dir", str(tmp_path / "tls"), "--", "--no-calibrate", "--cpu-overcommit", "20"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    family: list[psutil.Process] = []
    try:
        await _until(lambda: "run-local: ready" in log_path.read_text() or proc.poll() is not None,
                     60, "run-local did not get ready")
        assert proc.poll() is None, log_path.read_text()
        family = psutil.Process(proc.pid).children(recursive=True)
        # Two instances with one worker each, and nginx's master and worker.
        assert len(family) >= 6, [p.cmdline()[:3] for p in family]
        trust = ssl.create_default_context(cafile=str(tmp_path / "tls" / "holistream.crt"))
        for index in (0, 1):
            status, _, body = await asyncio.to_thread(
                http_get, f"https://127.0.0.1:{tls_port}/instances/{index}/readyz", context=trust
            )
            assert status == 200 and len(json.loads(body)["workers"]) == 1
        conn = await connect(f"ws://127.0.0.1:{port}/ws", hello={})
        try:
            check_messi((await first_results(conn, media("messi5.jpg").read_bytes(), 1))[0])
        finally:
            await conn.close()

        proc.send_signal(signal.SIGINT)  # Ctrl-C
        code = await asyncio.to_thread(proc.wait, 40)
        text = log_path.read_text()
        assert code == 0, text
        assert "SIGINT: stopping" in text and "run-local: stopped" in text
        leftovers = [p for p in family if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert leftovers == [], leftovers
        for p in (base, base + 1, port, tls_port):
            assert run_local.port_free("127.0.0.1", p), p
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        for child in family:
            with contextlib.suppress(psutil.Error):
                child.kill()
