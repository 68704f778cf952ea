"""The producer WebSocket endpoint (`GET /ws`): protocol 1.1 (and 1.0 clients) over aiohttp.

Thin by design: it validates, translates messages into Core calls, and drains the session's
outbox into the socket. Every refusal it makes is one documented in docs/protocol.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from dataclasses import replace

from aiohttp import WSCloseCode, WSMessage, WSMsgType, web

from holistream import protocol
from holistream.protocol import ProtocolError
from server.config import Config
from server.core import Core
from server.http.common import (
    CORE,
    SOCKETS,
    client_ip,
    http_error,
    upgrade_error,
)
from server.sessions.session import Outgoing, Session

log = logging.getLogger("holistream.ws")

POLICY = WSCloseCode.POLICY_VIOLATION
TRY_AGAIN_LATER = WSCloseCode.TRY_AGAIN_LATER


async def _send_loop(ws: web.WebSocketResponse, session: Session, wake: asyncio.Event) -> None:
    """Drain the outbox; awaiting each send is what lets a slow reader lose results, not RAM.
    A peer that went away ends the loop quietly (the receive side sees the close)."""
    with contextlib.suppress(ConnectionError, RuntimeError):
        while not ws.closed:
            await wake.wait()
            wake.clear()
            while (item := session.outbox.pop()) is not None:
                if ws.closed:
                    return
                if isinstance(item, Outgoing):
                    data = item.encoded(session.format)
                    binary = session.format != "json"  # binary (HSR2) or binary1 (HSR1)
                    opcode = WSMsgType.BINARY if binary else WSMsgType.TEXT
                    await ws.send_frame(data, opcode)
                else:
                    await ws.send_str(item)


async def receive_before(ws: web.WebSocketResponse, deadline: float) -> WSMessage | None:
    """The next application message, or None once `deadline` (monotonic) has passed. aiohttp
    answers pings and swallows pongs inside `receive`, restarting its own timeout each time; one
    deadline around the whole call is what makes pings and pongs not count as activity."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return None
    try:
        async with asyncio.timeout(remaining):
            return await ws.receive()
    except TimeoutError:
        return None


async def open_socket(
    request: web.Request, cfg: Config, max_msg_size: int
) -> web.WebSocketResponse:
    """Upgrade with the server's keep-alive pings, and a small kernel send buffer: a slow reader
    then hits our latest-wins buffers within a few results, instead of letting megabytes of stale
    results queue in the kernel."""
    # No permessage-deflate: frames are JPEG (incompressible) and every browser offers it, so a
    # client would spend ~2 ms deflating each frame for nothing, and we each result.
    # aiohttp refuses a message of exactly max_msg_size; the documented limit allows it.
    ws = web.WebSocketResponse(
        max_msg_size=max_msg_size + 1, heartbeat=cfg.ping_interval_s, autoping=True, compress=False
    )
    await ws.prepare(request)
    sock = request.transport.get_extra_info("socket") if request.transport else None
    if sock is not None and cfg.send_buffer_bytes > 0:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, cfg.send_buffer_bytes)
    return ws


async def close_with_error(
    ws: web.WebSocketResponse,
    code: int,
    error: str,
    message: str,
    transport: asyncio.Transport | None = None,
    retry_after_s: float | None = None,
) -> None:
    """Send a fatal error and close; a peer that does not read gets its transport aborted."""
    try:
        async with asyncio.timeout(2.0):
            text = protocol.error_message(error, message, fatal=True, retry_after_s=retry_after_s)
            await ws.send_str(text)
            await ws.close(code=code, message=error.encode())
    except TimeoutError:
        if transport is not None:
            transport.abort()
    except Exception:  # the peer is already gone
        pass


async def producer(request: web.Request) -> web.StreamResponse:
    core: Core = request.app[CORE]
    cfg = core.config
    if (refused := upgrade_error(request, stream_required=False)) is not None:
        return refused
    stream = request.query.get("stream")
    if stream is not None and core.stream_live(stream):
        return http_error(409, "stream_taken", f"stream {stream!r} already has a producer")
    try:
        asked = protocol.parse_producer_query(request.query)
    except ProtocolError as exc:
        return http_error(400, "bad_request", str(exc))
    wake = asyncio.Event()
    session = core.new_session(peer=client_ip(request), stream=stream, wake=wake.set)
    # Refused now if it could not fit, but nothing is reserved until a valid hello.
    decision = core.would_admit(protocol.pipeline_for(asked.parts, asked.model), asked.fps)
    if not decision.admitted:
        return http_error(
            503, "server_full", decision.reason, headers={"Retry-After": str(cfg.retry_after_s)}
        )
    ws = await open_socket(request, cfg, cfg.max_message_bytes)
    sender = asyncio.create_task(_send_loop(ws, session, wake), name=f"send-{session.id[:8]}")
    request.app[SOCKETS].add(ws)
    core.limits.opened(session.peer)
    log.info("session %s from %s connected", session.id[:8], session.peer)
    try:
        await _receive_loop(ws, core, session, request.transport)
    except Exception:
        log.exception("session %s failed", session.id[:8])
        await close_with_error(ws, WSCloseCode.INTERNAL_ERROR, "internal", "internal server error")
    finally:
        request.app[SOCKETS].discard(ws)
        core.limits.closed(session.peer)
        core.remove(session)
        core.release(session.id)
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await sender
        log.info(
            "session %s closed (%s): %d received, %d results",
            session.id[:8],
            ws.close_code,
            session.slot.received,
            session.seq,
        )
    return ws


async def _receive_loop(
    ws: web.WebSocketResponse,
    core: Core,
    session: Session,
    transport: asyncio.Transport | None,
) -> None:
    """Until the peer leaves, or a deadline passes: `hello` within hello_timeout_s of the
    upgrade, then a frame or `configure` at least every idle_timeout_s. Pings, pongs, `stats`
    requests and refused messages do not count: they cannot hold a session open."""
    cfg = core.config
    deadline = time.monotonic() + cfg.hello_timeout_s
    while True:
        msg = await receive_before(ws, deadline)
        if msg is None:
            if session.hello is None:
                text = f"no hello within {cfg.hello_timeout_s:g} s"
                await close_with_error(ws, POLICY, "hello_timeout", text, transport)
            else:
                text = f"no frame or configure for {cfg.idle_timeout_s:g} s"
                await close_with_error(ws, POLICY, "idle_timeout", text, transport)
            return
        if msg.type == WSMsgType.BINARY:
            if _on_frame(core, session, msg.data):
                deadline = time.monotonic() + cfg.idle_timeout_s
        elif msg.type == WSMsgType.TEXT:
            active = await _on_text(ws, core, session, msg.data)
            if active is None:
                return
            if active:
                deadline = time.monotonic() + cfg.idle_timeout_s
        else:  # CLOSE, CLOSING, CLOSED, ERROR (1009 too big is closed by aiohttp itself)
            return




def _on_frame(core: Core, session: Session, data: bytes) -> bool:
    """Take one frame message; True when it was a frame of a live session (activity)."""
    try:
        frame = protocol.decode_frame(data)
    except ProtocolError as exc:
        core.refuse_frame(session, exc.code, exc.message, exc.frame)
        return False
    if session.hello is None:
        core.refuse_frame(session, "hello_required", "send 'hello' first", frame.frame_id)
        return False
    core.frame(session, frame.frame_id, frame.ts, frame.image)
    return True


async def _on_text(
    ws: web.WebSocketResponse, core: Core, session: Session, text: str
) -> bool | None:
    """Handle one text message: None when the session must end, True when it was a valid
    hello or configure (activity), else False."""
    try:
        msg = protocol.parse_message(text)
        kind = msg["type"]
        if kind == "hello":
            return await _on_hello(ws, core, session, msg)
        if kind == "stats":
            stats = session.stats(time.monotonic())
            if "id" in msg:
                stats["id"] = protocol.parse_request_id(msg["id"])
            session.send_control(protocol.dumps(stats))
        elif kind == "configure":
            return await _on_configure(core, session, msg)
        else:
            session.error("unknown_type", f"unknown message type {protocol.brief(kind)}")
    except ProtocolError as exc:
        session.error(exc.code, exc.message)
    return False


async def _on_hello(
    ws: web.WebSocketResponse, core: Core, session: Session, msg: dict
) -> bool | None:
    """True: the session is ready; False: a refused duplicate; None: the session ends."""
    if session.hello is not None:
        session.error("duplicate_hello", "this session already said hello; use 'configure'")
        return False
    try:
        hello = protocol.parse_hello(msg)
    except ProtocolError as exc:
        await close_with_error(ws, POLICY, exc.code, exc.message)
        return None
    decision = core.admit(session.id, protocol.pipeline_for(hello.parts, hello.model), hello.fps)
    if not decision.admitted:
        # Sessions reserve only once they said hello, so connections that raced past the
        # pre-upgrade check are refused here: told when to try again, as a 503 would be.
        await close_with_error(
            ws, TRY_AGAIN_LATER, "server_full", decision.reason,
            retry_after_s=core.config.retry_after_s,
        )  # fmt: skip
        return None
    session.configure(hello)
    core.add(session)
    await core.open(session)
    if session.stream is not None and not core.publish(session):
        await close_with_error(ws, POLICY, "stream_taken", f"stream {session.stream!r} is taken")
        return None
    session.go_live(protocol.dumps(_ready(core, session)))
    return True


async def _on_configure(core: Core, session: Session, msg: dict) -> bool:
    if session.hello is None:
        session.error("hello_required", "send 'hello' first")
        return False
    hello = protocol.parse_configure(msg, session.hello)
    old = session.hello
    if old.rig is not None and hello.rig is not None and replace(hello, rig=old.rig) == old:
        # Only the rig's options changed (legs, a re-centre): tracking goes on undisturbed.
        core.change_rig(session, hello)
    else:
        decision = await core.reconfigure(session, hello)
        if not decision.admitted:
            session.error("server_full", decision.reason)
            return False
    session.send_control(
        protocol.dumps(
            {
                "type": "configured",
                "pipeline": session.pipeline,
                "parts": list(hello.parts),
                "switches": session.switches,
                "fps_granted": session.told,
            }
        )
    )
    return True


def _ready(core: Core, session: Session) -> dict[str, object]:
    cfg = core.config
    assert session.hello is not None
    grant = core.grant_for_ready(session)
    return {
        "type": "ready",
        "protocol": session.hello.protocol_answer,
        "session": session.id,
        "role": "producer",
        "pipeline": session.pipeline,
        "parts": list(session.hello.parts),
        "format": session.hello.format,
        "stream": session.stream,
        "model": session.hello.model,
        "fps_requested": grant["requested"],
        "fps_granted": grant["fps"],
        "grant": grant,
        "server": f"holistream {core.version}",
        "limits": {
            "max_in_flight": protocol.MAX_IN_FLIGHT,
            "max_message_bytes": cfg.max_message_bytes,
            "max_image_pixels": cfg.max_image_pixels,
            "max_image_side": cfg.max_image_side,
            "max_frame_age_ms": cfg.max_frame_age_ms,
            "idle_timeout_s": cfg.idle_timeout_s,
            "ping_interval_s": cfg.ping_interval_s,
            "hello_timeout_s": cfg.hello_timeout_s,
            "stats_interval_s": cfg.stats_interval_s,
            "max_fps": protocol.MAX_FPS,
        },
        "capacity": {p: core.admission.capacity(p) for p in core.models},
        "capacity_fps": {p: round(core.admission.capacity_fps(p), 1) for p in core.models},
    }
