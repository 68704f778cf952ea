"""The single-image API's pure parts: options, body types, header probe, admission, cache,
response bodies, and the clean-landmarker stock (with stand-in detectors, no MediaPipe)."""

from __future__ import annotations

import logging
import socket
import struct
import threading
import time
import zlib
from typing import Any

import numpy as np
import orjson
import pytest

from holistream import protocol
from server.predict.cache import MemoryCache, NoCache, RedisCache, _safe_url, make_cache
from server.predict.policy import (
    RequestError,
    StartEstimator,
    body_kind,
    cache_key,
    image_error,
    landmark_body,
    parse_options,
    probe,
    response_body,
)
from server.predict.worker import CleanStock, ImagePredictor
from server.workers.imaging import ImageError
from tests.conftest import media

LIMITS = {"max_pixels": 4096 * 4096, "max_side": 8192}


def png_header(width: int, height: int) -> bytes:
    """A valid PNG that declares width × height and carries almost no pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0"))


def refused(fn: Any, *args: Any, **kwargs: Any) -> RequestError:
    with pytest.raises(RequestError) as info:
        fn(*args, **kwargs)
    return info.value


# ----------------------------------------------------------------------------- options


def test_options_default_to_everything_and_pick_the_cheapest_pipeline() -> None:
    opts = parse_options({})
    assert opts.pipeline == "holistic" and opts.world
    assert opts.wanted == protocol.PART_NAMES
    pose = parse_options({"parts": "pose", "world": "false"})
    assert (pose.pipeline, pose.wanted) == ("pose", ("pose",))
    both = parse_options({"parts": "hands,face", "world": "0"})
    assert both.pipeline == "holistic" and both.parts == ("face", "hands")
    assert both.wanted == ("face", "left_hand", "right_hand")


@pytest.mark.parametrize("query", [{"parts": "tail"}, {"parts": ""}, {"world": "maybe"}])
def test_bad_options_are_400(query: dict[str, str]) -> None:
    err = refused(parse_options, query)
    assert (err.status, err.code) == (400, "bad_request")


def test_body_types() -> None:
    assert body_kind("multipart/form-data") == "multipart"
    for raw in ("image/jpeg", "image/png", "image/webp", "application/octet-stream"):
        assert body_kind(raw) == "raw"
    for bad in ("text/plain", "application/json", "image/gif", "application/x-www-form-urlencoded"):
        assert refused(body_kind, bad).status == 415


# ----------------------------------------------------------------------------- probe


def test_probe_reads_the_header_only() -> None:
    assert probe(media("messi5.jpg").read_bytes(), **LIMITS) == ("jpeg", 548, 342)
    assert probe(media("astronaut.png").read_bytes(), **LIMITS)[0] == "png"


def test_probe_statuses() -> None:
    jpeg = media("messi5.jpg").read_bytes()
    assert (refused(probe, b"", **LIMITS).status, refused(probe, b"", **LIMITS).code) == (
        400,
        "no_image",
    )
    gif = refused(probe, b"GIF89a" + bytes(64), **LIMITS)
    assert (gif.status, gif.code) == (415, "unsupported_image")
    bomb = refused(probe, png_header(20000, 20000), **LIMITS)
    assert (bomb.status, bomb.code) == (413, "image_too_large")
    wide = refused(probe, png_header(9000, 10), **LIMITS)  # few pixels, one side too long
    assert (wide.status, wide.code) == (413, "image_too_large")
    cut = refused(probe, jpeg[:40], **LIMITS)  # the header itself is cut off
    assert (cut.status, cut.code) == (422, "undecodable")
    assert image_error("undecodable", "x").status == 422
    assert image_error("image_too_large", "x").status == 413
    assert image_error("something_new", "x").status == 422


# ----------------------------------------------------------------------------- admission


def test_estimator_admits_refuses_and_learns() -> None:
    est = StartEstimator(prior_s=0.2)
    kw = {"workers": 2, "queue_limit": 4, "timeout_s": 10.0, "retry_cap_s": 5}
    assert est.decide(backlog=0, **kw).admitted
    full = est.decide(backlog=4, **kw)
    assert not full.admitted and 1 <= full.retry_after_s <= 5
    assert not est.decide(backlog=0, workers=0, queue_limit=4, timeout_s=10, retry_cap_s=5).admitted
    for _ in range(50):  # jobs that took 3 s alone: a second one in the queue cannot make 5 s
        est.observe(3.0, ahead=0, workers=2)
    assert est.unit_s == pytest.approx(3.0, rel=0.01)
    late = est.decide(backlog=2, workers=2, queue_limit=8, timeout_s=5.0, retry_cap_s=5)
    assert not late.admitted and "in time" in late.reason and late.retry_after_s == 3
    assert est.decide(backlog=0, workers=2, queue_limit=8, timeout_s=5.0, retry_cap_s=5).admitted


def test_estimator_normalises_by_queue_position() -> None:
    est = StartEstimator(prior_s=1.0, weight=1.0)
    est.observe(4.0, ahead=6, workers=2)  # 3 jobs ahead on each worker, then its own: 4 units
    assert est.unit_s == pytest.approx(1.0)
    assert est.expected_s(ahead=2, workers=2) == pytest.approx(2.0)


# ----------------------------------------------------------------------------- cache keys


def test_cache_key_covers_image_options_and_model() -> None:
    data = b"\xff\xd8\xff" + bytes(100)
    base = cache_key(data, parse_options({}), "m1")
    assert base == cache_key(data, parse_options({"parts": "pose,hands,face"}), "m1")
    others = {
        cache_key(data + b"x", parse_options({}), "m1"),
        cache_key(data, parse_options({"world": "false"}), "m1"),
        cache_key(data, parse_options({"parts": "pose"}), "m1"),
        cache_key(data, parse_options({}), "m2"),
        cache_key(data, parse_options({"mode": "exact"}), "m1"),
    }
    assert base not in others and len(others) == 5
    assert base == cache_key(data, parse_options({"mode": "fast"}), "m1")


def test_mode_is_fast_unless_exact_is_asked_for() -> None:
    assert parse_options({}).mode == "fast" and not parse_options({}).exact
    exact = parse_options({"mode": "EXACT", "parts": "pose"})
    assert exact.mode == "exact" and exact.exact and exact.pipeline == "pose"
    for bad in ("", "slow", "fresh"):
        err = refused(parse_options, {"mode": bad})
        assert (err.status, err.code) == (400, "bad_request") and "mode" in err.message


# ----------------------------------------------------------------------------- bodies


def test_response_body_is_a_result_without_seq_ts_dropped() -> None:
    rng = np.random.default_rng(1)
    parts = {
        "pose": protocol.round_landmarks(rng.random((33, 5))),
        "face": None,
    }
    stored = landmark_body(640, 480, "holistic", parts, "exact")
    timing = protocol.Timing(1.0, 2.0, 3.0, 6.5)
    body = orjson.loads(response_body(stored, timing, "miss"))
    assert {"seq", "ts", "dropped"}.isdisjoint(body)
    assert body["type"] == "result" and body["cache"] == "miss" and body["mode"] == "exact"
    assert body["timing"] == timing.to_json() and body["face"] is None
    decoded = protocol.decode_result_json(body)
    assert np.array_equal(decoded.parts["pose"], parts["pose"])
    assert (decoded.width, decoded.height, decoded.pipeline) == (640, 480, "holistic")
    with pytest.raises(ValueError):
        response_body(b"{}", timing, "hit")


# ----------------------------------------------------------------------------- caches


async def test_memory_cache_is_a_bounded_lru() -> None:
    cache = MemoryCache(2)
    await cache.put("a", b"1")
    await cache.put("b", b"2")
    assert await cache.get("a") == b"1"  # a is now the most recent
    await cache.put("c", b"3")
    assert await cache.get("b") is None and await cache.get("a") == b"1"
    assert len(cache) == 2
    assert isinstance(make_cache(None, 0), NoCache)
    assert isinstance(make_cache("redis://127.0.0.1:1/0", 0), NoCache)
    assert isinstance(make_cache(None, 5), MemoryCache)
    off = NoCache()
    await off.put("a", b"1")
    assert await off.get("a") is None


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_dead_redis_is_a_miss_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    cache = RedisCache(
        f"redis://:secret@127.0.0.1:{_closed_port()}/0", retry_s=10, clock=lambda: now[0]
    )
    caplog.set_level(logging.INFO, "holistream.predict")
    t0 = time.perf_counter()
    assert await cache.get("k") is None
    await cache.put("k", b"v")  # skipped: within the retry window
    now[0] += 11
    assert await cache.get("k") is None  # tried again, still down: no second warning
    assert time.perf_counter() - t0 < 5
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "secret" not in warnings[0].getMessage()
    assert not cache.available
    await cache.close()
    assert _safe_url("redis://u:p@h:1/0") == "redis://***@h:1/0"


# ----------------------------------------------------------------------------- clean stock


class FakeDetector:
    """Finds a 'pose' in any image that is not all zeros; remembers whether it ever did."""

    def __init__(self, log: list[FakeDetector]) -> None:
        self.spent = False
        self.closed = False
        self.uses = 0
        log.append(self)

    def detect(self, rgb: np.ndarray, ts: int | None) -> dict[str, Any]:
        assert not self.closed and not self.spent, "a spent landmarker was used again"
        self.uses += 1
        if rgb.max() == 0:
            return {"pose": None}
        if rgb.max() == 255:
            raise RuntimeError("native failure")
        self.spent = True
        return {"pose": np.ones((33, 5), np.float32)}

    def close(self) -> None:
        self.closed = True


def make_predictor(created: list[FakeDetector],
                   composite: list[FakeDetector] | None = None) -> ImagePredictor:
    models = {name: media("messi5.jpg") for name in ("holistic", "pose")}
    return ImagePredictor(
        models,  # type: ignore[arg-type]
        lambda data: np.full((4, 4, 3), data[0], np.uint8),
        factory=lambda pipeline: FakeDetector(created),
        composite=None if composite is None else (lambda: StatelessDetector(composite)),
    )


class StatelessDetector(FakeDetector):
    """Like a composite holistic detector: keeps no state, so it may be used again."""

    def detect(self, rgb: np.ndarray, ts: int | None,
               wanted: tuple[str, ...] = ()) -> dict[str, Any]:
        self.uses += 1
        return {"pose": None if rgb.max() == 0 else np.ones((33, 5), np.float32)}


def test_default_holistic_path_reuses_one_composite_and_exact_takes_a_clean_landmarker() -> None:
    created: list[FakeDetector] = []
    composites: list[FakeDetector] = []
    predictor = make_predictor(created, composites)
    for value in (1, 0, 1, 1):
        _, _, parts, _, _ = predictor.predict("holistic", ("pose",), bytes([value]))
        assert (parts["pose"] is not None) == (value == 1)
    assert len(composites) == 1 and composites[0].uses == 4
    assert created == []  # no holistic landmarker was built for the default path
    _, _, parts, _, _ = predictor.predict("holistic", ("pose",), b"\x01", exact=True)
    assert parts["pose"] is not None and any(d.spent for d in created)
    assert composites[0].uses == 4
    predictor.close()
    assert composites[0].closed


def test_default_holistic_path_without_its_models_is_unavailable() -> None:
    predictor = make_predictor([])  # holistic and pose only: no face model
    with pytest.raises(ImageError) as info:
        predictor.predict("holistic", ("pose",), b"\x01")
    assert info.value.code == "pipeline_unavailable" and "mode=exact" in info.value.message
    predictor.close()


def test_holistic_landmarkers_are_one_shot_unless_they_found_nothing() -> None:
    created: list[FakeDetector] = []
    predictor = make_predictor(created)
    for value in (1, 0, 0, 1, 1, 0, 1):
        width, height, parts, _, _ = predictor.predict(
            "holistic", ("pose", "face"), bytes([value]), exact=True
        )
        assert (width, height) == (4, 4) and set(parts) == {"pose", "face"}
        assert (parts["pose"] is not None) == (value == 1)
    deadline = time.monotonic() + 5  # the refill thread restocks and closes the spent ones
    while time.monotonic() < deadline and (
        all(d.spent for d in created) or not all(d.closed for d in created if d.spent)
    ):
        time.sleep(0.01)
    spent = [d for d in created if d.spent]
    assert len(spent) == 4 and all(d.closed for d in spent)
    # Four pose images spent four landmarkers; the empty ones reused clean ones (one landmarker
    # per request would be 7, plus the spare).
    assert 5 <= len(created) <= 6
    predictor.close()
    assert all(d.closed for d in created)


def test_stateless_pipelines_reuse_one_landmarker_and_failures_are_reported() -> None:
    created: list[FakeDetector] = []
    predictor = make_predictor(created)
    with pytest.raises(ImageError) as info:
        predictor.predict("face", ("face",), b"\x01")
    assert info.value.code == "pipeline_unavailable"
    with pytest.raises(ImageError) as info:
        predictor.predict("holistic", ("pose",), b"\xff", exact=True)
    assert info.value.code == "internal" and "native failure" in info.value.message
    before = len(created)
    for _ in range(3):
        predictor.predict("pose", ("pose",), b"\x00")
    assert len(created) == before + 1
    predictor.close()


def test_stock_take_waits_for_the_one_being_built() -> None:
    gate = threading.Event()
    built: list[FakeDetector] = []

    def slow() -> FakeDetector:
        gate.wait(5)
        return FakeDetector(built)

    stock = CleanStock(slow, size=1)
    time.sleep(0.05)  # the refill thread is now blocked building
    threading.Timer(0.2, gate.set).start()
    t0 = time.perf_counter()
    first = stock.take(timeout=5)
    assert 0.1 < time.perf_counter() - t0 < 4 and len(built) == 1 and first.uses == 0
    stock.give_back(first)
    assert stock.take(timeout=5) is first
    stock.close()
    assert all(d.closed for d in built if d is not first)
