"""Named streams: one producer's results fanned out to many subscribers, in-process.

No sockets here. A result is serialised once per format (the Outgoing caches its encodings) and
the same bytes go to every subscriber that wants that format. Each subscriber has a small bounded
buffer: one that reads slowly loses its oldest results (a gap in `seq`), never the producer's
time or the other subscribers' latency, and is closed if it stays stalled.
"""

from __future__ import annotations

import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from holistream import protocol
from server.sessions.session import Outgoing, Session
from server.sessions.stats import RollingRate


@dataclass(eq=False)
class Subscriber:
    stream: str
    format: str = "json"
    rig: bool = False
    rig_options: protocol.RigOptions | None = None  # its hello's, if it asked for a rig
    capacity: int = 8
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    buffer: deque[tuple[bool, bytes | str]] = field(default_factory=deque)  # (is_result, data)
    lost: int = 0
    delivered: int = 0
    stalled_since: float | None = None
    wake: Callable[[], None] = lambda: None
    on_stall: Callable[[], None] = lambda: None  # close it: it stopped reading
    created: float = field(default_factory=time.monotonic)
    max_events: int = 64  # replies and notices held for a subscriber that does not read
    events: int = 0
    events_dropped: int = 0
    stall_told: bool = False

    def stall(self) -> None:
        """It stopped reading: tell its handler once (on_stall closes the socket)."""
        if not self.stall_told:
            self.stall_told = True
            self.on_stall()

    def offer_result(self, data: bytes, now: float) -> None:
        if len(self.buffer) >= self.capacity:
            # Drop the oldest result (events are kept: they are few and matter).
            for i, (is_result, _) in enumerate(self.buffer):
                if is_result:
                    del self.buffer[i]
                    break
            self.lost += 1
            if self.stalled_since is None:
                self.stalled_since = now
        self.buffer.append((True, data))
        self.wake()

    def offer_event(self, text: str) -> None:
        """Queue a notice or reply; beyond `max_events` unsent, it is dropped (and counted):
        a subscriber that asks without reading cannot grow the server's memory."""
        if self.events >= self.max_events:
            self.events_dropped += 1
            return
        self.events += 1
        self.buffer.append((False, text))
        self.wake()

    def pop(self) -> tuple[bool, bytes | str] | None:
        if not self.buffer:
            return None
        item = self.buffer.popleft()
        if not item[0]:
            self.events -= 1
        return item

    def sent(self) -> None:
        """The socket took a message: the subscriber is reading again."""
        self.delivered += 1
        self.stalled_since = None


@dataclass(eq=False)
class Stream:
    name: str
    producer: Session | None = None
    subscribers: set[Subscriber] = field(default_factory=set)
    started: float = field(default_factory=time.monotonic)
    rate: RollingRate = field(default_factory=RollingRate)
    results: int = 0

    def describe(self, now: float) -> dict[str, Any]:
        producer = self.producer
        return {
            "name": self.name,
            "live": producer is not None,
            "pipeline": producer.pipeline if producer else None,
            "fps": round(self.rate.rate(now), 2),
            "subscribers": len(self.subscribers),
            "age_s": round(now - self.started, 1),
            "results": self.results,
        }


def stream_started(stream: Stream) -> str:
    producer = stream.producer
    assert producer is not None and producer.hello is not None
    return protocol.dumps(
        {
            "type": "stream_started",
            "stream": stream.name,
            "pipeline": producer.pipeline,
            "parts": list(producer.hello.parts),
        }
    )


def stream_ended(name: str, reason: str) -> str:
    return protocol.dumps({"type": "stream_ended", "stream": name, "reason": reason})


class Relay(Protocol):
    """Carries streams to other instances (server.streams.relay). The hooks are synchronous and
    must never block or raise: they run in the producer's result path."""

    def started(self, name: str, event_text: str) -> None: ...
    def ended(self, name: str, event_text: str) -> None: ...
    def result(self, name: str, binary: bytes) -> None: ...
    def subscribed(self, sub: Subscriber) -> None: ...
    def unsubscribed(self, name: str) -> None: ...
    def wants_rig(self, name: str) -> bool: ...


class StreamHub:
    """The streams of this instance. `relay` (e.g. Redis) sees every publish, if configured,
    and feeds results of producers on other instances in through `relay_result`."""

    def __init__(self, relay: Relay | None = None) -> None:
        self.streams: dict[str, Stream] = {}
        self.relay = relay
        self.rig_changed: Callable[[Session], None] = lambda s: None

    def has_producer(self, name: str) -> bool:
        stream = self.streams.get(name)
        return stream is not None and stream.producer is not None

    def publish(self, session: Session) -> None:
        assert session.stream is not None
        stream = self.streams.setdefault(session.stream, Stream(session.stream))
        stream.producer, stream.started, stream.results = session, time.monotonic(), 0
        event = stream_started(stream)
        for sub in stream.subscribers:
            sub.offer_event(event)
        # A subscriber that asked for the rig while the producer's session was being opened
        # (before this publication) found no producer to turn it on for: do it now.
        if any(sub.rig for sub in stream.subscribers):
            self.rig_changed(session)
        if self.relay is not None:
            self.relay.started(stream.name, event)

    def unpublish(self, session: Session, reason: str = "producer_closed") -> None:
        stream = self.streams.get(session.stream or "")
        if stream is None or stream.producer is not session:
            return
        stream.producer = None
        event = stream_ended(stream.name, reason)
        for sub in stream.subscribers:
            sub.offer_event(event)
        if self.relay is not None:
            self.relay.ended(stream.name, event)
        if not stream.subscribers:
            del self.streams[stream.name]

    def subscribe(self, sub: Subscriber) -> Stream:
        stream = self.streams.setdefault(sub.stream, Stream(sub.stream))
        stream.subscribers.add(sub)
        if stream.producer is not None:
            sub.offer_event(stream_started(stream))
            if sub.rig:
                self.rig_changed(stream.producer)
        if self.relay is not None:
            self.relay.subscribed(sub)
        return stream

    def unsubscribe(self, sub: Subscriber) -> None:
        stream = self.streams.get(sub.stream)
        if stream is None:
            return
        stream.subscribers.discard(sub)
        if stream.producer is None and not stream.subscribers:
            del self.streams[stream.name]
        if self.relay is not None:
            self.relay.unsubscribed(sub.stream)

    def rig_options(self, session: Session) -> protocol.RigOptions | None:
        """The options of the earliest local subscriber that asked for a rig (the shared rig is
        solved once per stream, so the first one to ask chooses)."""
        stream = self.streams.get(session.stream or "")
        asked = [s for s in (stream.subscribers if stream else ()) if s.rig_options is not None]
        return min(asked, key=lambda s: s.created).rig_options if asked else None

    def wants_rig(self, session: Session) -> bool:
        stream = self.streams.get(session.stream or "")
        if stream is not None and any(s.rig for s in stream.subscribers):
            return True
        return self.relay is not None and self.relay.wants_rig(session.stream or "")

    # -- a producer on another instance (fed by the relay) ---------------------------------
    def remote_subscribers(self, name: str) -> set[Subscriber]:
        """Subscribers of `name` that only a remote producer can feed (none while it is local)."""
        stream = self.streams.get(name)
        return stream.subscribers if stream is not None and stream.producer is None else set()

    def relay_event(self, name: str, text: str) -> None:
        for sub in self.remote_subscribers(name):
            sub.offer_event(text)

    def relay_result(self, name: str, binary: bytes, to_json: Callable[[], bytes]) -> None:
        """A remote result (HSR2): binary subscribers get the bytes as they are, JSON ones (and
        protocol 1.0's HSR1) one shared re-encoding, made only if someone wants it."""
        now = time.monotonic()
        other: dict[str, bytes] = {}
        for sub in self.remote_subscribers(name):
            if sub.format == "binary":
                sub.offer_result(binary, now)
                continue
            if sub.format not in other:
                other[sub.format] = (
                    protocol.encode_result_binary_v1(protocol.decode_result_binary(binary))
                    if sub.format == "binary1"
                    else to_json()
                )
            sub.offer_result(other[sub.format], now)

    def revoke(self, name: str, message: str) -> None:
        """Another instance turned out to own `name`: stop publishing the local producer."""
        stream = self.streams.get(name)
        if stream is not None and (session := stream.producer) is not None:
            self.unpublish(session, reason="stream_taken")
            session.error("stream_taken", message)

    def fan_out(self, session: Session, out: Outgoing) -> None:
        """A result of `session`: to its stream's subscribers, while it is the publisher."""
        stream = self.streams.get(session.stream or "")
        if stream is not None and stream.producer is session:
            self._fan_out(stream, out)

    def _fan_out(self, stream: Stream, out: Outgoing) -> None:
        now = time.monotonic()
        stream.results += 1
        stream.rate.tick(now)
        for sub in stream.subscribers:
            sub.offer_result(out.encoded(sub.format), now)
        if self.relay is not None:
            self.relay.result(stream.name, out.encoded("binary"))

    def stalled(self, now: float, limit_s: float) -> list[Subscriber]:
        return [
            sub
            for stream in self.streams.values()
            for sub in stream.subscribers
            if sub.stalled_since is not None and now - sub.stalled_since > limit_s
        ]

    def list(self, now: float) -> list[dict[str, Any]]:
        return [s.describe(now) for s in self.streams.values() if s.producer is not None]
