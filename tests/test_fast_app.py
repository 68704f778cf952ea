"""The aiohttp application in process, with the real Core and pool and fake workers (fast tier).

What runs for real: routing, the handlers, validation, admission, sessions and their slots,
the pool's turns, the stream hub, metrics. What is faked: the worker processes
(tests/fake_pool.py). The same behaviours with real workers and the real model are covered by
the `server`-marked tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient, TestServer

from holistream import protocol
from server.config import Config
from server.core import Core
from server.http.app import build_app
from server.workers import messages as m
from tests.fake_pool import HEIGHT, WIDTH, FakeWorkerPool
from tests.protocol_schema import check_http_error, check_server_message

FIXTURES = Path(__file__).parent / "fixtures"
JPEG = (FIXTURES / "building.jpg").read_bytes()


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[tuple[TestClient[Any, Any], Core]]:
    models = {}
    for name in protocol.PIPELINES:
        models[name] = tmp_path / f"{name}.task"
        models[name].write_bytes(name.encode())
    config = Config(workers=2, cpus=2, memory_budget_mb=8192, stats_interval_s=0.05,
                    idle_timeout_s=5)
    core = Core(config, models, pool_class=FakeWorkerPool)
    client = TestClient(TestServer(build_app(core)))
    await client.start_server()
    await core.start()
    try:
        yield client, core
    finally:
        await client.close()
        await core.stop()


def fake(core: Core) -> FakeWorkerPool:
    assert isinstance(core.pool, FakeWorkerPool)
    return core.pool


async def receive(ws: Any, kind: str, timeout: float = 5.0) -> dict[str, Any]:
    """The next text message of type `kind` (stats and other kinds on the way are skipped);
    every message is checked against docs/protocol.schema.json on the way."""
    async with asyncio.timeout(timeout):
        while True:
            msg = await ws.receive()
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING):
                raise AssertionError(f"closed while waiting for {kind}: {msg.extra}")
            check_server_message(msg.data)
            if msg.type == WSMsgType.BINARY:
                if kind == "binary":
                    return {"type": "binary", "data": msg.data}
                continue
            obj: dict[str, Any] = orjson.loads(msg.data)
            if obj["type"] == kind:
                return obj


async def hello(ws: Any, **options: Any) -> dict[str, Any]:
    await ws.send_str(orjson.dumps({"type": "hello", "protocol": 1, **options}).decode())
    return await receive(ws, "ready")


async def test_health_ready_and_metrics(app: tuple[TestClient[Any, Any], Core]) -> None:
    client, _ = app
    assert (await client.get("/healthz")).status == 200
    ready = await (await client.get("/readyz")).json()
    assert ready["ready"] and [w["alive"] for w in ready["workers"]] == [True, True]
    metrics = await (await client.get("/metrics")).text()
    assert "holistream_capacity_sessions" in metrics


async def test_landmarker_counts_answer_concurrent_requests(
    app: tuple[TestClient[Any, Any], Core],
) -> None:
    """Info replies are matched by request number: many /readyz?landmarkers at once all get
    their counts (no lock serialises them)."""
    client, _ = app
    async with client.ws_connect("/ws") as ws:
        await hello(ws, parts=["face"])
        bodies = await asyncio.gather(
            *(client.get("/readyz?landmarkers=1") for _ in range(5))
        )
        counts = [sorted(w["landmarkers"] for w in (await b.json())["workers"]) for b in bodies]
    assert counts == [[0, 1]] * 5


async def refused_before_upgrade(
    app: tuple[TestClient[Any, Any], Core], path: str
) -> dict[str, Any]:
    """GET `path`: a documented HTTP 400 error, and no session taken; returns its body."""
    client, core = app
    resp = await client.get(path)
    assert resp.status == 400
    check_http_error(await resp.read())
    body: dict[str, Any] = await resp.json()
    assert core.admission.sessions == 0
    return body


@pytest.mark.parametrize("fps", ["nan", "-1e6", "1e400", "inf", "0", "241", "15fps", "1_0"])
async def test_bad_fps_in_the_query_is_refused_before_the_upgrade(
    app: tuple[TestClient[Any, Any], Core], fps: str
) -> None:
    body = await refused_before_upgrade(app, f"/ws?fps={fps}")
    assert body["error"]["code"] == "bad_request" and "fps" in body["error"]["message"]


@pytest.mark.parametrize("query", ["parts=feet", "parts=", "model=huge", "fps="])
async def test_bad_producer_query_is_refused_like_a_bad_hello(
    app: tuple[TestClient[Any, Any], Core], query: str
) -> None:
    body = await refused_before_upgrade(app, f"/ws?{query}")
    assert body["error"]["code"] == "bad_request"


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/ws?stream=bad%20name", "stream names are 1-64 characters of A-Z a-z 0-9 . _ -"),
        ("/ws/subscribe?stream=bad%20name", "a valid ?stream=NAME is required"),
        ("/ws/subscribe", "a valid ?stream=NAME is required"),
    ],
)
async def test_a_bad_stream_name_is_refused_before_the_upgrade(
    app: tuple[TestClient[Any, Any], Core], path: str, message: str
) -> None:
    body = await refused_before_upgrade(app, path)
    assert body["error"] == {"code": "bad_request", "message": message}


async def test_a_frame_becomes_a_result_with_the_asked_parts(
    app: tuple[TestClient[Any, Any], Core],
) -> None:
    client, core = app
    async with client.ws_connect("/ws?parts=face&fps=30") as ws:
        ready = await hello(ws, parts=["face"], world=False, fps=30)
        assert ready["pipeline"] == "face"
        await ws.send_bytes(protocol.encode_frame(7, 1000.0, JPEG))
        result = await receive(ws, "result")
        assert (result["frame"], result["width"], result["height"]) == (7, WIDTH, HEIGHT)
        assert result["pipeline"] == "face" and len(result["face"]) == 478 * 3
        assert "pose" not in result
        await ws.send_bytes(protocol.encode_frame(8, 1033.0, b"bad"))
        error = await receive(ws, "error")
        assert (error["code"], error["frame"]) == ("undecodable", 8)
        stats = await receive(ws, "stats")
        assert stats["received"] == 2 and stats["errors"] == 1
    frames = [msg for _, msg in fake(core).sent if type(msg).__name__ == "Frame"]
    assert [f.mp_ts for f in frames] == [0, 33]  # the pool's clock, from the client's ts


async def test_binary_results_carry_the_rig(app: tuple[TestClient[Any, Any], Core]) -> None:
    client, _ = app
    async with client.ws_connect("/ws") as ws:
        await hello(ws, format="binary", rig=True)
        await ws.send_bytes(protocol.encode_frame(1, 0.0, JPEG))
        data = (await receive(ws, "binary"))["data"]
    result = protocol.decode_result_binary(data)
    assert result.frame == 1 and result.rig_arrays is not None
    assert result.rig_arrays.bones.shape[1] == 4


async def test_configure_switches_pipeline_and_worker_record(
    app: tuple[TestClient[Any, Any], Core],
) -> None:
    client, core = app
    async with client.ws_connect("/ws") as ws:
        ready = await hello(ws, parts=["face"])
        await ws.send_str('{"type": "configure", "parts": ["face", "pose"]}')
        configured = await receive(ws, "configured")
        assert configured["pipeline"] == "holistic" and configured["switches"] == 1
        session = core.sessions[ready["session"]]
        assert core.pool.worker_of(session) == core.admission.worker_of(session.id)
        await ws.send_str('{"type": "configure", "fps": 500}')
        error = await receive(ws, "error")
        assert error["code"] == "bad_configure"


async def test_subscriber_gets_the_producers_results(
    app: tuple[TestClient[Any, Any], Core],
) -> None:
    client, _ = app
    async with client.ws_connect("/ws?stream=cam") as producer:
        await hello(producer, parts=["pose"])
        async with client.ws_connect("/ws/subscribe?stream=cam") as sub:
            await hello(sub)
            await receive(sub, "stream_started")
            await producer.send_bytes(protocol.encode_frame(3, 0.0, JPEG))
            mine = await receive(producer, "result")
            theirs = await receive(sub, "result")
            assert theirs == mine
            listed = await (await client.get("/streams")).json()
            assert [s["name"] for s in listed["streams"]] == ["cam"]
        await producer.close()


async def test_a_dead_worker_is_replaced_and_its_sessions_warned(
    app: tuple[TestClient[Any, Any], Core],
) -> None:
    client, core = app
    pool = fake(core)
    async with client.ws_connect("/ws") as ws:
        ready = await hello(ws, parts=["hands"])
        session = core.sessions[ready["session"]]
        index = pool.worker_of(session)
        assert index is not None
        pool.hold = True
        await ws.send_bytes(protocol.encode_frame(1, 0.0, JPEG))
        await asyncio.sleep(0.05)
        await pool.kill(index)
        warning = await receive(ws, "warning")
        assert warning["code"] == "worker_restarted"
        pool.release()
        await ws.send_bytes(protocol.encode_frame(2, 100.0, JPEG))
        assert (await receive(ws, "result"))["frame"] == 2
        stats = await receive(ws, "stats")
        assert stats["dropped"]["worker_lost"] == 1
    assert core.pool.restarts == 1


async def test_predict_returns_the_workers_landmarks(
    app: tuple[TestClient[Any, Any], Core],
) -> None:
    client, _ = app
    resp = await client.post("/v1/predict?parts=face", data=JPEG,
                             headers={"Content-Type": "image/jpeg"})
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["width"] == WIDTH and len(body["face"]) == 478 * 3
    bad = await client.post("/v1/predict?parts=feet", data=JPEG,
                            headers={"Content-Type": "image/jpeg"})
    assert bad.status == 400


async def test_a_rig_only_configure_changes_the_rig_in_place(
    app: tuple[TestClient[Any, Any], Core],
) -> None:
    """Legs or a re-centre: the same landmarker and worker, the rig's options sent as SetRig."""
    client, core = app
    pool = fake(core)
    async with client.ws_connect("/ws") as ws:
        ready = await hello(ws, rig=True)
        session = core.sessions[ready["session"]]
        opens = sum(isinstance(msg, m.Open) for _, msg in pool.sent)
        await ws.send_str('{"type": "configure", "rig": {"legs": "seated"}}')
        configured = await receive(ws, "configured")
        assert configured["switches"] == 0 and session.switches == 0
        assert sum(isinstance(msg, m.Open) for _, msg in pool.sent) == opens
        rigs = [msg.rig for _, msg in pool.sent if isinstance(msg, m.SetRig)]
        assert rigs and rigs[-1] is not None and rigs[-1].legs == "seated"
