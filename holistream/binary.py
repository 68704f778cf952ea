"""Binary results (docs/protocol.md, "result in binary"), sans I/O.

HSR2 (protocol 1.1) carries every landmark value as a little-endian float32: bit for bit the value
the JSON result carries, whatever its size, so nothing clips. HSR1 (protocol 1.0, deprecated) is
the same layout with int16 counts of 1/10000, saturating at ±3.2767; only sessions whose hello
says protocol 1 get it. The tables below are the layout; tests check docs/protocol.md against them.
"""

from __future__ import annotations

import struct
from typing import Final

import numpy as np

from holistream.landmarks import PART_NAMES, PART_POINTS, PART_STRIDES, Array
from holistream.results import PIPELINES, ProtocolError, Result, RigArrays, Timing

# (field, struct code): the fixed header, offsets in order. The doc's table is checked against it.
RESULT_HEADER_FIELDS: Final[tuple[tuple[str, str], ...]] = (
    ("magic", "4s"),
    ("header_length", "H"),
    ("flags", "H"),
    ("frame", "I"),
    ("seq", "I"),
    ("ts", "d"),
    ("dropped", "I"),
    ("width", "H"),
    ("height", "H"),
    ("timing.queue_ms", "f"),
    ("timing.decode_ms", "f"),
    ("timing.inference_ms", "f"),
    ("timing.total_ms", "f"),
)
RESULT_HEADER = struct.Struct("<" + "".join(code for _, code in RESULT_HEADER_FIELDS))
RESULT_MAGIC: Final = b"HSR2"
RESULT_MAGIC_V1: Final = b"HSR1"  # protocol 1.0 sessions only
RIG_HEADER = struct.Struct("<HH")  # bone count B, expression count E
RIG_FLAG: Final = 1 << 8
RIG_CONFIDENCE_COUNT: Final = 8
PIPELINE_SHIFT: Final = 12
# Bytes per landmark value, by magic.
VALUE_SIZE: Final = {RESULT_MAGIC: 4, RESULT_MAGIC_V1: 2}
# HSR1 only: int16 counts of 1/10000.
FIXED_SCALE: Final = 10_000
FIXED_LIMIT: Final = 32_767


def part_flag(name: str) -> int:
    """The flag bit of a part (bit = index in PART_NAMES); parts follow the header in bit order."""
    return 1 << PART_NAMES.index(name)


def encode_result_binary(result: Result) -> bytes:
    """HSR2: the header, each present part as float32, then the rig block."""
    return _encode(result, RESULT_MAGIC)


def encode_result_binary_v1(result: Result) -> bytes:
    """HSR1 (deprecated, protocol 1.0 sessions): values as int16 counts of 1/10000, saturating."""
    return _encode(result, RESULT_MAGIC_V1)


def _encode(result: Result, magic: bytes) -> bytes:
    flags = PIPELINES.index(result.pipeline) << PIPELINE_SHIFT
    chunks: list[bytes] = []
    for bit, name in enumerate(PART_NAMES):
        arr = result.parts.get(name)
        if arr is None:
            continue
        flags |= 1 << bit
        if magic == RESULT_MAGIC:
            chunks.append(np.ascontiguousarray(arr, dtype="<f4").tobytes())
        else:
            fixed = np.clip(np.rint(arr * np.float32(FIXED_SCALE)), -FIXED_LIMIT, FIXED_LIMIT)
            chunks.append(fixed.astype("<i2").tobytes())
    rig = result.rig_arrays
    if rig is not None:
        flags |= RIG_FLAG
        chunks.append(RIG_HEADER.pack(len(rig.bones), len(rig.expressions)))
        for arr in (rig.bones, rig.hips, rig.head, rig.expressions, rig.confidence):
            chunks.append(np.ascontiguousarray(arr, dtype="<f4").tobytes())
    t = result.timing
    header = RESULT_HEADER.pack(
        magic,
        RESULT_HEADER.size,
        flags,
        result.frame & 0xFFFFFFFF,
        result.seq & 0xFFFFFFFF,
        result.ts,
        min(result.dropped, 0xFFFFFFFF),
        result.width,
        result.height,
        t.queue_ms,
        t.decode_ms,
        t.inference_ms,
        t.total_ms,
    )
    return header + b"".join(chunks)


def _magic(data: bytes) -> bytes:
    if len(data) < RESULT_HEADER.size or data[:4] not in VALUE_SIZE:
        raise ProtocolError("bad_message", "not a binary result (HSR2, or HSR1 of protocol 1.0)")
    return bytes(data[:4])


def decode_result_binary(data: bytes) -> Result:
    """Either layout; landmark parts as (points, stride) float32 arrays."""
    value_size = VALUE_SIZE[_magic(data)]
    (_, header_len, flags, frame, seq, ts, dropped, width, height, q, d, i, tot) = (
        RESULT_HEADER.unpack_from(data)
    )
    offset = header_len
    parts: dict[str, Array | None] = {}
    for bit, name in enumerate(PART_NAMES):
        if flags & (1 << bit):
            shape = (PART_POINTS[name], PART_STRIDES[name])
            count = shape[0] * shape[1]
            if value_size == 4:
                values = np.frombuffer(data, "<f4", count, offset).astype(np.float32)
            else:
                fixed = np.frombuffer(data, "<i2", count, offset).astype(np.float32)
                values = fixed / np.float32(FIXED_SCALE)
            parts[name] = values.reshape(shape)
            offset += count * value_size
    rig_arrays = None
    if flags & RIG_FLAG:
        n_bones, n_expr = RIG_HEADER.unpack_from(data, offset)
        offset += RIG_HEADER.size
        arrays = []
        for size in (n_bones * 4, 3, 3, n_expr, RIG_CONFIDENCE_COUNT):
            arrays.append(np.frombuffer(data, "<f4", size, offset))
            offset += size * 4
        rig_arrays = RigArrays(arrays[0].reshape(n_bones, 4), *arrays[1:])
    pipeline = (flags >> PIPELINE_SHIFT) & 0xF
    return Result(
        frame,
        seq,
        ts,
        dropped,
        width,
        height,
        PIPELINES[pipeline] if pipeline < len(PIPELINES) else "unknown",
        parts,
        Timing(q, d, i, tot),
        None,
        rig_arrays,
    )


def binary_result_size(data: bytes) -> int:
    """The length a binary result must have, judged from its header, flags and rig counts."""
    value_size = VALUE_SIZE[_magic(data)]
    header_len, flags = struct.unpack_from("<HH", data, 4)
    size = header_len
    for bit, name in enumerate(PART_NAMES):
        if flags & (1 << bit):
            size += PART_POINTS[name] * PART_STRIDES[name] * value_size
    if flags & RIG_FLAG:
        if len(data) < size + RIG_HEADER.size:
            raise ProtocolError("bad_message", "binary result cut inside its rig block")
        n_bones, n_expr = RIG_HEADER.unpack_from(data, size)
        size += RIG_HEADER.size + 4 * (n_bones * 4 + 3 + 3 + n_expr + RIG_CONFIDENCE_COUNT)
    return size
