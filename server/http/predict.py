"""`POST /v1/predict`: one image in, its landmarks out (docs/predict.md).

The order is chosen for overload: refusals that cost nothing come first (access, options, body
type and size, the image header), then the cache (a hit is served even when the workers are
saturated), then admission (503 at once when the job could not start in time), and only then a
worker. While a job waits, the handler watches the client: one that went away withdraws its job,
so an abandoned request never costs inference.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from pathlib import Path
from typing import Any

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from holistream import protocol
from server.core import Core
from server.http.common import CORE, access_error, http_error
from server.predict.cache import PredictCache, make_cache
from server.predict.policy import (
    Options,
    RequestError,
    StartEstimator,
    Verdict,
    body_kind,
    cache_key,
    image_error,
    landmark_body,
    parse_options,
    probe,
    response_body,
)
from server.predict.worker import COMPOSITE_MODELS
from server.workers.messages import Predicted, PredictError

log = logging.getLogger("holistream.predict")

MULTIPART_SLACK = 64 * 1024  # headers and boundaries around the file field
WATCH_S = 0.05  # how often a waiting handler checks that its client is still there


class ClientGone(Exception):
    """The client closed its connection while its job waited or ran."""


class PredictService:
    """Per-server state of the endpoint: the cache, the start estimator, the model ids."""

    def __init__(self, core: Core) -> None:
        self.core = core
        cfg = core.config
        self.cache: PredictCache = make_cache(cfg.redis_url, cfg.cache_entries)
        self.estimator = StartEstimator()
        self._model_ids: dict[str, str] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def model_id(self, pipeline: str) -> str:
        """Identifies the model file, so caches shared by instances never mix models."""
        if pipeline not in self._model_ids:
            path = Path(self.core.models[pipeline])
            sidecar = path.with_name(path.name + ".sha256")
            try:
                ident = sidecar.read_text().split()[0]
            except (OSError, IndexError):
                ident = f"{path.name}:{path.stat().st_size}"
            self._model_ids[pipeline] = ident
        return self._model_ids[pipeline]

    def remember(self, key: str, body: bytes) -> None:
        """Store in the background: the response never waits for the cache."""
        task = asyncio.create_task(self.cache.put(key, body), name="predict-cache-put")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


_services: weakref.WeakKeyDictionary[Core, PredictService] = weakref.WeakKeyDictionary()


def service(core: Core) -> PredictService:
    svc = _services.get(core)
    if svc is None:
        svc = _services[core] = PredictService(core)
    return svc


async def read_image(request: web.Request, limit: int) -> bytes:
    """The image bytes: the raw body, or the multipart field `file` wherever it comes among the
    fields (the others are ignored); at most `limit` bytes of image, `limit + MULTIPART_SLACK`
    of body."""
    kind = body_kind(request.content_type)
    declared = request.content_length
    slack = MULTIPART_SLACK if kind == "multipart" else 0
    too_large = RequestError(413, "body_too_large", f"the image is larger than {limit} bytes")
    if declared is not None and declared > limit + slack:
        raise too_large
    if kind == "raw":
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise too_large from None
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if request.content.total_bytes > limit + slack:
                raise too_large
            if not isinstance(part, BodyPartReader) or part.name != "file":
                await part.release()
                continue
            data = bytearray()
            while chunk := await part.read_chunk(64 * 1024):
                data += chunk
                if len(data) > limit:
                    raise too_large
            return bytes(data)
    except (ValueError, AssertionError, UnicodeError, HttpProcessingError):
        # Part headers without a colon, with NUL bytes or too long, bad boundaries: the
        # parser's own words may quote the raw bytes, so they are not echoed.
        raise RequestError(400, "bad_request", "malformed multipart body") from None
    raise RequestError(400, "no_image", "the multipart body has no field 'file'")


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def _watch(request: web.Request, handler: asyncio.Task[Any], gone: list[bool]) -> None:
    """Cancel the handler when its client disconnects (aiohttp does not, by default)."""
    while not _client_gone(request):
        await asyncio.sleep(WATCH_S)
    gone.append(True)
    handler.cancel()


async def _run_job(
    request: web.Request, core: Core, options: Options, data: bytes
) -> Predicted | PredictError:
    """The worker's reply; TimeoutError after predict_timeout_s, ClientGone if the client left.

    The pool call is awaited directly, so the job is queued in the same step as the admission
    check before it (no other request can slip in between); cancelling it withdraws a job that
    has not started."""
    handler = asyncio.current_task()
    assert handler is not None
    gone: list[bool] = []
    watcher = asyncio.create_task(_watch(request, handler, gone), name="predict-watch")
    try:
        async with asyncio.timeout(core.config.predict_timeout_s):
            return await core.predict(options.pipeline, options.wanted, data, exact=options.exact)
    except asyncio.CancelledError:
        if not gone:
            raise
        handler.uncancel()
        raise ClientGone from None
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


def _models_needed(options: Options) -> tuple[str, ...]:
    """The model files an answer depends on (the fast holistic path runs three bundles)."""
    if options.pipeline == "holistic" and not options.exact:
        return COMPOSITE_MODELS
    return (options.pipeline,)


def _admission(core: Core, svc: PredictService) -> Verdict:
    cfg = core.config
    return svc.estimator.decide(
        backlog=core.predict_backlog,
        workers=core.workers_alive,
        queue_limit=cfg.predict_queue,
        timeout_s=cfg.predict_timeout_s,
        retry_cap_s=cfg.retry_after_s,
    )


def _refuse(core: Core, exc: RequestError, retry_after: int | None = None) -> web.Response:
    core.metrics.predictions.labels(exc.code).inc()
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return http_error(exc.status, exc.code, exc.message, headers=headers)


async def predict(request: web.Request) -> web.StreamResponse:
    started = time.perf_counter()
    core: Core = request.app[CORE]
    cfg = core.config
    refused = access_error(request)
    if refused is not None:
        core.metrics.predictions.labels("refused").inc()
        return refused
    svc = service(core)
    try:
        options = parse_options(request.query)
        body_kind(request.content_type)
        if svc.cache.name == "off" and not (verdict := _admission(core, svc)).admitted:
            # Nothing could answer it without a worker: refuse before reading the upload.
            return _refuse(core, RequestError(503, "server_full", verdict.reason),
                           verdict.retry_after_s)
        data = await read_image(request, cfg.max_message_bytes)
        probe(data, max_pixels=cfg.max_image_pixels, max_side=cfg.max_image_side)
        if not core.ready:
            error = RequestError(503, "not_ready", "the server is warming up")
            return _refuse(core, error, cfg.retry_after_s)
        needed = _models_needed(options)
        if missing := [name for name in needed if name not in core.models]:
            raise RequestError(
                503, "pipeline_unavailable", f"no {', '.join(missing)} model on this server"
            )
    except RequestError as exc:
        return _refuse(core, exc)

    key = cache_key(data, options, ",".join(svc.model_id(name) for name in needed))
    cached = await svc.cache.get(key)
    if cached is not None:
        total_ms = (time.perf_counter() - started) * 1000
        core.metrics.predictions.labels("cache_hit").inc()
        body = response_body(cached, protocol.Timing(total_ms=total_ms), "hit")
        return web.Response(body=body, content_type="application/json")

    workers = core.workers_alive
    ahead = core.predict_backlog
    verdict = _admission(core, svc)
    if not verdict.admitted:
        error = RequestError(503, "server_full", verdict.reason)
        return _refuse(core, error, verdict.retry_after_s)

    submitted = time.perf_counter()
    try:
        reply = await _run_job(request, core, options, data)
    except TimeoutError:
        # At least this long: the estimator must learn that images have become slow.
        svc.estimator.observe(cfg.predict_timeout_s, ahead, max(workers, 1))
        error = RequestError(
            504, "timeout", f"no result within {cfg.predict_timeout_s:g} s; try again later"
        )
        return _refuse(core, error)
    except ClientGone:
        core.metrics.predictions.labels("client_gone").inc()
        log.debug("predict: client left before its result")
        return web.Response(status=499)
    except ConnectionError:
        error = RequestError(503, "worker_lost", "the worker died while processing the image")
        return _refuse(core, error, 1)
    job_s = time.perf_counter() - submitted
    svc.estimator.observe(job_s, ahead, max(workers, 1))

    if isinstance(reply, PredictError):
        if reply.code == "internal":
            log.error("predict: inference failed: %s", reply.message)
        return _refuse(core, image_error(reply.code, reply.message))
    width, height, parts, decode_ms, inference_ms = reply.image
    landmarks = landmark_body(width, height, options.pipeline, parts, options.mode)
    svc.remember(key, landmarks)
    total_ms = (time.perf_counter() - started) * 1000
    timing = protocol.Timing(
        queue_ms=max(job_s * 1000 - decode_ms - inference_ms, 0.0),
        decode_ms=decode_ms,
        inference_ms=inference_ms,
        total_ms=total_ms,
    )
    core.metrics.predictions.labels("ok").inc()
    body = response_body(landmarks, timing, "miss")
    return web.Response(body=body, content_type="application/json")
