"""Fast unit tests of the pure core: codec, frame slot, scheduler, admission, outbox, security."""

from __future__ import annotations

import io
import math

import numpy as np
import orjson
import pytest
from PIL import Image

from holistream import protocol
from holistream.protocol import ProtocolError
from server.http.security import client_address, origin_allowed, token_ok
from server.sessions.admission import AdmissionPolicy, Budget, PipelineCost
from server.sessions.frame_slot import FrameSlot, Pending
from server.sessions.outbox import Outbox
from server.sessions.session import FramePayload, Session
from server.workers.clock import MediaPipeClock
from server.workers.imaging import ImageError, decode_rgb
from server.workers.scheduler import FairScheduler

# ------------------------------------------------------------------------------------- codec


def test_frame_roundtrip_and_refusals() -> None:
    data = protocol.encode_frame(7, 1234.5, b"\xff\xd8\xffimage")
    frame = protocol.decode_frame(data)
    assert (frame.frame_id, frame.ts, frame.image) == (7, 1234.5, b"\xff\xd8\xffimage")
    with pytest.raises(ProtocolError) as short:
        protocol.decode_frame(b"HSF1")
    assert short.value.code == "bad_frame"
    with pytest.raises(ProtocolError) as magic:
        protocol.decode_frame(b"XXXX" + data[4:])
    assert magic.value.code == "bad_frame"
    with pytest.raises(ProtocolError) as nan:
        protocol.decode_frame(protocol.encode_frame(3, math.nan, b""))
    assert (nan.value.code, nan.value.frame) == ("bad_timestamp", 3)


def test_hello_validation() -> None:
    hello = protocol.parse_hello({"type": "hello", "protocol": 1, "parts": ["pose", "face"]})
    assert hello.parts == ("face", "pose") and hello.format == "json"
    assert protocol.pipeline_for(("face",)) == "face"
    assert protocol.pipeline_for(("face", "pose")) == "holistic"
    cases = [
        ({"protocol": 2}, "unsupported_protocol"),
        ({"protocol": 1, "parts": ["feet"]}, "bad_hello"),
        ({"protocol": 1, "parts": []}, "bad_hello"),
        ({"protocol": 1, "format": "xml"}, "bad_hello"),
        ({"protocol": 1, "fps": 0}, "bad_hello"),
        ({"protocol": 1, "rig": "yes"}, "bad_hello"),
    ]
    for msg, code in cases:
        with pytest.raises(ProtocolError) as exc:
            protocol.parse_hello(msg)
        assert exc.value.code == code, msg


def test_fps_has_one_validator_for_hello_numbers_and_query_text() -> None:
    for good, value in ((15, 15.0), (240, 240.0), (0.5, 0.5), ("30", 30.0), ("7.5", 7.5),
                        ("1e2", 100.0)):
        assert protocol.parse_fps(good, code="bad_request") == value
    bad: list[object] = [0, -1, 240.01, math.nan, math.inf, True, None, "15fps", "nan", "inf",
                         "-1e6", "1e400", "0x10", "1_0", "", [15]]
    for value in bad:
        with pytest.raises(ProtocolError) as exc:
            protocol.parse_fps(value, code="bad_request")
        assert exc.value.code == "bad_request", value
    assert protocol.parse_hello({"protocol": 1}).fps == protocol.DEFAULT_FPS
    with pytest.raises(ProtocolError):
        protocol.parse_hello({"protocol": 1, "fps": math.nan})


def test_parse_message_refuses_non_objects() -> None:
    for text in ("not json", "[1,2]", '{"no_type": 1}', '{"type": 5}'):
        with pytest.raises(ProtocolError) as exc:
            protocol.parse_message(text)
        assert exc.value.code == "bad_message"


def _sample_result() -> protocol.Result:
    rng = np.random.default_rng(0)
    parts = {
        name: protocol.round_landmarks(rng.random((protocol.PART_POINTS[name],
                                                    protocol.PART_STRIDES[name])))
        for name in protocol.PART_NAMES
    }
    parts["left_hand"] = None
    return protocol.Result(5, 4, 99.5, 2, 640, 480, "holistic", parts,
                           protocol.Timing(1.0, 2.0, 30.0, 33.0))


def test_binary_and_json_results_carry_the_same_values() -> None:
    result = _sample_result()
    as_json = protocol.decode_result_json(orjson.loads(protocol.encode_result_json(result)))
    binary = protocol.encode_result_binary(result)
    as_bin = protocol.decode_result_binary(binary)
    assert (as_bin.frame, as_bin.seq, as_bin.ts, as_bin.dropped) == (5, 4, 99.5, 2)
    assert as_json.parts["left_hand"] is None and "left_hand" not in as_bin.parts
    for name, arr in result.parts.items():
        if arr is None:
            continue
        np.testing.assert_array_equal(as_bin.parts[name], arr)
        np.testing.assert_allclose(as_json.parts[name], arr, atol=0, rtol=0)
    assert len(binary) < 0.6 * len(protocol.encode_result_json(result))  # float32: 4 B a value


def test_wire_parts_follow_options() -> None:
    assert protocol.wire_parts(("face",), True) == ("face",)
    assert protocol.wire_parts(("hands", "pose"), False) == ("pose", "left_hand", "right_hand")


# ------------------------------------------------------------------------------- frame slot


def test_slot_latest_frame_wins_and_books_balance() -> None:
    slot: FrameSlot[int] = FrameSlot()
    slot.offer(Pending(1, 0.0, 1))
    slot.offer(Pending(2, 0.0, 2))  # supersedes 1
    taken = slot.take(0.01, 0.5)
    assert taken is not None and taken.frame_id == 2
    slot.offer(Pending(3, 0.02, 3))
    assert slot.take(0.03, 0.5) is None  # one in flight at most
    assert slot.finish(2) is not None
    assert slot.take(1.0, 0.5) is None  # frame 3 went stale
    assert dict(slot.dropped) == {"superseded": 1, "stale": 1}
    assert slot.take_unreported() == 2 and slot.take_unreported() == 0
    assert slot.received == slot.processed + slot.dropped_total


def test_slot_clear_counts_everything_held() -> None:
    slot: FrameSlot[int] = FrameSlot()
    slot.offer(Pending(1, 0.0, 1))
    slot.take(0.0, 1.0)
    slot.offer(Pending(2, 0.0, 2))
    assert slot.clear("closing") == 2
    assert slot.dropped["closing"] == 2 and slot.received == slot.dropped_total


# -------------------------------------------------------------------------------- scheduler


def test_scheduler_is_round_robin_and_idempotent() -> None:
    sched: FairScheduler[str] = FairScheduler()
    for key in "abca":
        sched.ready(key)
    assert len(sched) == 3
    order = [sched.next() for _ in range(3)]
    assert order == ["a", "b", "c"] and sched.next() is None
    sched.ready("x")
    sched.ready("y")
    sched.remove("x")
    assert sched.next() == "y"


# -------------------------------------------------------------------------------- admission


def test_admission_grants_rates_from_costs() -> None:
    costs = {
        "holistic": PipelineCost(40.0, 140 << 20, 1.3),
        "face": PipelineCost(5.0, 30 << 20, 1.0),
    }
    budget = Budget(cores=2, memory_bytes=4 << 30, max_sessions=100, workers=3, floor_fps=10)
    policy = AdmissionPolicy(budget, costs)
    # Refused only when the floor (10 fps) cannot be granted. The box would hold five floors
    # (2000 ms/s / (10 × 40 ms)), but a fourth session shares a worker, and two sessions' floors
    # (800 ms/s) do not fit in that worker's equal part of the box (2000 / 3).
    assert policy.capacity("holistic", 15) == 3
    assert policy.capacity("holistic", 5) == 9  # its own floor (5): 3 per worker (600 ≤ 667)
    assert policy.capacity_fps("holistic") == pytest.approx(50.0)
    assert policy.capacity("face", 15) == 39  # 13 per worker (650 ≤ 667); the box alone: 40
    lone = policy.admit("a", "holistic", 30)
    assert lone.admitted and lone.grant == pytest.approx(30.0)  # not a third of the box
    placed = [policy.admit(i, "holistic", 30) for i in range(2)]
    assert all(d.admitted for d in placed)
    assert len({policy.worker_of(i) for i in range(2)} | {policy.worker_of("a")}) == 3
    grants = policy.regrant()
    assert sum(grants.values()) == pytest.approx(50.0)
    assert min(grants.values()) >= 10.0
    refused = policy.admit(99, "holistic", 15)
    assert not refused.admitted and "CPU" in refused.reason
    face = policy.admit(98, "face", 5)  # 5 fps × 5 ms fits beside a holistic floor (425 ≤ 667)
    assert face.admitted
    assert not policy.admit(97, "face", 15).admitted or policy.worker_of(97) != face.worker
    policy.release(0)
    assert policy.admit(99, "holistic", 15).admitted  # a worker of its own again


def test_admission_measured_cost_moves_grants_and_capacity() -> None:
    costs = {"holistic": PipelineCost(40.0, 140 << 20, 1.3)}
    policy = AdmissionPolicy(Budget(cores=2, memory_bytes=4 << 30, max_sessions=100, workers=3),
                             costs)
    start = policy.capacity("holistic")
    assert start == 3
    for i in range(3):
        assert policy.admit(i, "holistic", 30).admitted
    assert not policy.admit(3, "holistic", 30).admitted
    for _ in range(200):  # cheaper content than the calibration image: 20 ms per frame
        for i in range(3):
            policy.observe(i, 20.0)
    assert policy.cost_of(0) == pytest.approx(20.0, rel=0.01)
    assert sum(policy.regrant().values()) > 70  # 3 × 30 asked; the workers' time binds
    assert policy.capacity("holistic") > start
    assert policy.admit(3, "holistic", 30).admitted  # more sessions than the start-up figure


def test_admission_memory_and_count_caps() -> None:
    costs = {"holistic": PipelineCost(1.0, 100 << 20)}
    policy = AdmissionPolicy(Budget(cores=8, memory_bytes=250 << 20, max_sessions=10), costs)
    assert policy.admit("a", "holistic", 1).admitted
    assert policy.admit("b", "holistic", 1).admitted
    assert "memory" in policy.admit("c", "holistic", 1).reason
    policy.release("a")
    policy.reserved_bytes = 100 << 20  # e.g. the single-image landmarkers
    assert "memory" in policy.admit("c", "holistic", 1).reason
    capped = AdmissionPolicy(Budget(cores=8, memory_bytes=1 << 40, max_sessions=1), costs)
    assert capped.admit("a", "holistic", 1).admitted
    assert "limit" in capped.admit("b", "holistic", 1).reason
    assert capped.admit("a", "holistic", 2).admitted  # changing its own admission fits


# ----------------------------------------------------------------------------------- outbox


def test_outbox_keeps_latest_result_and_bounds_control() -> None:
    box: Outbox[int] = Outbox(max_control=2)
    assert box.put_result(1) is None
    assert box.put_result(2) == 1
    assert box.put_control("a") and box.put_control("b") and not box.put_control("c")
    assert [box.pop(), box.pop(), box.pop(), box.pop()] == ["a", "b", 2, None]
    assert box.control_dropped == 1


def test_session_carries_backpressure_drops_into_next_result() -> None:
    session = Session(peer="test", stream=None)
    session.configure(protocol.Hello(parts=("face",)))
    for frame_id in (1, 2):
        session.offer(frame_id, FramePayload(float(frame_id), b""), 0.0)
        pending = session.slot.take(0.0, 10.0)
        assert pending is not None and session.slot.finish(frame_id) is not None
        session.deliver(pending, 1, 1, {"face": None}, 0.0, 0.0, None, 0.0)
    sent = session.outbox.pop()
    assert sent is not None and not isinstance(sent, str)
    assert sent.result.frame == 2 and sent.result.dropped == 1  # frame 1's result was lost
    assert session.slot.dropped["backpressure"] == 1


def test_mp_timestamps_strictly_increase_whatever_the_client_sends() -> None:
    clock = MediaPipeClock()
    stamps = [clock.stamp(ts) for ts in (1000.0, 1033.3, 1033.3, 900.0, 1100.0)]
    assert stamps == [0, 33, 34, 35, 100]
    # Leaps count as MAX_MP_STEP_MS and re-anchor; nothing a client sends leaves int64 range.
    leaps = [clock.stamp(ts) for ts in (1e16, 1e16 + 40, 1e300, -1e300, -1.7e308, 3.0)]
    assert leaps == [5100, 5140, 10140, 10141, 10142, 10143]


# --------------------------------------------------------------------------------- security


def test_origin_rules() -> None:
    assert origin_allowed(None, "h:8000", [])
    assert origin_allowed("http://localhost:3000", "h:8000", [])
    assert origin_allowed("http://[::1]:3000", "h:8000", [])
    # A name is never trusted through Host (DNS rebinding makes them agree); an IP can't rebind.
    assert not origin_allowed("https://h:8000", "h:8000", [])
    assert not origin_allowed("http://evil.example:8000", "evil.example:8000", [])
    assert origin_allowed("https://192.168.1.20:8443", "192.168.1.20:8443", [])
    assert origin_allowed("http://[fd00::1]:8000", "[fd00::1]:8000", [])
    assert not origin_allowed("https://192.168.1.20:8443", "192.168.1.21:8443", [])
    assert origin_allowed("https://h:8000", "h:8000", ["https://h:8000"])
    assert not origin_allowed("https://evil.example", "h:8000", [])
    assert origin_allowed("https://app.example", "h:8000", ["https://app.example"])
    assert not origin_allowed("null", "h:8000", [])


def test_token_and_forwarded_address() -> None:
    assert token_ok(None, {}, {})
    assert token_ok("s3", {"Authorization": "Bearer s3"}, {})
    assert token_ok("s3", {}, {"token": "s3"})
    assert not token_ok("s3", {"Authorization": "Bearer nope"}, {})
    assert client_address("10.0.0.1", "1.2.3.4", ["10.0.0.1"]) == "1.2.3.4"
    assert client_address("10.0.0.9", "1.2.3.4", ["10.0.0.1"]) == "10.0.0.9"  # untrusted peer
    assert client_address("10.0.0.1", "6.6.6.6, 1.2.3.4, 10.0.0.2", ["10.0.0.1", "10.0.0.2"]) == (
        "1.2.3.4"
    )
    assert client_address("10.1.2.3", "1.2.3.4, 10.9.9.9", ["10.0.0.0/8"]) == "1.2.3.4"


# ---------------------------------------------------------------------------------- imaging


def _png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (width, height)).save(buf, "PNG")
    return buf.getvalue()


def test_imaging_refusals() -> None:
    rgb = decode_rgb(_png(8, 4), max_pixels=1000, max_side=100)
    assert rgb.shape == (4, 8, 3) and rgb.dtype == np.uint8
    cases = [
        (b"GIF89a....", "unsupported_image"),
        (_png(200, 200), "image_too_large"),
        (_png(8, 4)[:40], "undecodable"),
    ]
    for data, code in cases:
        with pytest.raises(ImageError) as exc:
            decode_rgb(data, max_pixels=1000, max_side=100)
        assert exc.value.code == code


def test_address_limits_bucket_cap_and_exemption() -> None:
    from server.http.rate_limit import AddressLimits

    limits = AddressLimits(rate=1.0, burst=2, max_sessions=1, exempt=["127.0.0.0/8"])
    assert limits.check("10.0.0.5", 0.0) is None
    assert limits.check("10.0.0.5", 0.0) is None
    refused = limits.check("10.0.0.5", 0.1)
    assert refused is not None and refused[1] == pytest.approx(0.9)
    assert limits.check("10.0.0.5", 1.2) is None  # refilled
    limits.opened("10.0.0.6")
    assert "sessions" in (limits.check("10.0.0.6", 5.0) or ("", 0))[0]
    limits.closed("10.0.0.6")
    assert limits.check("10.0.0.6", 5.0) is None
    for _ in range(10):
        assert limits.check("127.0.0.1", 0.0) is None
