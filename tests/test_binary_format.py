"""Binary results carry exactly what JSON carries, for any value (property tests), and
docs/protocol.md's byte tables are the code's (holistream.binary)."""

from __future__ import annotations

import re

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from holistream import binary, protocol
from holistream.landmarks import PART_NAMES, PART_POINTS, PART_STRIDES
from tests.protocol_schema import SCHEMA_PATH, check_server_message

DOC = SCHEMA_PATH.parent / "protocol.md"
F32_MAX = float(np.finfo(np.float32).max)

# Any finite float32 (subnormals and ±max included), with far off-screen points made likely.
values = st.one_of(
    st.floats(-F32_MAX, F32_MAX, allow_nan=False, allow_infinity=False, width=32),
    st.floats(-1e6, 1e6, allow_nan=False, width=32),
    st.sampled_from([3.2768, -3.2768, 3.47, -40.0, 1e9, F32_MAX, -F32_MAX]),
)


@st.composite
def results(draw: st.DrawFn) -> protocol.Result:
    parts: dict[str, np.ndarray | None] = {}
    for name in PART_NAMES:
        state = draw(st.sampled_from(["array", "none", "absent"]))
        if state == "array":
            shape = (PART_POINTS[name], PART_STRIDES[name])
            raw = draw(arrays(np.float32, shape, elements=values))
            parts[name] = protocol.round_landmarks(raw)  # what the worker does to every value
        elif state == "none":
            parts[name] = None
    rig = None
    if draw(st.booleans()):
        rig = protocol.RigArrays(
            draw(arrays(np.float32, (47, 4), elements=values)),
            draw(arrays(np.float32, 3, elements=values)),
            draw(arrays(np.float32, 3, elements=values)),
            draw(arrays(np.float32, 11, elements=values)),
            draw(arrays(np.float32, 8, elements=values)),
        )
    return protocol.Result(
        frame=draw(st.integers(0, 2**32 - 1)),
        seq=draw(st.integers(0, 2**32 - 1)),
        ts=draw(st.floats(allow_nan=False, allow_infinity=False)),
        dropped=draw(st.integers(0, 2**32 - 1)),
        width=draw(st.integers(1, 8192)),
        height=draw(st.integers(1, 8192)),
        pipeline=draw(st.sampled_from(protocol.PIPELINES)),
        parts=parts,
        rig_arrays=rig,
    )


@settings(max_examples=150, deadline=None)
@given(results())
def test_binary_carries_every_value_exactly_as_json_does(result: protocol.Result) -> None:
    data = protocol.encode_result_binary(result)
    check_server_message(data)  # its length is what its header announces
    got = protocol.decode_result_binary(data)
    as_json = protocol.decode_result_json(orjson.loads(protocol.encode_result_json(result)))
    assert (got.frame, got.seq, got.dropped, got.pipeline) == (
        result.frame, result.seq, result.dropped, result.pipeline,
    )  # fmt: skip
    assert got.ts == result.ts and (got.width, got.height) == (result.width, result.height)
    for name in PART_NAMES:
        sent = result.parts.get(name)
        if sent is None:
            assert got.parts.get(name) is None and as_json.parts.get(name) is None
            continue
        assert np.isfinite(sent).all()  # rounding never overflows
        # Bit for bit: nothing clips, nothing is rounded again.
        assert got.parts[name].tobytes() == sent.astype("<f4").tobytes(), name
        assert as_json.parts[name].tobytes() == got.parts[name].tobytes(), name
    if result.rig_arrays is not None:
        assert got.rig_arrays is not None
        for field in ("bones", "hips", "head", "expressions", "confidence"):
            sent_rig = getattr(result.rig_arrays, field).astype("<f4").tobytes()
            assert getattr(got.rig_arrays, field).tobytes() == sent_rig


def test_far_off_screen_points_survive_where_the_1_0_layout_clipped() -> None:
    pose = protocol.round_landmarks(np.full((33, 5), 3.47, np.float32))
    pose[30:33, 1] = [3.4712, -12.5, 1e5]
    result = protocol.Result(0, 0, 0.0, 0, 640, 480, "holistic", {"pose": pose})
    new = protocol.decode_result_binary(protocol.encode_result_binary(result))
    old = protocol.decode_result_binary(protocol.encode_result_binary_v1(result))
    np.testing.assert_array_equal(new.parts["pose"], pose)
    assert old.parts["pose"][30:33, 1].tolist() == pytest.approx([3.2767, -3.2767, 3.2767])


# ---------------------------------------------------------------------------- the doc's tables

SIZES = {"ASCII": None, "u16": 2, "u32": 4, "f32": 4, "f64": 8}
CODES = {"4s": ("ASCII", 4), "H": ("u16", 2), "I": ("u32", 4), "d": ("f64", 8), "f": ("f32", 4)}


def _table_after(heading: str) -> list[list[str]]:
    text = DOC.read_text()
    start = text.index(heading)
    rows = []
    for line in text[start:].splitlines()[1:]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not set(cells[0]) <= set("-: "):
                rows.append(cells)
        elif rows:
            break
    return rows[1:]  # without the column titles


def test_the_documented_header_is_the_encoders() -> None:
    rows = _table_after("Header (48 bytes)")
    offset, expected = 0, []
    for name, code in binary.RESULT_HEADER_FIELDS:
        kind, size = CODES[code]
        expected.append((str(offset), str(size), kind, name))
        offset += size
    documented = [(r[0], r[1], r[2], re.findall(r"`([^`]+)`", r[3])[0]) for r in rows]
    assert documented == expected
    assert offset == binary.RESULT_HEADER.size == 48


def test_the_documented_parts_are_the_encoders() -> None:
    rows = _table_after("Parts, in bit order")
    documented = [(r[0], r[1].strip("`"), r[2], r[3], r[4]) for r in rows]
    expected = []
    for bit, name in enumerate(PART_NAMES):
        count = PART_POINTS[name] * PART_STRIDES[name]
        points = f"{PART_POINTS[name]} × {PART_STRIDES[name]}"
        expected.append((str(bit), name, points, str(count * 4), str(count * 2)))
    assert documented == expected
    everything = sum(PART_POINTS[n] * PART_STRIDES[n] for n in PART_NAMES) * 4 + 48
    assert f"{everything:,} bytes" in DOC.read_text()


@pytest.mark.parametrize(
    ("said", "version", "answer", "wire"),
    [("1.1", "1.1", "1.1", "binary"), (1.1, "1.1", "1.1", "binary"),
     (1, "1.0", 1, "binary1"), ("1.0", "1.0", 1, "binary1")],
)  # fmt: skip
def test_the_hello_chooses_the_version_and_so_the_binary_layout(
    said: object, version: str, answer: object, wire: str
) -> None:
    hello = protocol.parse_hello({"type": "hello", "protocol": said, "format": "binary"})
    assert (hello.protocol, hello.protocol_answer, hello.wire_format) == (version, answer, wire)
    as_json = protocol.parse_hello({"type": "hello", "protocol": said})
    assert as_json.wire_format == "json"


@pytest.mark.parametrize("said", [None, 2, "1.2", True, [1], "1"])
def test_other_versions_and_no_version_are_unsupported(said: object) -> None:
    msg = {"type": "hello"} if said is None else {"type": "hello", "protocol": said}
    with pytest.raises(protocol.ProtocolError) as refused:
        protocol.parse_hello(msg)
    assert refused.value.code == "unsupported_protocol"
    assert ("no 'protocol'" in refused.value.message) == (said is None)


def test_the_documented_rig_block_is_the_solvers() -> None:
    from holistream.rig.skeleton import BONES, EXPRESSIONS, PARTS

    text = DOC.read_text()
    assert f"B, the bone count ({len(BONES)})" in text
    assert f"E, the expression count ({len(EXPRESSIONS)})" in text
    assert len(PARTS) == binary.RIG_CONFIDENCE_COUNT
    size = binary.RIG_HEADER.size + 4 * (len(BONES) * 4 + 3 + 3 + len(EXPRESSIONS) + len(PARTS))
    assert f"the rig block is {size} bytes" in text


def test_a_relayed_result_reaches_each_subscriber_in_its_own_layout() -> None:
    """Results cross instances as HSR2; a 1.0 binary subscriber there still gets HSR1, a JSON
    one JSON, and an HSR2 one the very bytes."""
    from server.streams.hub import StreamHub, Subscriber

    pose = protocol.round_landmarks(np.full((33, 5), 0.5, np.float32))
    pose[31, 1] = 4.25
    sent = protocol.encode_result_binary(
        protocol.Result(3, 2, 1.0, 0, 640, 480, "holistic", {"pose": pose})
    )
    hub = StreamHub()
    subs = {fmt: Subscriber("far", fmt) for fmt in ("binary", "binary1", "json")}
    for sub in subs.values():
        hub.subscribe(sub)
    hub.relay_result("far", sent, lambda: b'{"type": "result"}')
    got = {fmt: sub.pop() for fmt, sub in subs.items()}
    assert got["binary"] == (True, sent)
    assert got["json"] == (True, b'{"type": "result"}')
    legacy = got["binary1"][1]
    assert isinstance(legacy, bytes) and legacy[:4] == b"HSR1"
    assert protocol.decode_result_binary(legacy).parts["pose"][31, 1] == np.float32(3.2767)
