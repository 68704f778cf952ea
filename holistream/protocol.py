"""Protocol 1.1 codec, sans I/O: bytes and dicts in, typed values out (docs/protocol.md).

The server, the Python client, the load generator and the tests all encode and decode through
this module, so there is exactly one definition of every byte on the wire.
"""

from __future__ import annotations

import math
import re
import reprlib
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import orjson

from holistream.binary import (
    RESULT_HEADER,
    RESULT_MAGIC,
    RESULT_MAGIC_V1,
    binary_result_size,
    decode_result_binary,
    encode_result_binary,
    encode_result_binary_v1,
)
from holistream.landmarks import GROUPS, PART_NAMES, PART_POINTS, PART_STRIDES, Array
from holistream.results import PIPELINES, ProtocolError, Result, RigArrays, Timing

__all__ = [
    "PIPELINES", "RESULT_HEADER", "RESULT_MAGIC", "RESULT_MAGIC_V1", "ProtocolError", "Result",
    "RigArrays", "Timing", "binary_result_size", "decode_result_binary", "encode_result_binary",
    "encode_result_binary_v1",
]  # fmt: skip

# What this codec speaks: "1.1". A hello may still say 1 (or "1.0"): such sessions get what 1.0
# promised, including the deprecated HSR1 binary layout (holistream.binary).
PROTOCOL_VERSION: Final = "1.1"
PROTOCOL_VERSIONS: Final[Mapping[object, str]] = {1: "1.0", "1.0": "1.0", "1.1": "1.1", 1.1: "1.1"}

FRAME_MAGIC: Final = b"HSF1"
FRAME_HEADER = struct.Struct("<4sId")  # magic, frame_id, ts
MODELS: tuple[str, ...] = ("full", "lite")  # hello `model`: "lite" runs holistic_lite
FORMATS: tuple[str, ...] = ("json", "binary")
ALL_GROUPS: tuple[str, ...] = ("face", "hands", "pose")
# Frames a producer may have unanswered: one in inference and one waiting behind it; a third
# would only supersede the waiting one (ready.limits.max_in_flight).
MAX_IN_FLIGHT: Final = 2
DROP_REASONS: tuple[str, ...] = (
    "superseded", "stale", "worker_lost", "backpressure", "closing", "over_grant",
)  # fmt: skip
# Why the server sent a `grant` message (docs/protocol.md).
GRANT_REASONS: tuple[str, ...] = ("capacity_freed", "capacity_tightened", "configured")
ROUND_DECIMALS: Final = 4
DEFAULT_FPS: Final = 15.0  # the rate a session is priced at when its client does not say
MAX_FPS: Final = 240.0
MAX_ID_CHARS: Final = 128  # a request's `id`, echoed in its reply

# Values quoted back in error messages: bounded in depth and length, whatever a peer sent.
_brief = reprlib.Repr()
_brief.maxlevel, _brief.maxstring, _brief.maxother, _brief.maxlist, _brief.maxdict = 2, 40, 40, 4, 4


def brief(value: object) -> str:
    """A short, safe repr of a peer's value for an error message."""
    return _brief.repr(value)


# ---------------------------------------------------------------------------- client -> server


@dataclass(frozen=True, slots=True)
class Frame:
    frame_id: int
    ts: float
    image: bytes


def encode_frame(frame_id: int, ts: float, image: bytes) -> bytes:
    return FRAME_HEADER.pack(FRAME_MAGIC, frame_id & 0xFFFFFFFF, ts) + image


def decode_frame(data: bytes) -> Frame:
    # A bad header still names its frame when bytes 4..8 (the id) arrived: the error then
    # resolves that frame for the client's accounting.
    readable_id = int.from_bytes(data[4:8], "little") if len(data) >= 8 else None
    if len(data) < FRAME_HEADER.size:
        raise ProtocolError(
            "bad_frame", f"frame message shorter than {FRAME_HEADER.size} bytes", frame=readable_id
        )
    magic, frame_id, ts = FRAME_HEADER.unpack_from(data)
    if magic != FRAME_MAGIC:
        raise ProtocolError(
            "bad_frame", "frame message does not start with HSF1", frame=readable_id
        )
    if not math.isfinite(ts):
        raise ProtocolError(
            "bad_timestamp", "frame timestamp is not a finite number", frame=frame_id
        )
    return Frame(frame_id, ts, bytes(memoryview(data)[FRAME_HEADER.size :]))


LEGS = ("auto", "seated", "standing")


@dataclass(frozen=True, slots=True)
class RigOptions:
    smoothing: bool = True
    mirror: bool = False
    legs: str = "auto"  # the legs' rest when not visible: one of LEGS
    recenter: int = 0  # how many re-centres were asked for (`configure` {"recenter": true})


@dataclass(frozen=True, slots=True)
class Hello:
    parts: tuple[str, ...] = ALL_GROUPS
    world: bool = True
    format: str = "json"
    rig: RigOptions | None = None
    fps: float = DEFAULT_FPS  # the rate asked for; the server grants at most this
    client: str = ""
    model: str = "full"  # "lite": holistic runs with the lite hand model (holistic_lite)
    protocol: str = PROTOCOL_VERSION  # "1.0" or "1.1", as negotiated by hello

    @property
    def wire_format(self) -> str:
        """How results are encoded for this session: json, binary (HSR2) or binary1 (HSR1)."""
        return "binary1" if self.format == "binary" and self.protocol == "1.0" else self.format

    @property
    def protocol_answer(self) -> int | str:
        """`ready.protocol`: 1 for a 1.0 client, as 1.0 promised; "1.1" otherwise."""
        return 1 if self.protocol == "1.0" else self.protocol


def parse_message(text: str | bytes) -> dict[str, Any]:
    """Parse a text message into a dict with a string `type`, or raise `bad_message`."""
    try:
        msg = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError("bad_message", f"not valid JSON: {exc.msg}") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        raise ProtocolError("bad_message", "a message must be a JSON object with a string 'type'")
    return msg


def parse_parts(value: object, *, code: str = "bad_hello") -> tuple[str, ...]:
    """Validate a list or comma-separated string of part groups; return them in canonical order."""
    if isinstance(value, str):
        value = [p for p in value.split(",") if p]
    if not isinstance(value, list) or not value or not all(isinstance(p, str) for p in value):
        raise ProtocolError(code, "'parts' must be a non-empty list of 'face', 'hands', 'pose'")
    unknown = [p for p in value if p not in ALL_GROUPS]
    if unknown:
        raise ProtocolError(code, f"unknown part(s) {brief(unknown)}; use 'face', 'hands', 'pose'")
    return tuple(g for g in ALL_GROUPS if g in value)


_DECIMAL = re.compile(r"[+]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def parse_fps(value: object, *, code: str) -> float:
    """The one check of an `fps` (a hello's number or a query's text): finite, in (0, 240]."""
    if isinstance(value, str):
        text = value.strip()
        number: object = float(text) if _DECIMAL.fullmatch(text) else None
    else:
        number = value
    if (
        isinstance(number, bool)
        or not isinstance(number, int | float)
        or not math.isfinite(number)
        or not 0 < number <= MAX_FPS
    ):
        raise ProtocolError(code, f"'fps' must be a number in (0, {MAX_FPS:g}]")
    return float(number)


def _parse_rig(value: object, code: str) -> RigOptions | None:
    if value is None or value is False:
        return None
    if value is True:
        return RigOptions()
    if isinstance(value, dict):
        smoothing, mirror = value.get("smoothing", True), value.get("mirror", False)
        legs = value.get("legs", "auto")
        if isinstance(smoothing, bool) and isinstance(mirror, bool) and legs in LEGS:
            return RigOptions(smoothing=smoothing, mirror=mirror, legs=legs)
    raise ProtocolError(
        code,
        "'rig' must be a boolean or {'smoothing': bool, 'mirror': bool, "
        "'legs': 'auto' | 'seated' | 'standing'}",
    )


def negotiate(value: object) -> str:
    """The version a hello's `protocol` asks for ("1.0" or "1.1"), or `unsupported_protocol`."""
    version = None if isinstance(value, bool | list | dict) else PROTOCOL_VERSIONS.get(value)
    if version is None:
        said = "no 'protocol'" if value is None else f"protocol {brief(value)}"
        raise ProtocolError(
            "unsupported_protocol",
            f"hello has {said}; this server speaks \"{PROTOCOL_VERSION}\" (and 1 for 1.0 clients)",
        )
    return version


def parse_hello(msg: Mapping[str, Any]) -> Hello:
    base = Hello(protocol=negotiate(msg.get("protocol")))
    return _parse_options(msg, base, code="bad_hello", allow_format=True)


def parse_configure(msg: Mapping[str, Any], current: Hello) -> Hello:
    """The session's options after a `configure`. `"recenter": true` asks the rig to take the
    current pose as neutral (it counts up RigOptions.recenter); it needs the rig on."""
    hello = _parse_options(msg, current, code="bad_configure", allow_format=False)
    recenter = msg.get("recenter", False)
    if not isinstance(recenter, bool):
        raise ProtocolError("bad_configure", "'recenter' must be a boolean")
    if recenter:
        if hello.rig is None:
            raise ProtocolError("bad_configure", "'recenter' needs the rig: ask for 'rig' first")
        rig = replace(hello.rig, recenter=hello.rig.recenter + 1)
        hello = replace(hello, rig=rig)
    elif hello.rig is not None and current.rig is not None:
        hello = replace(hello, rig=replace(hello.rig, recenter=current.rig.recenter))
    return hello


def _parse_options(msg: Mapping[str, Any], base: Hello, *, code: str, allow_format: bool) -> Hello:
    parts = parse_parts(msg["parts"], code=code) if "parts" in msg else base.parts
    world = msg.get("world", base.world)
    if not isinstance(world, bool):
        raise ProtocolError(code, "'world' must be a boolean")
    fmt = base.format
    if allow_format:
        fmt = msg.get("format", base.format)
        if fmt not in FORMATS:
            raise ProtocolError(code, "'format' must be 'json' or 'binary'")
    rig = _parse_rig(msg["rig"], code) if "rig" in msg else base.rig
    fps = parse_fps(msg["fps"], code=code) if "fps" in msg else base.fps
    client = msg.get("client", base.client)
    if not isinstance(client, str):
        raise ProtocolError(code, "'client' must be a string")
    model = msg.get("model", base.model)
    if model not in MODELS:
        raise ProtocolError(code, "'model' must be 'full' or 'lite'")
    return Hello(parts, world, fmt, rig, fps, client[:100], model, base.protocol)


def parse_request_id(value: object) -> object:
    """The `id` a client may attach to a request, echoed in the reply: a number, or a string of
    at most 128 characters (anything larger would be stored and sent back: memory on demand)."""
    if value is None or isinstance(value, bool | int):
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 1 << 63:
            raise ProtocolError("bad_message", "'id' must fit a 64-bit integer")
        return value
    if isinstance(value, float) or (isinstance(value, str) and len(value) <= MAX_ID_CHARS):
        return value
    raise ProtocolError(
        "bad_message", f"'id' must be a number or a string of at most {MAX_ID_CHARS} characters"
    )


PRODUCER_QUERY: tuple[str, ...] = ("parts", "fps", "model")


def parse_producer_query(query: Mapping[str, str]) -> Hello:
    """`GET /ws?parts=&fps=&model=`: what admission prices a producer at before its hello, with
    a hello's checks and defaults (`bad_request` when a value is wrong)."""
    given = {name: query[name] for name in PRODUCER_QUERY if name in query}
    return _parse_options(given, Hello(), code="bad_request", allow_format=False)


def pipeline_for(parts: Sequence[str], model: str = "full") -> str:
    """The cheapest pipeline that delivers `parts` (docs/protocol.md, Pipelines)."""
    if len(parts) == 1:
        return parts[0]
    return "holistic_lite" if model == "lite" else "holistic"


def wire_parts(parts: Sequence[str], world: bool) -> tuple[str, ...]:
    """The result fields a session with these options receives, in wire order."""
    wanted = {p for g in parts for p in GROUPS[g]}
    if not world:
        wanted -= {"pose_world", "left_hand_world", "right_hand_world"}
    return tuple(p for p in PART_NAMES if p in wanted)


# ---------------------------------------------------------------------------- server -> client


def round_landmarks(array: npt.ArrayLike) -> Array:
    """Round to the protocol's precision once, so JSON and binary carry identical values.

    Rounded in float64: float32 would overflow to inf scaling values beyond ~3.4e34 by 10^4."""
    as_f32 = np.asarray(array, dtype=np.float32).astype(np.float64)
    return np.round(as_f32, ROUND_DECIMALS).astype(np.float32)


def result_to_json_obj(result: Result) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "type": "result",
        "frame": result.frame,
        "seq": result.seq,
        "ts": result.ts,
        "dropped": result.dropped,
        "width": result.width,
        "height": result.height,
        "pipeline": result.pipeline,
    }
    for name, arr in result.parts.items():
        obj[name] = None if arr is None else arr.reshape(-1)
    obj["timing"] = result.timing.to_json()
    if result.rig is not None:
        obj["rig"] = result.rig
    return obj


def encode_result_json(result: Result) -> bytes:
    return orjson.dumps(result_to_json_obj(result), option=orjson.OPT_SERIALIZE_NUMPY)


def decode_result_json(obj: Mapping[str, Any]) -> Result:
    """Turn a parsed JSON result into a Result (parts as (points, stride) float32 arrays)."""
    parts: dict[str, Array | None] = {}
    for name in PART_NAMES:
        if name in obj:
            value = obj[name]
            parts[name] = (
                None
                if value is None
                else np.asarray(value, np.float32).reshape(PART_POINTS[name], PART_STRIDES[name])
            )
    timing = obj.get("timing") or {}
    return Result(
        obj["frame"],
        obj.get("seq", 0),
        obj.get("ts", 0.0),
        obj.get("dropped", 0),
        obj["width"],
        obj["height"],
        obj.get("pipeline", "holistic"),
        parts,
        Timing(**{k: float(v) for k, v in timing.items() if k in Timing.__slots__}),
        obj.get("rig"),
    )


def dumps(obj: Mapping[str, Any]) -> str:
    return orjson.dumps(obj).decode()


def error_message(
    code: str,
    message: str,
    *,
    frame: int | None = None,
    fatal: bool = False,
    retry_after_s: float | None = None,
) -> str:
    obj: dict[str, Any] = {"type": "error", "code": code, "message": message, "fatal": fatal}
    if frame is not None:
        obj["frame"] = frame
    if retry_after_s is not None:
        obj["retry_after_s"] = retry_after_s
    return dumps(obj)


def grant_message(fps: float, requested: float, floor: float, reason: str) -> str:
    """The rate a session may send at from now on (docs/protocol.md, `grant`)."""
    obj = {"type": "grant", "fps": fps, "requested": requested, "floor": floor, "reason": reason}
    return dumps(obj)


def warning_message(code: str, message: str) -> str:
    return dumps({"type": "warning", "code": code, "message": message})
