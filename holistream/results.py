"""The values a result carries, independent of its encoding (JSON in holistream.protocol, binary in
holistream.binary), and the codec's error type."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from holistream.landmarks import Array

PIPELINES: tuple[str, ...] = ("holistic", "face", "pose", "hands", "holistic_lite")


class ProtocolError(Exception):
    """A peer broke the protocol; `code` is the stable error code of docs/protocol.md."""

    def __init__(self, code: str, message: str, *, frame: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.frame = frame




@dataclass(slots=True)
class Timing:
    queue_ms: float = 0.0
    decode_ms: float = 0.0
    inference_ms: float = 0.0
    total_ms: float = 0.0

    def to_json(self) -> dict[str, float]:
        return {
            "queue_ms": round(self.queue_ms, 2),
            "decode_ms": round(self.decode_ms, 2),
            "inference_ms": round(self.inference_ms, 2),
            "total_ms": round(self.total_ms, 2),
        }


@dataclass(slots=True)
class RigArrays:
    """The rig in its fixed wire order (the names and their order: holistream.rig.skeleton)."""

    bones: Array  # (B, 4) quaternions x, y, z, w
    hips: Array  # (3,)
    head: Array  # (3,) yaw, pitch, roll degrees
    expressions: Array  # (E,)
    confidence: Array  # (8,)


@dataclass(slots=True)
class Result:
    """One frame's result as both wire formats carry it."""

    frame: int
    seq: int
    ts: float
    dropped: int
    width: int
    height: int
    pipeline: str
    parts: dict[str, Array | None]  # wire part name -> (points, stride) float32, None = not found
    timing: Timing = field(default_factory=Timing)
    rig: dict[str, Any] | None = None  # JSON form of the rig
    rig_arrays: RigArrays | None = None  # binary form of the rig
