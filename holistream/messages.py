"""The server's messages as typed objects, and the client's errors (docs/protocol.md)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from holistream.protocol import Result, decode_result_binary, decode_result_json, parse_message


@dataclass(frozen=True, slots=True)
class Ready:
    session: str = ""
    role: str = ""
    pipeline: str | None = None
    parts: Sequence[str] = ()
    format: str = "json"
    stream: str | None = None
    limits: dict[str, Any] = field(default_factory=dict)
    fps_granted: float | None = None  # the rate this session may send at (producers)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True, slots=True)
class Grant:
    """The server changed the rate this session may send at (docs/protocol.md, `grant`)."""

    fps: float = 0.0
    requested: float = 0.0
    floor: float = 0.0
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Stats:
    """The session's counters (docs/protocol.md, `stats`); `raw` has every field sent."""

    received: int = 0
    results: int = 0
    errors: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    dropped_total: int = 0
    pending: int = 0
    in_flight: int = 0
    fps_in: float = 0.0
    fps_out: float = 0.0
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True, slots=True)
class ErrorMsg:
    code: str = ""
    message: str = ""
    frame: int | None = None  # set when the error resolves that frame
    fatal: bool = False  # the server closes the connection right after
    retry_after_s: float | None = None  # a refused session (server_full): when to try again


@dataclass(frozen=True, slots=True)
class WarningMsg:
    code: str = ""
    message: str = ""


Warning = WarningMsg  # the protocol's name for it; not exported via __all__


@dataclass(frozen=True, slots=True)
class StreamEvent:
    type: str = ""  # stream_started | stream_ended
    stream: str = ""
    pipeline: str | None = None
    parts: Sequence[str] = ()
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Other:
    """Any other message (`configured`, or a type newer than this client)."""

    type: str = ""
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Reconnected:
    """Not a server message: the client replaced a lost session with a new one (`ready` is the
    new session's). Frame ids, credits and tracking start afresh; `seq` restarts at 0."""

    ready: Ready
    count: int  # reconnections so far
    type: str = "reconnected"


Message = Result | Stats | ErrorMsg | WarningMsg | StreamEvent | Grant | Other | Reconnected
_TYPES: dict[str, type[Any]] = {
    "ready": Ready, "stats": Stats, "error": ErrorMsg, "warning": WarningMsg,
    "stream_started": StreamEvent, "stream_ended": StreamEvent, "grant": Grant,
}  # fmt: skip


class HolistreamError(Exception):
    """Base of this client's errors."""


class ConfigureRefused(HolistreamError):
    """The server answered `configure` with an error (`bad_configure`, `server_full`)."""

    def __init__(self, error: ErrorMsg) -> None:
        super().__init__(f"configure refused ({error.code}): {error.message}")
        self.error = error


class Rejected(HolistreamError):
    """The server refused the WebSocket upgrade (HTTP status, e.g. 503 `server_full`)."""

    def __init__(self, status: int, code: str, message: str, retry_after: float | None) -> None:
        super().__init__(f"HTTP {status} {code}: {message}")
        self.status, self.code, self.message, self.retry_after = status, code, message, retry_after


class SessionClosed(HolistreamError):
    """The session ended; `code` is the WebSocket close code, `error` the fatal error if any."""

    def __init__(self, code: int | None, reason: str | None, error: ErrorMsg | None) -> None:
        super().__init__(f"session closed ({code}): {error.message if error else reason}")
        self.code, self.reason, self.error = code, reason, error


def typed(msg: dict[str, Any]) -> Any:
    """A parsed JSON message as a typed object; fields the class does not know are ignored."""
    kind = msg["type"]
    if kind == "result":
        return decode_result_json(msg)
    cls = _TYPES.get(kind, Other)
    names = {f.name for f in fields(cls)}
    values = {k: v for k, v in msg.items() if k in names}
    if "raw" in names:
        values["raw"] = msg
    if cls is ErrorMsg and not isinstance(values.get("frame"), int):
        values["frame"] = None
    return cls(**values)


def decode(data: str | bytes) -> Message:
    """Any server message, text or binary, as a typed object."""
    if isinstance(data, bytes):
        return decode_result_binary(data)
    return typed(parse_message(data))
