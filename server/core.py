"""The running server's state: sessions, workers, admission, metrics — without HTTP.

The aiohttp handlers (server/http/) translate requests into calls here; everything that decides
what happens to a frame or a session lives here or in the pure modules it uses. What the workers
answer is delivered by server/delivery.py; docs/architecture.md draws the whole path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import psutil

from holistream import protocol
from server import __version__
from server.config import Config
from server.delivery import Delivery
from server.http.rate_limit import AddressLimits
from server.memory import usable_memory_bytes
from server.metrics import InstanceState, Metrics
from server.predict.worker import COMPOSITE_EXTRA_BYTES
from server.sessions.admission import DEFAULT_COSTS, AdmissionPolicy, Budget, Decision
from server.sessions.session import FramePayload, Session
from server.streams.hub import Stream, StreamHub, Subscriber
from server.streams.relay import RedisRelay
from server.workers.calibration import FRAMES, calibration_images, measured_costs
from server.workers.messages import Predicted, PredictError
from server.workers.pool import WorkerPool
from server.workers.process import WorkerSettings

log = logging.getLogger("holistream")

class Core:
    def __init__(
        self,
        config: Config,
        models: dict[str, Path],
        *,
        pool_class: type[WorkerPool[Session]] = WorkerPool,
    ) -> None:
        """`pool_class` is the seam for tests: a pool whose workers are in-process fakes."""
        self.config = config
        self.models = models
        self.sessions: dict[str, Session] = {}
        # Per session, while a frame its grant holds back waits: the timer that releases it.
        self._release_timers: dict[str, asyncio.TimerHandle] = {}
        self.ready = False
        self.stopping = False
        self.started = time.monotonic()
        # 0 = 70 % of the free memory, capped by a container's or pod's memory limit.
        memory = config.memory_budget_mb * (1 << 20) or 0.7 * usable_memory_bytes(
            psutil.virtual_memory().available
        )
        self.admission = AdmissionPolicy(
            Budget(
                min(config.workers * 1.35, config.cpus),  # cpus: affinity, cgroup quota, --cpus
                int(memory),
                config.max_sessions,
                config.cpu_overcommit,
                config.workers,
                config.floor_fps,
            ),
            DEFAULT_COSTS,
        )
        self.metrics = Metrics(
            lambda: [w.pid for w in self.pool.workers if w.alive], lambda: self.pool.restarts
        )
        self.metrics.cpus.set(config.cpus)
        self.metrics.watch(self._state)
        self._ticker: asyncio.Task[None] | None = None
        self.limits = AddressLimits(
            config.connect_rate_per_address,
            config.connect_burst_per_address,
            config.max_sessions_per_address,
            config.rate_limit_exempt,
        )
        self.hub = StreamHub()
        self.delivery = Delivery(
            self.admission, self.hub, self.metrics, lambda: self.regrant(recompute=False)
        )
        self.pool = pool_class(
            config.workers,
            WorkerSettings(models, config.max_image_pixels, config.max_image_side),
            self.delivery.callbacks(),
            max_frame_age_s=config.max_frame_age_ms / 1000,
            rig_options=self._rig_options,
            loads=self.admission.worker_loads,
            worker_timeout_s=config.worker_timeout_s,
        )
        self.hub.rig_changed = self.pool.set_rig
        # Without Redis, streams stay on this instance (nginx routes a name to one instance).
        self.relay = RedisRelay(config.redis_url, self.hub) if config.redis_url else None
        self.hub.relay = self.relay
        self.version = __version__

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        if self.relay is not None:
            await self.relay.start()  # connects in the background while the workers warm up
        await self.pool.start()
        if self.config.calibrate:
            await self._calibrate()
        # Single images, per worker: the fast path's pose and face landmarkers, and one clean
        # holistic landmarker kept ready once the exact path has been used (docs/predict.md).
        per_worker = COMPOSITE_EXTRA_BYTES + sum(
            self.admission.costs[name].memory_bytes
            for name in ("holistic", "pose", "face") if name in self.models
        )
        self.admission.reserved_bytes = self.config.workers * per_worker
        self._publish_capacity()
        self._ticker = asyncio.create_task(self._tick_stats(), name="stats-ticker")
        self.ready = True

    async def _calibrate(self) -> None:
        """Measure each pipeline's CPU cost per frame and memory per landmarker."""
        images = calibration_images(list(self.models))
        replies = await self.pool.calibrate(images, FRAMES)
        self.admission.costs.update(measured_costs(replies, DEFAULT_COSTS))
        log.info(
            "calibrated: %s",
            ", ".join(
                f"{n} {c.ms_per_frame:.1f} ms/frame {c.memory_bytes >> 20} MiB"
                for n, c in self.admission.costs.items()
            ),
        )

    async def stop(self) -> None:
        self.ready = False
        self.stopping = True
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        if self.relay is not None:
            await self.relay.stop()
        await self.pool.stop(self.config.shutdown_timeout_s)

    def _rig_options(self, session: Session) -> protocol.RigOptions | None:
        """The session's own rig options, else those of the first subscriber that asked, else
        defaults when only a subscriber on another instance asked."""
        if session.hello is not None and session.hello.rig is not None:
            return session.hello.rig
        if not self.hub.wants_rig(session):
            return None
        return self.hub.rig_options(session) or protocol.RigOptions()

    def _state(self) -> InstanceState:
        a = self.admission
        return InstanceState(
            self.ready,
            sum(w.alive for w in self.pool.workers),
            a.budget.cpu_ms_per_s,
            a.cpu_used,
            a.budget.memory_bytes,
            a.memory_used + a.reserved_bytes,
        )

    # -- admission -------------------------------------------------------------------------
    def admit(self, key: Any, pipeline: str, fps: float) -> Decision:
        """Admit a session asking `fps`; the others' grants shrink to make room (told now)."""
        if pipeline not in self.models:
            return Decision(False, f"the {pipeline} pipeline has no model on this server")
        decision = self.admission.admit(key, pipeline, fps)
        if not decision.admitted:
            self.metrics.rejected.labels("capacity").inc()
        else:
            self.regrant(recompute=False)
        return decision

    def would_admit(self, pipeline: str, fps: float) -> Decision:
        """Would a session fit now? Reserves nothing (that waits for its hello)."""
        if pipeline not in self.models:
            return Decision(False, f"the {pipeline} pipeline has no model on this server")
        decision = self.admission.check(pipeline, fps)
        if not decision.admitted:
            self.metrics.rejected.labels("capacity").inc()
        return decision

    def release(self, key: Any) -> None:
        if self.admission.worker_of(key) is not None:
            self.admission.release(key)
            self.regrant(recompute=False)

    # -- grants ----------------------------------------------------------------------------
    def regrant(self, *, recompute: bool = True, configured: Session | None = None) -> None:
        """Share capacity again (measured costs moved, a session came or went) and tell each
        live session whose grant moved enough to matter (`grant` message, docs/protocol.md)."""
        grants = self.admission.regrant() if recompute else self.admission.grants
        for session in self.sessions.values():
            fps = grants.get(session.id)
            if fps is not None:
                session.regrant(fps, self.config.floor_fps, configured=session is configured)
        self.metrics.granted_fps.set(sum(grants.values()))

    def grant_for_ready(self, session: Session) -> dict[str, float]:
        """The grant `ready` carries; from then on the session is held to it."""
        return session.grant_ready(self.admission.grant_of(session.id), self.config.floor_fps)

    def _publish_capacity(self) -> None:
        for name in protocol.PIPELINES:
            if name in self.models:
                self.metrics.capacity.labels(name).set(self.admission.capacity(name))
                self.metrics.capacity_fps.labels(name).set(self.admission.capacity_fps(name))
                self.metrics.cost_ms.labels(name).set(self.admission.costs[name].ms_per_frame)

    # -- sessions --------------------------------------------------------------------------
    def new_session(
        self, *, peer: str, stream: str | None, wake: Callable[[], None] = lambda: None
    ) -> Session:
        """A session whose dropped frames count in the metrics; `wake` wakes its sender."""
        return Session(peer=peer, stream=stream, wake=wake, on_drop=self._count_drop)

    def _count_drop(self, reason: str) -> None:
        self.metrics.frames_dropped.labels(reason).inc()
        self.admission.observe_drop(reason)

    def add(self, session: Session) -> None:
        self.sessions[session.id] = session
        self.metrics.sessions.labels(session.pipeline).inc()

    async def open(self, session: Session) -> float:
        return await self.pool.open(session, self.admission.worker_of(session.id))

    def remove(self, session: Session) -> None:
        if self.sessions.pop(session.id, None) is None:
            return
        if session.stream is not None:
            self.hub.unpublish(session)
        self.metrics.sessions.labels(session.pipeline).dec()
        timer = self._release_timers.pop(session.id, None)
        if timer is not None:
            timer.cancel()
        session.slot.clear("closing")
        self.pool.close(session)
        self.release(session.id)

    async def reconfigure(self, session: Session, hello: protocol.Hello) -> Decision:
        pipeline = protocol.pipeline_for(hello.parts, hello.model)
        old = session.hello
        if old is not None and replace(old, fps=hello.fps) == hello:
            # Only the rate asked for changed: a new grant, same landmarker and worker.
            decision = self.admission.admit(session.id, pipeline, hello.fps, keep_worker=True)
            if decision.admitted:
                session.configure(hello)
                self.regrant(recompute=False, configured=session)
            return decision
        decision = self.admit(session.id, pipeline, hello.fps)
        if not decision.admitted:
            return decision
        self.metrics.sessions.labels(session.pipeline).dec()
        session.switch(hello)
        self.pool.close(session)
        self.metrics.sessions.labels(session.pipeline).inc()
        await self.pool.open(session, decision.worker)
        self.regrant(recompute=False, configured=session)
        return decision

    def change_rig(self, session: Session, hello: protocol.Hello) -> None:
        """Only the rig's options changed: the worker changes them in place (no new landmarker,
        no new grant)."""
        session.configure(hello)
        self.pool.set_rig(session)

    def frame(self, session: Session, frame_id: int, ts: float, image: bytes) -> None:
        self.metrics.frames_received.inc()
        wait = session.offer(frame_id, FramePayload(ts, image), time.monotonic())
        if wait <= 0:
            self.pool.frame_ready(session)
        elif session.id not in self._release_timers:
            self._arm_release(session, wait)

    def _arm_release(self, session: Session, wait: float) -> None:
        loop = asyncio.get_running_loop()
        self._release_timers[session.id] = loop.call_later(wait, self._release, session)

    def _release(self, session: Session) -> None:
        """A frame held back by the session's grant may go now (server/sessions/pacer.py)."""
        self._release_timers.pop(session.id, None)
        if session.id not in self.sessions:
            return
        wait = session.release(time.monotonic())
        if wait > 0:
            self._arm_release(session, wait)
        else:
            self.pool.frame_ready(session)

    # -- single images ---------------------------------------------------------------------
    async def predict(
        self, pipeline: str, wanted: tuple[str, ...], data: bytes, *, exact: bool = False
    ) -> Predicted | PredictError:
        """One independent image on the least busy worker (WorkerPool.predict)."""
        return await self.pool.predict(pipeline, wanted, data, exact=exact)

    @property
    def predict_backlog(self) -> int:
        """Single-image jobs accepted and not yet started."""
        return self.pool.predict_backlog

    # -- workers ---------------------------------------------------------------------------
    @property
    def workers_alive(self) -> int:
        return self.pool.alive

    def worker_states(self) -> list[dict[str, Any]]:
        """Each worker's index, pid and whether it runs (for /readyz)."""
        return [{"index": w.index, "pid": w.pid, "alive": w.alive} for w in self.pool.workers]

    async def landmarkers(self) -> dict[int, int]:
        """Live landmarkers per worker pid; waits for each worker's current frame."""
        return {info.pid: info.landmarkers for info in await self.pool.info()}

    # -- streams ---------------------------------------------------------------------------
    def stream_live(self, name: str) -> bool:
        """A producer here, or (with Redis) one on another instance as last heard of."""
        return self.hub.has_producer(name) or (
            self.relay is not None and self.relay.remote_live(name)
        )

    def publish(self, session: Session) -> bool:
        """Publish the session's results under its stream name; False if the name is taken."""
        assert session.stream is not None
        if self.stream_live(session.stream):
            return False
        self.hub.publish(session)
        return True

    def subscribe(self, sub: Subscriber) -> Stream:
        return self.hub.subscribe(sub)

    def unsubscribe(self, sub: Subscriber) -> None:
        self.hub.unsubscribe(sub)

    async def list_streams(self) -> list[dict[str, Any]]:
        local = self.hub.list(time.monotonic())
        return local if self.relay is None else await self.relay.list_streams(local)

    def refuse_frame(self, session: Session, code: str, message: str, frame: int | None) -> None:
        self.metrics.frames_received.inc()
        self.metrics.frame_errors.labels(code).inc()
        session.refuse(code, message, frame)

    async def _tick_stats(self) -> None:
        interval = self.config.stats_interval_s
        cpu, wall = time.process_time(), time.monotonic()
        while True:
            await asyncio.sleep(interval)
            # The front end's own CPU (sockets, JSON, refusals) is not the workers' to use.
            cpu_now, wall_now = time.process_time(), time.monotonic()
            self.admission.observe_front((cpu_now - cpu) / max(wall_now - wall, 1e-3))
            self.admission.observe_second()
            cpu, wall = cpu_now, wall_now
            self.regrant()  # measured costs moved the capacity
            self._publish_capacity()
            now = time.monotonic()
            for session in list(self.sessions.values()):
                if session.live:
                    session.send_control(protocol.dumps(session.stats(now)))
            for sub in self.hub.stalled(now, self.config.subscriber_stall_s):
                sub.stall()
