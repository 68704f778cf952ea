"""The server's side of the inference workers: spawn, dispatch, collect, replace the dead.

Each worker has exactly one frame in inference at a time and a round-robin turn order over the
sessions pinned to it (workers/scheduler.py), so a frame never waits in a queue it could be dropped
from: it waits in its session's slot, where a newer frame can still replace it. What goes to and
comes from a worker is one of the typed messages of workers/messages.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import multiprocessing
import time
from collections.abc import Callable
from typing import Generic

from holistream.protocol import RigOptions
from server.workers import ipc
from server.workers import messages as m
from server.workers.clock import MediaPipeClock
from server.workers.process import WorkerSettings
from server.workers.records import Callbacks, Placed, PredictJob, S, WorkerHandle
from server.workers.spawn import cpu_and_stopped, start_process, stop_processes
from server.workers.watchdog import Watchdog

log = logging.getLogger("holistream.workers")

# All of a worker's single-image jobs share one place in its round-robin, so however many images
# wait, each streaming session still gets at least every other turn.
IMAGES = "images"
# Work items a worker holds at once: one in inference, one ready behind it. A session never has
# two (its slot holds one frame in flight), so latest-frame-wins still applies to every frame
# that is not yet next in line.
DEPTH = 2


class WorkerPool(Generic[S]):
    def __init__(
        self,
        count: int,
        settings: WorkerSettings,
        callbacks: Callbacks[S],
        *,
        max_frame_age_s: float,
        rig_options: Callable[[S], RigOptions | None] = lambda s: None,
        loads: Callable[[], list[float]] = list,
        worker_timeout_s: float = 5.0,
    ) -> None:
        self.settings = settings
        self.callbacks = callbacks
        self.max_frame_age_s = max_frame_age_s
        self.rig_options = rig_options
        # Reserved CPU ms per second per worker: admission's figures (the one count of load).
        self.loads = loads
        self.workers = [WorkerHandle(i) for i in range(count)]
        self.sessions: dict[str, Placed[S]] = {}  # the sessions placed on a worker
        self.jobs: dict[str, PredictJob] = {}
        self._job_ids = itertools.count()
        self._request_ids = itertools.count()
        self.restarts = 0
        self._ctx = multiprocessing.get_context("spawn")
        self._readers: set[asyncio.Task[None]] = set()
        self._closing = False
        self.watchdog = Watchdog(worker_timeout_s)
        self._watcher: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        await asyncio.gather(*(self._spawn(w) for w in self.workers))
        self._watcher = asyncio.create_task(self._watch(), name="worker-watchdog")

    async def _watch(self) -> None:
        """Kill a worker that has work out and is stopped for worker_timeout_s, or silent for
        10 times that (workers/watchdog.py): its reader then sees EOF and replaces it, and its
        sessions are warned as for any death. Calibration (start-up only) is not watched."""
        interval = min(0.5, self.watchdog.timeout_s / 4)
        while True:
            await asyncio.sleep(interval)
            looks = {w.index: (w.has_work(), *cpu_and_stopped(w.pid)) for w in self.workers
                     if w.alive}
            for index in self.watchdog.hung(time.monotonic(), looks):
                worker = self.workers[index]
                log.warning(
                    "worker %d (pid %d) is hung (stopped, or silent for %g s); replacing it",
                    index, worker.pid, self.watchdog.ceiling_s,
                )
                if worker.process is not None:
                    worker.process.kill()

    async def _spawn(self, worker: WorkerHandle) -> None:
        proc, pid, reader, writer = await start_process(self._ctx, worker.index, self.settings)
        worker.process, worker.pid = proc, pid
        worker.reader, worker.writer = reader, writer
        worker.alive = True
        worker.in_flight.clear()
        self.watchdog.heard(worker.index, time.monotonic())
        worker.up.set()
        task = asyncio.create_task(self._read_loop(worker), name=f"worker-{worker.index}-reader")
        self._readers.add(task)
        task.add_done_callback(self._readers.discard)
        log.info("worker %d started (pid %d)", worker.index, worker.pid)

    async def stop(self, timeout: float = 5.0) -> None:
        self._closing = True
        if self._watcher is not None:
            self._watcher.cancel()
        for w in self.workers:
            if w.writer is not None:
                w.writer.close()  # EOF: the worker closes its landmarkers and exits
        await stop_processes([w.process for w in self.workers], timeout)
        for task in list(self._readers):
            task.cancel()

    # -- requests --------------------------------------------------------------------------
    def _send(self, worker: WorkerHandle, msg: m.ToWorker) -> None:
        if worker.alive and worker.writer is not None:
            worker.writer.write(ipc.pack(msg))

    def _number(self) -> int:
        return next(self._request_ids)

    async def _request(
        self, worker: WorkerHandle, msg: m.Open | m.Calibrate | m.GetInfo
    ) -> m.Reply:
        """Send a numbered request and wait for the reply that echoes its number. To a worker
        being replaced, the request is sent once its successor is up (never dropped, so
        never left without an answer)."""
        while not worker.alive:
            await worker.up.wait()
        return await self._submit(worker, msg)

    def _submit(
        self, worker: WorkerHandle, msg: m.Open | m.Calibrate | m.GetInfo
    ) -> asyncio.Future[m.Reply]:
        """Send a numbered request now; the future its reply will resolve."""
        fut: asyncio.Future[m.Reply] = asyncio.get_running_loop().create_future()
        worker.waiters[msg.request] = (msg, fut)
        self._send(worker, msg)
        return fut

    def _open_message(self, session: S) -> m.Open:
        return m.Open(
            self._number(), session.id, session.pipeline, session.wanted, self.rig_options(session)
        )

    def _load(self, worker: WorkerHandle) -> float:
        loads = self.loads()
        return loads[worker.index] if worker.index < len(loads) else 0.0

    def _pick(self) -> WorkerHandle:
        alive = [w for w in self.workers if w.alive] or self.workers
        return min(alive, key=lambda w: (self._load(w), len(w.sessions), w.index))

    def worker_of(self, session: S) -> int | None:
        """The worker the session is placed on, if it is."""
        placed = self.sessions.get(session.id)
        return None if placed is None else placed.worker

    async def open(self, session: S, placement: int | None = None) -> float:
        """Create the session's landmarker on worker `placement` (admission's choice), else on
        the least-loaded one; returns its creation time in ms."""
        placed = self.sessions.get(session.id)
        if placed is None:
            if placement is not None and 0 <= placement < len(self.workers):
                worker = self.workers[placement]
            else:
                worker = self._pick()
            placed = self.sessions[session.id] = Placed(session, worker.index)
            worker.sessions.add(session.id)
        worker = self.workers[placed.worker]
        reply = await self._request(worker, self._open_message(session))
        if isinstance(reply, m.OpenFailed):
            raise RuntimeError(reply.reason)
        assert isinstance(reply, m.Opened)
        self.frame_ready(session)
        return reply.create_ms

    def close(self, session: S) -> None:
        placed = self.sessions.pop(session.id, None)
        if placed is None:
            return
        worker = self.workers[placed.worker]
        worker.sessions.discard(session.id)
        worker.scheduler.remove(session.id)
        self._send(worker, m.Close(session.id))

    def set_rig(self, session: S) -> None:
        placed = self.sessions.get(session.id)
        if placed is not None:
            worker = self.workers[placed.worker]
            self._send(worker, m.SetRig(session.id, self.rig_options(session)))

    async def calibrate(self, images: dict[str, bytes], frames: int) -> list[m.Calibrated]:
        """Every live worker's measurements (workers/process.py Worker.calibrate)."""
        replies = await asyncio.gather(
            *(
                self._request(w, m.Calibrate(self._number(), images, frames))
                for w in self.workers
                if w.alive
            )
        )
        return [r for r in replies if isinstance(r, m.Calibrated)]

    async def info(self) -> list[m.Info]:
        """Every live worker's process figures; waits for each worker's current work."""
        replies = await asyncio.gather(
            *(self._request(w, m.GetInfo(self._number())) for w in self.workers if w.alive)
        )
        return [r for r in replies if isinstance(r, m.Info)]

    @property
    def alive(self) -> int:
        """Workers running now."""
        return sum(1 for w in self.workers if w.alive)

    # -- single images ---------------------------------------------------------------------
    @property
    def predict_backlog(self) -> int:
        """Single-image jobs accepted and not yet started."""
        return sum(1 for job in self.jobs.values() if not job.started)

    async def predict(
        self, pipeline: str, wanted: tuple[str, ...], data: bytes, *, exact: bool = False
    ) -> m.Predicted | m.PredictError:
        """Run one image on the least busy worker; the worker's images take one turn together
        in its round-robin. Cancelling the call before the job starts withdraws it (a client
        that left frees its place)."""
        alive = [w for w in self.workers if w.alive] or self.workers
        worker = min(
            alive,
            key=lambda w: (len(w.images) + len(w.scheduler) + len(w.in_flight), self._load(w)),
        )
        key = f"predict:{next(self._job_ids)}"
        future: asyncio.Future[m.Predicted | m.PredictError] = (
            asyncio.get_running_loop().create_future()
        )
        job = PredictJob(key, pipeline, wanted, data, future, exact)
        self.jobs[key] = job
        worker.images.append(job)
        worker.scheduler.ready(IMAGES)
        self._pump(worker)
        try:
            return await job.future
        finally:
            self.jobs.pop(key, None)
            if not job.started:
                worker.images.remove(job)
                if not worker.images:
                    worker.scheduler.remove(IMAGES)

    # -- frames ----------------------------------------------------------------------------
    def frame_ready(self, session: S) -> None:
        placed = self.sessions.get(session.id)
        if placed is None or not session.slot.has_waiting:
            return
        worker = self.workers[placed.worker]
        worker.scheduler.ready(session.id)
        self._pump(worker)

    def _pump(self, worker: WorkerHandle) -> None:
        """Keep the worker fed: the next sessions' frames, round-robin, skipping stale ones."""
        now = time.monotonic()
        while worker.alive and len(worker.in_flight) < DEPTH:
            sid = worker.scheduler.next()
            if sid is None:
                return
            if sid == IMAGES:
                if not worker.images:
                    continue
                job = worker.images.popleft()
                if worker.images:
                    worker.scheduler.ready(IMAGES)  # the next image waits for the next round
                job.started = True
                worker.in_flight.append(job.key)
                self._send(
                    worker, m.Predict(job.key, job.pipeline, job.wanted, job.data, job.exact)
                )
                continue
            placed = self.sessions.get(sid)
            if placed is None:
                continue
            pending = placed.session.slot.take(now, self.max_frame_age_s)
            if pending is None:
                continue
            mp_ts = placed.clock.stamp(pending.payload.ts)
            worker.in_flight.append(sid)
            self._send(worker, m.Frame(sid, pending.frame_id, mp_ts, pending.payload.image))

    async def _read_loop(self, worker: WorkerHandle) -> None:
        reader = worker.reader
        assert reader is not None
        try:
            while True:
                msg = await ipc.recv_async(reader)
                self.watchdog.heard(worker.index, time.monotonic())
                self._dispatch(worker, msg)
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        except ipc.ProtocolError as exc:
            log.error("worker %d: %s; replacing it", worker.index, exc)
            if worker.process is not None:
                worker.process.kill()
        if not self._closing:
            await self._replace(worker)

    def _dispatch(self, worker: WorkerHandle, msg: m.FromWorker) -> None:
        match msg:
            case m.FrameResult() | m.FrameError():
                self._frame_done(worker, msg)
            case m.Predicted() | m.PredictError():
                self._done(worker, msg.key)
                job = self.jobs.get(msg.key)
                if job is not None and not job.future.done():
                    job.future.set_result(msg)
                self._pump(worker)
            case m.Opened() | m.OpenFailed() | m.Calibrated() | m.Info():
                _, fut = worker.waiters.pop(msg.request, (None, None))
                if fut is not None and not fut.done():
                    fut.set_result(msg)
            case m.Hello():
                log.warning("worker %d said hello twice", worker.index)

    def _frame_done(self, worker: WorkerHandle, msg: m.FrameResult | m.FrameError) -> None:
        self._done(worker, msg.sid)
        placed = self.sessions.get(msg.sid)
        if placed is not None:
            session = placed.session
            if isinstance(msg, m.FrameResult):
                pending = session.slot.finish(msg.frame_id)
                if pending is not None:
                    self.callbacks.result(session, pending, msg)
            else:
                pending = session.slot.fail_in_flight("")
                if pending is not None:
                    self.callbacks.frame_error(session, pending, msg.code, msg.message)
            if session.slot.has_waiting:
                worker.scheduler.ready(msg.sid)
        self._pump(worker)

    @staticmethod
    def _done(worker: WorkerHandle, key: str) -> None:
        """The worker answered for `key` (replies come in the order work was sent)."""
        with contextlib.suppress(ValueError):
            worker.in_flight.remove(key)

    async def _replace(self, worker: WorkerHandle) -> None:
        """A worker died: account for its frame, start a new one, reopen its sessions there.
        Sessions placed on it while it is being replaced open on the new one by themselves."""
        worker.alive = False
        worker.up.clear()
        reopen = list(worker.sessions)
        self.restarts += 1
        worker.restarts += 1
        log.warning("worker %d (pid %d) died; replacing it", worker.index, worker.pid)
        if worker.process is not None:
            worker.process.join(0.5)
        lost = list(worker.in_flight)
        worker.in_flight.clear()
        pending_waiters = dict(worker.waiters)
        worker.waiters.clear()
        for key in lost:
            if key in self.sessions:
                self.sessions[key].session.slot.fail_in_flight("worker_lost")
            if key in self.jobs and not self.jobs[key].future.done():
                self.jobs[key].future.set_exception(ConnectionError("the worker died"))
        await asyncio.sleep(min(0.2 * worker.restarts, 2.0))
        await self._spawn(worker)
        # Every reopen is written before anything else can be: the worker serves in order, so
        # no frame of these sessions can reach it before their landmarkers exist. Each gets a
        # new landmarker, so its clock starts again.
        placed = [self.sessions[sid] for sid in reopen if sid in self.sessions]
        for record in placed:
            record.clock = MediaPipeClock()
        reopened = [self._submit(worker, self._open_message(p.session)) for p in placed]
        await asyncio.gather(*reopened, return_exceptions=True)
        for session in (p.session for p in placed):
            self.callbacks.worker_lost(session)
            self.frame_ready(session)
        for request, fut in pending_waiters.values():
            if fut.done():
                continue
            if isinstance(request, m.Open):  # reopened above, like the worker's other sessions
                fut.set_result(m.Opened(request.request, request.sid, "", 0.0))
            else:
                fut.set_exception(ConnectionError("worker died"))
