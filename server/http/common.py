"""Pieces every HTTP handler shares: app keys, JSON errors, access checks, client address."""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING

from aiohttp import web

from server.http import security as web_security

if TYPE_CHECKING:
    from server.core import Core

CORE: web.AppKey[Core] = web.AppKey("core")
SOCKETS: web.AppKey[set[web.WebSocketResponse]] = web.AppKey("sockets")

STREAM_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")


def http_error(
    status: int, code: str, message: str, *, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response(
        {"error": {"code": code, "message": message}}, status=status, headers=headers
    )


def client_ip(request: web.Request) -> str:
    core = request.app[CORE]
    return web_security.client_address(
        request.remote, request.headers.get("X-Forwarded-For"), core.config.trusted_proxies
    )


def access_error(request: web.Request) -> web.Response | None:
    """The refusal for a request that may not connect (bad origin, missing token, server not
    warm yet), or None."""
    core = request.app[CORE]
    cfg = core.config
    origin = request.headers.get("Origin")
    if not web_security.origin_allowed(origin, request.headers.get("Host"), cfg.allowed_origins):
        return http_error(403, "origin_not_allowed", f"origin {origin!r} is not allowed")
    if not web_security.token_ok(cfg.token, request.headers, request.query):
        return http_error(401, "unauthorized", "a valid bearer token is required")
    refused = core.limits.check(client_ip(request), time.monotonic())
    if refused is not None:
        reason, retry_after = refused
        core.metrics.rejected.labels("rate_limited").inc()
        return http_error(
            429, "rate_limited", reason, headers={"Retry-After": str(max(1, round(retry_after)))}
        )
    if not core.ready:
        if core.stopping:
            return http_error(503, "shutting_down", "the server is stopping")
        return http_error(
            503, "warming_up", "the server is still starting", headers={"Retry-After": "1"}
        )
    return None


def listing_refusal(request: web.Request) -> web.Response | None:
    """With --token-all, /streams and /metrics want the token too (off by default: they tell
    stream names and counts, not landmarks)."""
    cfg = request.app[CORE].config
    if cfg.token_all and not web_security.token_ok(cfg.token, request.headers, request.query):
        return http_error(401, "unauthorized", "a valid bearer token is required")
    return None


def validate_stream_name(name: str) -> str | None:
    if STREAM_NAME.fullmatch(name) is None:
        return "stream names are 1-64 characters of A-Z a-z 0-9 . _ -"
    return None


def upgrade_error(request: web.Request, *, stream_required: bool) -> web.Response | None:
    """The refusal before a WebSocket upgrade: access (`access_error`), then the `stream` query,
    which a subscriber must give and a producer may; or None."""
    if (refused := access_error(request)) is not None:
        return refused
    name = request.query.get("stream")
    if stream_required and (name is None or validate_stream_name(name)):
        return http_error(400, "bad_request", "a valid ?stream=NAME is required")
    if name is not None and (problem := validate_stream_name(name)):
        return http_error(400, "bad_request", problem)
    return None
