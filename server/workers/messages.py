"""Every message between the worker pool and a worker process, as typed dataclasses.

The pool (workers/pool.py) and the worker (workers/process.py) are the only modules that send or
receive them, and workers/ipc.py is the only one that knows their wire format. To add a field,
add it here with a default: both sides are always the same code (the pool spawns its workers).

Requests carry a `request` number when the pool waits for their reply; the reply echoes it, so
any number of such requests may be out at once. Frames and single images are answered in the
order they were sent and are matched by session id or job key instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from holistream.landmarks import Array
from holistream.protocol import RigArrays, RigOptions

Parts = dict[str, Array | None]  # wire part name -> rounded float32 points, None = not found
RigJson = dict[str, object]  # the rig's JSON form (holistream.rig.skeleton.Rig.to_json)


# -- pool -> worker ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Open:
    """Create the session's landmarker (a reopen replaces it); answered by Opened/OpenFailed."""

    request: int
    sid: str
    pipeline: str
    wanted: tuple[str, ...]
    rig: RigOptions | None


@dataclass(frozen=True, slots=True)
class Close:
    sid: str


@dataclass(frozen=True, slots=True)
class SetRig:
    """Turn a live session's rig on (options) or off (None), or change its options; no reply."""

    sid: str
    rig: RigOptions | None


@dataclass(frozen=True, slots=True)
class Frame:
    """One streaming frame; answered by FrameResult or FrameError."""

    sid: str
    frame_id: int
    mp_ts: int  # strictly increasing per session (MediaPipe's VIDEO-mode clock)
    image: bytes


@dataclass(frozen=True, slots=True)
class Predict:
    """One independent image (IMAGE mode); answered by Predicted or PredictError."""

    key: str
    pipeline: str
    wanted: tuple[str, ...]
    image: bytes
    exact: bool = False  # holistic: a fresh HolisticLandmarker instead of server.predict.composite


@dataclass(frozen=True, slots=True)
class Calibrate:
    """Measure each pipeline on its image, `frames` frames each; answered by Calibrated."""

    request: int
    images: dict[str, bytes]
    frames: int


@dataclass(frozen=True, slots=True)
class GetInfo:
    request: int


ToWorker = Open | Close | SetRig | Frame | Predict | Calibrate | GetInfo
TO_WORKER = (Open, Close, SetRig, Frame, Predict, Calibrate, GetInfo)


# -- worker -> pool ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Hello:
    """The worker's first message, once it is ready for work."""

    index: int
    pid: int


@dataclass(frozen=True, slots=True)
class Opened:
    request: int
    sid: str
    pipeline: str
    create_ms: float


@dataclass(frozen=True, slots=True)
class OpenFailed:
    request: int
    sid: str
    reason: str


@dataclass(frozen=True, slots=True)
class FrameResult:
    """One frame's landmarks; `pipeline` produced them (a fallback may differ from the
    session's), `switched` is the fallback policy's verdict on this frame."""

    sid: str
    frame_id: int
    width: int
    height: int
    parts: Parts
    decode_ms: float
    inference_ms: float
    pipeline: str
    switched: str | None = None  # "fallback", "recovered" or None (workers/fallback.py)
    rig_json: RigJson | None = None
    rig_arrays: RigArrays | None = None
    cpu_s: float = 0.0  # worker CPU seconds (all threads) since its previous message was done


@dataclass(frozen=True, slots=True)
class FrameError:
    sid: str
    frame_id: int
    code: str
    message: str


class ImageLandmarks(NamedTuple):
    """One independent image's answer (server.predict.worker.ImagePredictor.predict)."""

    width: int
    height: int
    parts: Parts
    decode_ms: float
    inference_ms: float


@dataclass(frozen=True, slots=True)
class Predicted:
    key: str
    image: ImageLandmarks


@dataclass(frozen=True, slots=True)
class PredictError:
    key: str
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class PipelineMeasure:
    ms_per_frame: float  # CPU ms, every thread of the worker
    memory_bytes: int  # what one more landmarker adds


@dataclass(frozen=True, slots=True)
class Calibrated:
    request: int
    costs: dict[str, PipelineMeasure] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Info:
    request: int
    pid: int
    landmarkers: int
    rss: int


FromWorker = (
    Hello | Opened | OpenFailed | FrameResult | FrameError | Predicted | PredictError
    | Calibrated | Info
)
FROM_WORKER = (
    Hello, Opened, OpenFailed, FrameResult, FrameError, Predicted, PredictError, Calibrated, Info
)
Reply = Opened | OpenFailed | Calibrated | Info  # answers to numbered requests
