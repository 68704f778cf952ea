"""The VMC bridge: a named stream's rig, sent as VMC protocol bundles (OSC over UDP).

VTuber apps and engine plug-ins receive bone rotations and blendshapes over VMC. The server solves
the rig once per stream; this bridge runs on the consumer's side: it subscribes (`format: binary`,
`rig`), turns each result into one bundle (holistream.rig.vmc.build_bundle) and sends it over UDP on
arrival, so bundles follow the stream's own rate. The server never sends UDP.

Tracking lost. Each bundle's /VMC/Ext/OK carries the protocol's tracking status: 1 while the
stream's rig tracks a person, 0 when it does not. When the stream ends (`stream_ended`), or no
result has come for `lost_after_s` (a stalled producer, a lost server), the bridge eases the
avatar from its last pose to the rig's neutral pose (arms down, face neutral;
holistream.rig.neutral) over `fade_s` in bundles at 30 Hz with tracking 0, then repeats that
neutral bundle every `keepalive_s` until results come back, so a receiver neither freezes
mid-blink nor loses the avatar.

Failures are reported (`events`, the log) and retried: an unknown stream (`stream_not_found`), a
producer that leaves (`stream_ended`: keep the subscription), a server that goes away (bounded
exponential backoff; `max_retries` attempts in a row without a result), a VMC receiver that is not
listening (a *connected* UDP socket hears the ICMP port-unreachable as ECONNREFUSED; an unconnected
one never does: say so, keep sending).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, NamedTuple

from websockets.exceptions import InvalidHandshake, InvalidURI

from holistream import client, protocol
from holistream.client import ErrorMsg, Rejected, SessionClosed
from holistream.rig.neutral import FADE_HZ, fade_to_neutral
from holistream.rig.skeleton import Rig, mirror_rig
from holistream.rig.vmc import build_bundle

log = logging.getLogger("holistream.vmc")

DEFAULT_PORT = 39539  # the VMC protocol's usual receiver port
MAX_UDP_BACKLOG = 64 * 1024  # bytes the kernel has not taken yet (~20 bundles)


@dataclass(frozen=True, slots=True)
class BridgeConfig:
    stream: str
    url: str = "ws://127.0.0.1:8000"
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    token: str | None = None
    mirror: bool = False  # applied here, per consumer: the stream's rig is shared
    smoothing: bool = True  # a request: docs/rig.md, "Options of a shared rig"
    max_retries: int = 20  # consecutive attempts without a result; < 0 retries forever
    backoff_s: float = 0.5
    backoff_max_s: float = 10.0
    status_interval_s: float = 10.0
    open_timeout_s: float = 10.0
    lost_after_s: float = 1.0  # no result for this long (and no stream_ended): tracking lost
    fade_s: float = 0.4  # the ease from the last pose to neutral
    keepalive_s: float = 1.0  # then the neutral bundle again, this often


@dataclass(slots=True)
class BridgeStats:
    connects: int = 0
    results: int = 0
    bundles: int = 0
    no_rig: int = 0  # results without a rig block (nothing to send)
    lost: int = 0  # results not sent: gaps in seq (dropped by the server), or a UDP backlog
    refused: int = 0  # sends the kernel reported as ICMP port unreachable
    lost_bundles: int = 0  # bundles sent with tracking 0 (easing to neutral, then holding it)


class Event(NamedTuple):
    """One thing the bridge reported; `kind` is stable (tests and tools match on it)."""

    kind: str
    message: str
    at: float


class Outcome(NamedTuple):
    """Why a subscription ended, whether another attempt can help, and the least wait first."""

    kind: str
    message: str
    retry: bool
    delay: float = 0.0  # the server's Retry-After


# ------------------------------------------------------------------------------ pure policy


class Backoff:
    """Exponential delays first, 2×first, ... capped at `limit`; reset after a success."""

    def __init__(self, first: float, limit: float, factor: float = 2.0) -> None:
        self.first, self.limit, self.factor, self._next = first, max(first, limit), factor, first

    def next(self) -> float:
        delay = self._next
        self._next = min(self.limit, delay * self.factor)
        return delay

    def reset(self) -> None:
        self._next = self.first


def close_outcome(code: int | None, error: ErrorMsg | None) -> Outcome:
    """A subscription the server closed (`error` is its fatal error message, if it sent one)."""
    if error is not None:
        if error.code == "stream_not_found":
            return Outcome("not_found", f"no producer: {error.message}", True)
        if error.code == "shutting_down":
            return Outcome("server_lost", "the server is shutting down", True)
        fixable = error.code not in ("bad_hello", "unsupported_protocol")
        what = f"the server closed the subscription: {error.code}: {error.message}"
        return Outcome("closed" if fixable else "refused", what, fixable)
    return Outcome("server_lost", f"connection to the server lost (close code {code})", True)


def error_outcome(exc: Exception, url: str) -> Outcome:
    """A subscription that could not start."""
    if isinstance(exc, Rejected):
        what = f"{url} refused the subscription: HTTP {exc.status} {exc.code}: {exc.message}"
        if exc.status in (400, 401, 403, 404):  # retrying will not change the answer
            return Outcome("refused", what + (" (check --token)" * (exc.status == 401)), False)
        return Outcome("rejected", what, True, exc.retry_after or 0.0)
    if isinstance(exc, InvalidURI):
        return Outcome("refused", f"bad --url {url!r}: {exc}", False)
    if isinstance(exc, InvalidHandshake):
        return Outcome("unreachable", f"{url} did not accept a WebSocket: {exc}", True)
    if isinstance(exc, ConnectionRefusedError):
        detail = "connection refused (is the server running?)"
    elif isinstance(exc, socket.gaierror):
        detail = f"unknown host ({exc.strerror})"
    else:
        detail = "timed out" if isinstance(exc, TimeoutError) else str(exc) or type(exc).__name__
    return Outcome("unreachable", f"cannot reach the server at {url}: {detail}", True)


def is_tracking(rig: Rig) -> bool:
    """Does a result's rig track a person (the body or the face found)?"""
    return bool(rig.confidence[0] > 0.0 or rig.confidence[5] > 0.0)


def rig_of(arrays: protocol.RigArrays, mirror: bool = False) -> Rig:
    """A result's binary rig block as a Rig (renormalised, NaN-free), mirrored if asked."""
    rig = Rig.from_arrays(arrays.bones, arrays.expressions, arrays.confidence, arrays.hips,
                          arrays.head)
    return mirror_rig(rig) if mirror else rig


# ------------------------------------------------------------------------------ the bridge


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, bridge: VmcBridge) -> None:
        self.bridge = bridge

    def error_received(self, exc: Exception) -> None:
        self.bridge._udp_error(exc)


class VmcBridge:
    """`await run()` until stop() (returns 0), giving up (1) or a refusal retries cannot fix (2)."""

    def __init__(self, config: BridgeConfig, *, keep_events: int = 500) -> None:
        client.endpoint(config.url, "/ws/subscribe", {})  # ValueError now for a URL that is not ws://
        self.config = config
        self.stats = BridgeStats()
        self.events: list[Event] = []
        self._keep = keep_events
        self._stop = asyncio.Event()
        self._udp: asyncio.DatagramTransport | None = None
        self._t0 = time.monotonic()
        self._last_seq: int | None = None
        self._udp_down = False
        self._last_rig: Rig | None = None  # the last pose sent
        self._last_result_at = 0.0
        self._lost = False  # tracking lost: faded (or fading) to neutral
        self._fade: asyncio.Task[None] | None = None
        self._lost_sent_at = 0.0

    def report(self, kind: str, message: str, level: int = logging.INFO) -> None:
        self.events.append(Event(kind, message, time.monotonic()))
        del self.events[: -self._keep]
        log.log(level, "%s", message)

    def count(self, kind: str) -> int:
        return sum(1 for e in self.events if e.kind == kind)

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    async def run(self) -> int:
        cfg = self.config
        try:
            self._udp, _ = await asyncio.get_running_loop().create_datagram_endpoint(
                lambda: _Udp(self), remote_addr=(cfg.host, cfg.port)
            )
        except OSError as exc:
            self.report("refused", f"cannot send to udp://{cfg.host}:{cfg.port}: {exc}",
                        logging.ERROR)
            return 2
        self.report("started", f"sending VMC to udp://{cfg.host}:{cfg.port} from stream "
                    f"{cfg.stream!r} at {cfg.url}" + (", mirrored" if cfg.mirror else "")
                    + ("" if cfg.smoothing else ", unsmoothed rig requested"))
        status = asyncio.create_task(self._status_loop(), name="vmc-status")
        watchdog = asyncio.create_task(self._watchdog(), name="vmc-watchdog")
        backoff, failures = Backoff(cfg.backoff_s, cfg.backoff_max_s), 0
        try:
            while not self._stop.is_set():
                before = self.stats.results
                outcome = await self._until_stopped(self._session())
                if outcome is None:
                    break
                if self.stats.results > before:
                    failures = 0
                    backoff.reset()
                self.report(outcome.kind, outcome.message,
                            logging.WARNING if outcome.retry else logging.ERROR)
                if not outcome.retry:
                    return 2
                failures += 1
                if 0 <= cfg.max_retries < failures:
                    self.report("gave_up", f"giving up after {failures} failed attempts in a row "
                                f"(--max-retries {cfg.max_retries})", logging.ERROR)
                    return 1
                delay = max(backoff.next(), outcome.delay)
                limit = "unlimited" if cfg.max_retries < 0 else cfg.max_retries
                self.report("retry", f"retrying in {delay:.1f} s (attempt {failures}/{limit})")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)
            return 0
        finally:
            for task in (status, watchdog, self._fade):
                if task is not None:
                    task.cancel()
            await asyncio.gather(status, watchdog, *filter(None, [self._fade]),
                                 return_exceptions=True)
            self._udp.close()
            st = self.stats
            self.report("stopped", f"stopped: {st.bundles} bundles sent from {st.results} results, "
                        f"{st.lost} lost on the way, {st.refused} refused by the receiver")

    async def _until_stopped(self, coro: Coroutine[Any, Any, Outcome]) -> Outcome | None:
        """Run the session until it ends (its Outcome) or stop() is called (None)."""
        session = asyncio.ensure_future(coro)
        stopper = asyncio.ensure_future(self._stop.wait())
        await asyncio.wait((session, stopper), return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if session.done():
            return session.result()
        session.cancel()
        await asyncio.gather(session, return_exceptions=True)
        return None

    async def _session(self) -> Outcome:
        """One subscription, from connecting to its end."""
        cfg = self.config
        try:
            async with client.subscribe(
                cfg.url, cfg.stream, token=cfg.token, format="binary", queue=32,
                rig={"smoothing": cfg.smoothing, "mirror": False}, open_timeout=cfg.open_timeout_s,
            ) as sub:
                self.stats.connects += 1
                self._last_seq = None
                raw = sub.ready.raw if sub.ready else {}
                wait = raw.get("limits", {}).get("wait_s")
                self.report("connected", f"subscribed to {cfg.stream!r}: " + (
                    "live" if raw.get("live") else
                    f"waiting for its producer (the server waits {wait} s)"))
                while True:
                    try:
                        msg = await sub.recv()
                    except SessionClosed as closed:
                        return close_outcome(closed.code, closed.error)
                    self._handle(msg)
        except SessionClosed as exc:  # closed before `ready`
            return close_outcome(exc.code, exc.error)
        except (Rejected, OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            return error_outcome(exc, cfg.url)

    def _handle(self, msg: object) -> None:
        if isinstance(msg, protocol.Result):
            self._on_result(msg)
        elif isinstance(msg, client.StreamEvent) and msg.type == "stream_started":
            self.report("stream_started", f"stream {msg.stream!r} is live "
                        f"({msg.pipeline}: {', '.join(msg.parts)})")
        elif isinstance(msg, client.StreamEvent):
            self.report("stream_ended", f"the producer of {msg.stream!r} left ({msg.reason}); "
                        "waiting for it to come back", logging.WARNING)
            self._tracking_lost("the stream ended")
        elif isinstance(msg, ErrorMsg | client.WarningMsg) and not getattr(msg, "fatal", False):
            self.report("server_" + msg.code, f"the server says {msg.code}: {msg.message}",
                        logging.WARNING)

    def _on_result(self, result: protocol.Result) -> None:
        stats = self.stats
        stats.results += 1
        if self._last_seq is not None and result.seq > self._last_seq + 1:
            stats.lost += result.seq - self._last_seq - 1
        self._last_seq = result.seq
        if result.rig_arrays is None:
            stats.no_rig += 1
            if stats.no_rig == 1:
                self.report("no_rig", "a result came without a rig: skipped", logging.WARNING)
            return
        assert self._udp is not None
        backlog = getattr(self._udp, "get_write_buffer_size", lambda: 0)()  # not in the ABC
        if backlog > MAX_UDP_BACKLOG:  # such bundles would be stale by now: drop, do not queue
            stats.lost += 1
            return
        rig = rig_of(result.rig_arrays, self.config.mirror)
        if self._fade is not None:
            self._fade.cancel()
            self._fade = None
        tracking = is_tracking(rig)
        self._udp.sendto(build_bundle(rig, time.monotonic() - self._t0, tracking=tracking))
        stats.bundles += 1
        self._last_rig, self._last_result_at = rig, time.monotonic()
        if self._lost:
            self._lost = False
            self.report("tracking", "results again: tracking resumed")

    # -- tracking lost ---------------------------------------------------------------------

    def _tracking_lost(self, why: str) -> None:
        """Ease the receiver's avatar to neutral, with tracking 0 (once per loss)."""
        if self._lost or self._last_rig is None or self._stop.is_set():
            return
        self._lost = True
        self.report("tracking_lost", f"{why}: easing the avatar to its neutral pose and telling "
                    "the receiver tracking is lost (/VMC/Ext/OK tracking 0)", logging.WARNING)
        self._fade = asyncio.get_running_loop().create_task(self._fade_out(self._last_rig))

    async def _fade_out(self, last: Rig) -> None:
        for rig in fade_to_neutral(last, self.config.fade_s):
            self._send_lost(rig)
            await asyncio.sleep(1.0 / FADE_HZ)
        self._lost_sent_at = time.monotonic()

    def _send_lost(self, rig: Rig) -> None:
        if self._udp is None or self._udp.is_closing():
            return
        self._udp.sendto(build_bundle(rig, time.monotonic() - self._t0, tracking=False))
        self.stats.lost_bundles += 1
        self._last_rig = rig
        self._lost_sent_at = time.monotonic()

    async def _watchdog(self) -> None:
        """No result for lost_after_s: tracking lost; once neutral, say so every keepalive_s."""
        cfg = self.config
        while True:
            await asyncio.sleep(0.05)
            now = time.monotonic()
            if not self._lost and self._last_rig is not None:
                if now - self._last_result_at > cfg.lost_after_s:
                    self._tracking_lost(f"no result for {cfg.lost_after_s:g} s")
            elif (self._lost and (self._fade is None or self._fade.done())
                  and now - self._lost_sent_at >= cfg.keepalive_s and self._last_rig is not None):
                self._send_lost(self._last_rig)

    def _udp_error(self, exc: Exception) -> None:
        self.stats.refused += 1
        if not self._udp_down:
            self._udp_down = True
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            self.report("udp_unreachable", f"nothing listens on udp://{self.config.host}:"
                        f"{self.config.port} ({why}): is the VMC receiver running, is --to "
                        "right? Still sending.", logging.WARNING)

    async def _status_loop(self) -> None:
        interval = self.config.status_interval_s
        while True:
            bundles, refused = self.stats.bundles, self.stats.refused
            await asyncio.sleep(interval)
            sent, refusals = self.stats.bundles - bundles, self.stats.refused - refused
            if self._udp_down and sent > 1 and not refusals:
                self._udp_down = False
                self.report("udp_ok", "no more ICMP errors: the VMC receiver is listening now")
            if sent or refusals:
                self.report("status", f"{sent / interval:.1f} bundles/s, {refusals} refused, "
                            f"{self.stats.lost} lost so far", logging.INFO)
