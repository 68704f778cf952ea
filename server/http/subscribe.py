"""`GET /ws/subscribe?stream=NAME` (read-only sessions) and `GET /streams`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from aiohttp import WSCloseCode, WSMsgType, web

from holistream import protocol
from holistream.protocol import ProtocolError
from server.core import Core
from server.http.common import (
    CORE,
    SOCKETS,
    client_ip,
    listing_refusal,
    upgrade_error,
)
from server.http.ws import close_with_error, open_socket, receive_before
from server.streams.hub import Subscriber

log = logging.getLogger("holistream.subscribe")

SUBSCRIBER_MAX_MESSAGE = 64 * 1024  # a subscriber only sends hello and stats requests


async def list_streams(request: web.Request) -> web.Response:
    core = request.app[CORE]
    if (refused := listing_refusal(request)) is not None:
        return refused
    return web.json_response({"streams": await core.list_streams()})


async def subscriber(request: web.Request) -> web.StreamResponse:
    core: Core = request.app[CORE]
    cfg = core.config
    if (refused := upgrade_error(request, stream_required=True)) is not None:
        return refused
    name = request.query["stream"]
    ws = await open_socket(request, cfg, SUBSCRIBER_MAX_MESSAGE)
    try:
        hello = await _receive_hello(ws, cfg.hello_timeout_s)
    except ProtocolError as exc:
        await close_with_error(ws, WSCloseCode.POLICY_VIOLATION, exc.code, exc.message)
        return ws
    if hello is None:
        return ws
    wake = asyncio.Event()
    sub = Subscriber(
        name,
        hello.wire_format,
        hello.rig is not None,
        rig_options=hello.rig,
        capacity=cfg.subscriber_buffer,
        wake=wake.set,
        on_stall=lambda: _stall_close(ws, sub, request.transport),
    )
    request.app[SOCKETS].add(ws)
    peer = client_ip(request)
    core.limits.opened(peer)
    core.subscribe(sub)
    ready_sent = ws.send_str(
        protocol.dumps(
            {
                "type": "ready",
                "protocol": hello.protocol_answer,
                "session": sub.id,
                "role": "subscriber",
                "stream": name,
                "live": core.stream_live(name),
                "format": hello.format,
                "limits": {
                    "buffer": sub.capacity,
                    "stall_s": cfg.subscriber_stall_s,
                    "wait_s": cfg.subscriber_wait_s,
                    "max_message_bytes": SUBSCRIBER_MAX_MESSAGE,
                    "ping_interval_s": cfg.ping_interval_s,
                },
            }
        )
    )
    with contextlib.suppress(ConnectionError):  # a peer already gone ends in the loop below
        await ready_sent
    sender = asyncio.create_task(_send_loop(ws, sub, wake), name=f"sub-{sub.id[:8]}")
    watchdog = asyncio.create_task(_wait_for_producer(ws, core, sub, cfg.subscriber_wait_s))
    core.metrics.subscribers.inc()
    try:
        await _receive_loop(ws, sub)
    finally:
        request.app[SOCKETS].discard(ws)
        core.limits.closed(peer)
        core.unsubscribe(sub)
        core.metrics.subscribers.dec()
        for task in (sender, watchdog):
            task.cancel()
        await asyncio.gather(sender, watchdog, return_exceptions=True)
        log.info(
            "subscriber %s of %r left: %d sent, %d lost", sub.id[:8], name, sub.delivered, sub.lost
        )
    return ws


_closing: set[asyncio.Task[None]] = set()


def _stall_close(
    ws: web.WebSocketResponse, sub: Subscriber, transport: asyncio.Transport | None
) -> None:
    task = asyncio.create_task(
        close_with_error(
            ws,
            WSCloseCode.POLICY_VIOLATION,
            "slow_consumer",
            "this subscriber stopped reading",
            transport,
        )
    )
    _closing.add(task)
    task.add_done_callback(_closing.discard)


async def _receive_hello(ws: web.WebSocketResponse, timeout: float) -> protocol.Hello | None:
    msg = await receive_before(ws, time.monotonic() + timeout)
    if msg is None:
        text = f"no hello within {timeout:g} s"
        await close_with_error(ws, WSCloseCode.POLICY_VIOLATION, "hello_timeout", text)
        return None
    if msg.type != WSMsgType.TEXT:
        if msg.type == WSMsgType.BINARY:
            await close_with_error(
                ws, WSCloseCode.POLICY_VIOLATION, "read_only", "subscribers do not send frames"
            )
        return None
    parsed = protocol.parse_message(msg.data)
    if parsed["type"] != "hello":
        raise ProtocolError("bad_hello", "send 'hello' first")
    return protocol.parse_hello(parsed)


async def _send_loop(ws: web.WebSocketResponse, sub: Subscriber, wake: asyncio.Event) -> None:
    while not ws.closed:
        await wake.wait()
        wake.clear()
        while (item := sub.pop()) is not None:
            is_result, data = item
            if ws.closed:
                return
            if isinstance(data, str):
                await ws.send_str(data)
            else:
                binary = is_result and sub.format != "json"
                await ws.send_frame(data, WSMsgType.BINARY if binary else WSMsgType.TEXT)
            if is_result:
                sub.sent()


async def _receive_loop(ws: web.WebSocketResponse, sub: Subscriber) -> None:
    async for msg in ws:
        if msg.type == WSMsgType.BINARY:
            sub.offer_event(protocol.error_message("read_only", "subscribers do not send frames"))
        elif msg.type == WSMsgType.TEXT:
            try:
                parsed = protocol.parse_message(msg.data)
            except ProtocolError as exc:
                sub.offer_event(protocol.error_message(exc.code, exc.message))
                continue
            if parsed["type"] == "stats":
                reply = {
                    "type": "stats",
                    "delivered": sub.delivered,
                    "lost": sub.lost,
                    "buffered": len(sub.buffer),
                }
                try:
                    if "id" in parsed:
                        reply["id"] = protocol.parse_request_id(parsed["id"])
                except ProtocolError as exc:
                    sub.offer_event(protocol.error_message(exc.code, exc.message))
                    continue
                sub.offer_event(protocol.dumps(reply))
            else:
                kind = protocol.brief(parsed["type"])
                sub.offer_event(
                    protocol.error_message(
                        "unknown_type", f"unknown message type {kind} for a subscriber"
                    )
                )


async def _wait_for_producer(
    ws: web.WebSocketResponse, core: Core, sub: Subscriber, limit_s: float
) -> None:
    """Close a subscriber whose stream has had no producer for `limit_s` seconds."""
    since = time.monotonic()
    while not ws.closed:
        await asyncio.sleep(min(limit_s / 4, 1.0))
        if core.stream_live(sub.stream):
            since = time.monotonic()
        elif time.monotonic() - since > limit_s:
            with contextlib.suppress(Exception):
                await close_with_error(
                    ws,
                    WSCloseCode.POLICY_VIOLATION,
                    "stream_not_found",
                    f"stream {sub.stream!r} had no producer for {limit_s:g} s",
                )
            return
