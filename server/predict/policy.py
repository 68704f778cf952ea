"""Pure decisions of the single-image API (docs/predict.md): no sockets, no workers, no clock.

What a request asks for, which status each bad input gets, whether a job can still start in
time, the cache key, and the response body. server.http.predict does the I/O around them.
"""

from __future__ import annotations

import hashlib
import io
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson
from PIL import Image

from holistream import protocol
from holistream.landmarks import Array
from server.workers.imaging import ImageError, sniff

# Raw bodies may say what they are; anything else is refused before it is read.
RAW_TYPES: Final = frozenset({"image/jpeg", "image/png", "image/webp", "application/octet-stream"})
MULTIPART: Final = "multipart/form-data"
CACHE_VERSION: Final = "1"
# How a holistic image is answered (docs/predict.md): "fast" composes stateless landmarkers on
# the regions Holistic derives from the pose; "exact" runs a fresh HolisticLandmarker.
MODES: Final = ("fast", "exact")

# HTTP status of each image error code (the codes are the protocol's, docs/protocol.md).
IMAGE_STATUS: Final[Mapping[str, int]] = {
    "unsupported_image": 415,
    "image_too_large": 413,
    "undecodable": 422,
    "pipeline_unavailable": 503,
    "internal": 500,
}


class RequestError(Exception):
    """A request refused before it reaches a worker: status, stable code, message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Options:
    parts: tuple[str, ...]
    world: bool
    pipeline: str
    wanted: tuple[str, ...]  # wire part names, in wire order
    mode: str = "fast"  # one of MODES

    @property
    def exact(self) -> bool:
        return self.mode == "exact"


def parse_options(query: Mapping[str, str]) -> Options:
    """`?parts=face,hands,pose&world=true|false&mode=fast|exact` (all optional)."""
    try:
        parts = protocol.ALL_GROUPS
        if "parts" in query:
            parts = protocol.parse_parts(query["parts"], code="bad_request")
    except protocol.ProtocolError as exc:
        raise RequestError(400, "bad_request", exc.message) from None
    world_text = query.get("world", "true").lower()
    if world_text not in ("true", "false", "1", "0"):
        raise RequestError(400, "bad_request", "'world' must be true or false")
    world = world_text in ("true", "1")
    mode = query.get("mode", "fast").lower()
    if mode not in MODES:
        raise RequestError(400, "bad_request", f"'mode' must be one of {', '.join(MODES)}")
    pipeline = protocol.pipeline_for(parts)
    return Options(parts, world, pipeline, protocol.wire_parts(parts, world), mode)


def body_kind(content_type: str) -> str:
    """'multipart' or 'raw' for an accepted Content-Type, else 415 (GIF, JSON, text, ...)."""
    if content_type == MULTIPART:
        return "multipart"
    if content_type in RAW_TYPES:
        return "raw"
    raise RequestError(
        415,
        "unsupported_media_type",
        f"Content-Type {content_type!r}: send image/jpeg, image/png, image/webp, "
        "application/octet-stream or a multipart/form-data field 'file'",
    )


def probe(data: bytes, *, max_pixels: int, max_side: int) -> tuple[str, int, int]:
    """Format and size from the header alone (no pixel is decoded), or the RequestError the
    worker would give later: so junk and decompression bombs never take a queue slot."""
    if not data:
        raise RequestError(400, "no_image", "the request carries no image")
    try:
        fmt = sniff(data)
    except ImageError as exc:
        raise RequestError(415, exc.code, exc.message) from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # limits are ours
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
    except Image.DecompressionBombError as exc:
        raise RequestError(413, "image_too_large", str(exc)) from None
    except (OSError, ValueError, SyntaxError):
        raise RequestError(422, "undecodable", "cannot read the image header") from None
    if width * height > max_pixels or max(width, height) > max_side:
        raise RequestError(
            413,
            "image_too_large",
            f"{width}×{height} exceeds the limit ({max_pixels} pixels, {max_side} a side)",
        )
    return fmt, width, height


def image_error(code: str, message: str) -> RequestError:
    """The HTTP form of an ImageError raised in the worker."""
    return RequestError(IMAGE_STATUS.get(code, 422), code, message)


def cache_key(data: bytes, options: Options, model_id: str) -> str:
    """Same image bytes, same options, same model: same answer (so it may be shared). The mode
    is part of it: the fast and exact paths may differ slightly."""
    digest = hashlib.sha256()
    pieces = (CACHE_VERSION, model_id, options.pipeline, ",".join(options.wanted), options.mode)
    for piece in pieces:
        digest.update(piece.encode())
        digest.update(b"\0")
    digest.update(data)
    return f"holistream:predict:{digest.hexdigest()}"


# ----------------------------------------------------------------------------- admission


@dataclass(frozen=True, slots=True)
class Verdict:
    admitted: bool
    reason: str = ""
    retry_after_s: int = 0


class StartEstimator:
    """Will a new job finish before the deadline? Learns from finished jobs.

    A job with `ahead` jobs waiting in front of it on `workers` workers is expected to take
    `(ahead / workers + 1) × unit` seconds; `unit` is an average over finished jobs of the same
    ratio. It therefore includes whatever else the workers do (streaming sessions take turns
    with single images), without modelling it.
    """

    def __init__(self, prior_s: float = 0.25, weight: float = 0.2) -> None:
        self.unit_s = prior_s
        self.weight = weight

    def observe(self, total_s: float, ahead: int, workers: int) -> None:
        if total_s <= 0 or workers <= 0:
            return
        sample = total_s / (ahead / workers + 1)
        self.unit_s += self.weight * (sample - self.unit_s)

    def expected_s(self, ahead: int, workers: int) -> float:
        return (ahead / max(workers, 1) + 1) * self.unit_s

    def decide(
        self, *, backlog: int, workers: int, queue_limit: int, timeout_s: float, retry_cap_s: int
    ) -> Verdict:
        """Refuse at once when the queue is full or the job could not finish in time."""
        drain = self.expected_s(backlog, workers) - self.unit_s
        retry = min(max(math.ceil(drain), 1), max(retry_cap_s, 1))
        if workers <= 0:
            return Verdict(False, "no inference worker is alive", retry)
        if backlog >= queue_limit:
            return Verdict(False, f"{backlog} images are already waiting", retry)
        if self.expected_s(backlog, workers) > timeout_s:
            return Verdict(False, "the image could not be processed in time", retry)
        return Verdict(True)


# ----------------------------------------------------------------------------- response


def landmark_body(
    width: int, height: int, pipeline: str, parts: Mapping[str, Array | None], mode: str = "fast"
) -> bytes:
    """The result object without `timing` and `cache`, with the `mode` that answered: what the
    cache stores."""
    result = protocol.Result(0, 0, 0.0, 0, width, height, pipeline, dict(parts))
    obj: dict[str, Any] = protocol.result_to_json_obj(result)
    for name in ("seq", "ts", "dropped", "timing"):
        obj.pop(name, None)
    obj["mode"] = mode
    return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)


def response_body(landmarks: bytes, timing: protocol.Timing, cache: str) -> bytes:
    """Append `timing` and `cache` to a stored landmark body, without parsing it again."""
    if not landmarks.startswith(b'{"') or not landmarks.endswith(b"}"):
        raise ValueError("not a non-empty JSON object")
    tail = orjson.dumps({"timing": timing.to_json(), "cache": cache})
    return landmarks[:-1] + b"," + tail[1:]
