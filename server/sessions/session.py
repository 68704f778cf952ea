"""One client's streaming session: its options, frame slot, clock, counters and send buffer.

No sockets here: the WebSocket handler feeds it and drains its outbox; the worker pool takes its
frames and hands back results. That keeps every accounting rule testable without a network.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from holistream import protocol
from holistream.protocol import Hello, Result, Timing
from server.sessions.frame_slot import FrameSlot, Pending
from server.sessions.grants import changed, round_fps
from server.sessions.outbox import Outbox
from server.sessions.pacer import RatePacer
from server.sessions.stats import RollingMedian, RollingRate


@dataclass(slots=True)
class FramePayload:
    ts: float  # the client's capture timestamp (ms)
    image: bytes


@dataclass(slots=True)
class Outgoing:
    """A result waiting to be sent, with its encodings cached (serialised once per format)."""

    result: Result
    _encoded: dict[str, bytes] = field(default_factory=dict)

    def encoded(self, fmt: str) -> bytes:
        data = self._encoded.get(fmt)
        if data is None:
            if fmt == "binary":
                data = protocol.encode_result_binary(self.result)
            elif fmt == "binary1":  # protocol 1.0 sessions (deprecated HSR1)
                data = protocol.encode_result_binary_v1(self.result)
            else:
                data = protocol.encode_result_json(self.result)
            self._encoded[fmt] = data
        return data


class Session:
    """Written only through its methods. Whoever creates it says, once, how to wake its sender
    (`wake`) and what to tell of each dropped frame (`on_drop`); other layers keep their own
    records of it (the pool its worker and clock, the hub its stream)."""

    def __init__(
        self,
        *,
        peer: str,
        stream: str | None,
        wake: Callable[[], None] = lambda: None,
        on_drop: Callable[[str], None] | None = None,
        max_control: int = 64,
    ) -> None:
        self.id = uuid.uuid4().hex
        self.peer = peer
        self.stream = stream
        self.hello: Hello | None = None
        self.live = False  # `ready` was sent: from now on stats flow
        self.pipeline = ""
        self.wanted: tuple[str, ...] = ()
        self.slot: FrameSlot[FramePayload] = FrameSlot(on_drop=on_drop)
        self.outbox: Outbox[Outgoing] = Outbox(max_control)
        self.wake = wake
        self.seq = 0
        self.errors = 0
        self.switches = 0
        self.created = time.monotonic()
        # The rate granted now (server/sessions/grants.py), enforced at the door by the pacer;
        # `told` is the grant the client last heard of (ready or a `grant` message).
        self.grant = 0.0
        self.told: float | None = None
        self.pacer = RatePacer(0.0)
        self.fps_in = RollingRate()
        self.fps_out = RollingRate()
        self.inference_ms = RollingMedian()

    # -- options ---------------------------------------------------------------------------
    def configure(self, hello: Hello) -> None:
        self.hello = hello
        self.pipeline = protocol.pipeline_for(hello.parts, hello.model)
        self.wanted = protocol.wire_parts(hello.parts, hello.world)

    def switch(self, hello: Hello) -> None:
        """A `configure` the server accepted: new options, the old frames are superseded."""
        self.slot.clear("superseded")
        self.configure(hello)
        self.switches += 1

    def go_live(self, ready: str) -> None:
        """Send `ready`; from now on the session gets stats."""
        self.send_control(ready)
        self.live = True

    @property
    def format(self) -> str:
        """The wire format of its results: json, binary (HSR2) or binary1 (HSR1, protocol 1.0)."""
        return self.hello.wire_format if self.hello else "json"

    @property
    def fps(self) -> float:
        """The rate the client asked for (grants never exceed it)."""
        return self.hello.fps if self.hello else protocol.DEFAULT_FPS

    # -- frames in -------------------------------------------------------------------------
    def set_grant(self, fps: float) -> None:
        self.grant = fps
        self.pacer.set_rate(fps)

    def grant_ready(self, fps: float, floor: float) -> dict[str, float]:
        """The grant `ready` tells the client; the session is held to it from now on."""
        assert self.hello is not None
        self.told = round_fps(fps)
        self.set_grant(self.told)
        requested = self.hello.fps
        return {"fps": self.told, "requested": requested, "floor": min(floor, requested)}

    def regrant(self, fps: float, floor: float, *, configured: bool = False) -> None:
        """A new grant: a live session whose grant moved enough to matter (or that asked for
        another rate) is told with a `grant` message, and held to what it was told."""
        if self.hello is None:
            return
        wire = round_fps(fps)
        if not self.live:
            self.set_grant(wire)
            return
        if configured or changed(self.told, wire):
            if configured:
                reason = "configured"
            elif wire > (self.told or 0.0):
                reason = "capacity_freed"
            else:
                reason = "capacity_tightened"
            self.told = wire
            asked = self.hello.fps
            self.send_control(protocol.grant_message(wire, asked, min(floor, asked), reason))
        self.set_grant(self.told or wire)

    def offer(self, frame_id: int, payload: FramePayload, now: float) -> float:
        """Take a frame in; returns 0 when it may go to inference now, else the seconds until
        the grant lets it (it waits gated; a newer frame drops it as `over_grant`)."""
        self.fps_in.tick(now)
        frame = Pending(frame_id, now, payload)
        if self.slot.gated_until > now:  # one is already waiting for its turn: replace it
            self.slot.offer(frame, gate=self.slot.gated_until)
            return self.slot.gated_until - now
        if self.pacer.allow(now):
            self.slot.offer(frame)
            return 0.0
        wait = self.pacer.wait(now)
        self.slot.offer(frame, gate=now + wait)
        return wait

    def release(self, now: float) -> float:
        """The gated frame's time came: it takes its token and may go (0), or must still wait
        (seconds; the grant may have been lowered meanwhile)."""
        if self.slot.waiting is None or not self.slot.gated_until:
            self.slot.gated_until = 0.0
            return 0.0
        if self.pacer.allow(now):
            self.slot.gated_until = 0.0
            return 0.0
        wait = max(self.pacer.wait(now), 0.001)
        self.slot.gated_until = now + wait
        return wait

    # -- results out -----------------------------------------------------------------------
    def deliver(
        self,
        pending: Pending[FramePayload],
        width: int,
        height: int,
        parts: dict[str, Any],
        decode_ms: float,
        inference_ms: float,
        rig: tuple[dict[str, Any], protocol.RigArrays] | None,
        now: float,
        pipeline: str | None = None,
    ) -> Outgoing:
        """Queue one result; `pipeline` is the one that produced it (a fallback may differ)."""
        total_ms = (now - pending.received_at) * 1000
        queue_ms = max(total_ms - decode_ms - inference_ms, 0.0)
        result = Result(
            frame=pending.frame_id,
            seq=self.seq,
            ts=pending.payload.ts,
            dropped=self.slot.take_unreported(),
            width=width,
            height=height,
            pipeline=pipeline or self.pipeline,
            parts=parts,
            timing=Timing(queue_ms, decode_ms, inference_ms, total_ms),
            rig=rig[0] if rig else None,
            rig_arrays=rig[1] if rig else None,
        )
        self.seq += 1
        self.fps_out.tick(now)
        self.inference_ms.add(inference_ms)
        out = Outgoing(result)
        replaced = self.outbox.put_result(out)
        if replaced is not None:
            # The client is not reading: the older result is lost; its drops carry forward.
            self.slot.count_drop("backpressure", report=False)
            carried = replaced.result.dropped + 1
            self.outbox.put_result(
                Outgoing(dataclasses.replace(result, dropped=result.dropped + carried))
            )
        self.wake()
        return out

    def send_control(self, message: str) -> None:
        self.outbox.put_control(message)
        self.wake()

    def refuse(self, code: str, message: str, frame: int | None) -> None:
        """A frame refused before it reached the slot: it counts as received, and as an error."""
        self.slot.received += 1
        self.error(code, message, frame=frame, refused=True)

    def error(
        self, code: str, message: str, *, frame: int | None = None, refused: bool = False
    ) -> None:
        """Send an error; `refused` marks the end of a received frame (it counts in `errors`)."""
        if refused:
            self.errors += 1
        self.send_control(protocol.error_message(code, message, frame=frame))

    def stats(self, now: float) -> dict[str, Any]:
        slot = self.slot
        return {
            "type": "stats",
            "received": slot.received,
            "processed": slot.processed,
            "results": self.seq - slot.dropped["backpressure"],
            "errors": self.errors,
            "dropped": {reason: slot.dropped.get(reason, 0) for reason in protocol.DROP_REASONS},
            "dropped_total": slot.dropped_total,
            "pending": int(slot.waiting is not None),
            "in_flight": int(slot.in_flight is not None),
            "fps_in": round(self.fps_in.rate(now), 2),
            "fps_out": round(self.fps_out.rate(now), 2),
            "inference_ms_p50": round(self.inference_ms.median(), 2),
            "fps_granted": self.told if self.told is not None else 0.0,
            "uptime_s": round(now - self.created, 2),
        }
