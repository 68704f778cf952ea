"""The aiohttp application and the process around it: routes, start-up, graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from pathlib import Path

from aiohttp import WSCloseCode, web

from holistream import protocol
from server.config import Config
from server.core import Core
from server.http.common import CORE, SOCKETS, listing_refusal
from server.http.predict import predict
from server.http.subscribe import list_streams, subscriber
from server.http.ws import producer

log = logging.getLogger("holistream")


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "alive"})


async def readyz(request: web.Request) -> web.Response:
    core = request.app[CORE]
    workers = core.worker_states()
    if request.query.get("landmarkers") and core.ready:
        # Opt-in (it waits for each worker's current frame): live landmarkers per worker.
        landmarkers: dict[int, int] = {}
        with contextlib.suppress(TimeoutError, ConnectionError):
            async with asyncio.timeout(5):
                landmarkers = await core.landmarkers()
        for w in workers:
            w["landmarkers"] = landmarkers.get(w["pid"])
    body = {
        "ready": core.ready,
        "sessions": len(core.sessions),
        "workers": workers,
        "capacity": {p: core.admission.capacity(p) for p in core.models},
        "cpus": core.config.cpus,
        "capacity_fps": {p: round(core.admission.capacity_fps(p), 1) for p in core.models},
    }
    return web.json_response(body, status=200 if core.ready else 503)


async def metrics(request: web.Request) -> web.Response:
    if (refused := listing_refusal(request)) is not None:
        return refused
    body = request.app[CORE].metrics.render()
    return web.Response(body=body, content_type="text/plain", charset="utf-8")


async def index(request: web.Request) -> web.StreamResponse:
    return _page(request, "index.html")


async def obs(request: web.Request) -> web.StreamResponse:
    """The avatar alone, for an OBS browser source (web/obs.html; /obs?stream=NAME)."""
    return _page(request, "obs.html")


def _page(request: web.Request, name: str) -> web.StreamResponse:
    page = request.app[CORE].config.web_root / name
    if not page.exists():
        return web.Response(text="holistream: the web demo is not installed\n")
    return web.FileResponse(page, headers={"Cache-Control": "no-cache"})


def build_app(core: Core) -> web.Application:
    # client_max_size bounds HTTP bodies (single-image API) as max_message_bytes bounds frames.
    app = web.Application(client_max_size=core.config.max_message_bytes)
    app[CORE] = core
    app[SOCKETS] = set()
    app.router.add_get("/ws", producer)
    app.router.add_get("/ws/subscribe", subscriber)
    app.router.add_get("/streams", list_streams)
    app.router.add_post("/v1/predict", predict)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/", index)
    app.router.add_get("/obs", obs)
    web_root = core.config.web_root
    if web_root.is_dir():
        app.router.add_static("/static/", web_root, follow_symlinks=False)
        for sub in ("js", "css", "assets", "vendor"):
            if (web_root / sub).is_dir():
                app.router.add_static(f"/{sub}/", web_root / sub)
        if (web_root / "node_modules").is_dir():
            app.router.add_static("/node_modules/", web_root / "node_modules")
    app.on_shutdown.append(_close_sockets)
    return app


async def _close_sockets(app: web.Application) -> None:
    """Tell every client we are going away (1001) before the workers stop."""
    message = protocol.error_message("shutting_down", "the server is stopping", fatal=True)
    sockets: set[web.WebSocketResponse] = app[SOCKETS]
    for ws in list(sockets):
        with contextlib.suppress(Exception):
            await ws.send_str(message)
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"shutting_down")


async def serve(config: Config, models: dict[str, Path]) -> None:
    """Run until SIGTERM or SIGINT; then stop accepting, close sessions, stop the workers."""
    core = Core(config, models)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    app = build_app(core)
    # keepalive_timeout also bounds a new connection's wait for its first complete request
    # (aiohttp arms it at connection_made): request line and headers within header_timeout_s.
    runner = web.AppRunner(
        app,
        access_log=None,
        shutdown_timeout=config.shutdown_timeout_s,
        keepalive_timeout=config.header_timeout_s,
    )
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port, backlog=1024)
    await site.start()
    sockets = getattr(site._server, "sockets", None) or []
    ports = sorted({s.getsockname()[1] for s in sockets})
    log.info("listening on http://%s:%s (warming up)", config.host, ports[0] if ports else "?")
    try:
        await core.start()
        log.info("ready: %d workers", config.workers)
        await stop.wait()
        log.info("stopping")
    finally:
        await runner.cleanup()  # stop accepting, close sockets with 1001, wait for handlers
        await core.stop()
        log.info("stopped")
