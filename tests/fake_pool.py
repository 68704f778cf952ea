"""The real WorkerPool with in-process fake workers, for the fast tier.

Everything the pool decides (placement, turns, at most DEPTH items per worker, slots, replacing a
dead worker) runs as in production; only the worker processes are replaced: each typed request
(server.workers.messages) is answered on a later loop turn, in order, as a worker would. Frames
can be held in the worker (`hold`) to see what waits where.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

import numpy as np

from holistream import protocol
from holistream.rig.skeleton import Rig
from server.sessions.admission import DEFAULT_COSTS
from server.sessions.session import Session
from server.workers import messages as m
from server.workers.pool import WorkerPool
from server.workers.records import WorkerHandle

WIDTH, HEIGHT = 640, 480


def fake_parts(wanted: tuple[str, ...], value: float = 0.5) -> m.Parts:
    return {
        name: protocol.round_landmarks(
            np.full((protocol.PART_POINTS[name], protocol.PART_STRIDES[name]), value)
        )
        for name in wanted
    }


class FakeWorkerPool(WorkerPool[Session]):
    hold = False  # keep frames in the worker until release()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sent: list[tuple[int, m.ToWorker]] = []
        self.held: list[tuple[WorkerHandle, m.FromWorker]] = []
        self.opened: dict[int, dict[str, m.Open]] = defaultdict(dict)  # worker -> its sessions

    async def _spawn(self, worker: WorkerHandle) -> None:
        worker.pid = 100_000 + 100 * worker.index + worker.restarts
        worker.alive = True
        worker.in_flight.clear()
        self.opened[worker.index].clear()

    async def stop(self, timeout: float = 5.0) -> None:
        self._closing = True
        for worker in self.workers:
            worker.alive = False

    def _send(self, worker: WorkerHandle, msg: m.ToWorker) -> None:
        if not worker.alive:
            return
        self.sent.append((worker.index, msg))
        reply = self.answer(worker, msg)
        if reply is None:
            return
        if self.hold and isinstance(reply, m.FrameResult | m.Predicted):
            self.held.append((worker, reply))
            return
        asyncio.get_running_loop().call_soon(self._deliver, worker, reply)

    def _deliver(self, worker: WorkerHandle, reply: m.FromWorker) -> None:
        if worker.alive:
            self._dispatch(worker, reply)

    def release(self) -> None:
        """Answer the held frames and images, in order."""
        self.hold = False
        held, self.held = self.held, []
        for worker, reply in held:
            self._deliver(worker, reply)

    def kill(self, index: int) -> asyncio.Task[None]:
        """The worker dies: the pool replaces it as it would a crashed process."""
        self.workers[index].alive = False
        self.held = [(w, r) for w, r in self.held if w.index != index]
        return asyncio.create_task(self._replace(self.workers[index]))

    def answer(self, worker: WorkerHandle, msg: m.ToWorker) -> m.FromWorker | None:
        opened = self.opened[worker.index]
        match msg:
            case m.Open():
                opened[msg.sid] = msg
                return m.Opened(msg.request, msg.sid, msg.pipeline, 1.0)
            case m.Close():
                opened.pop(msg.sid, None)
            case m.SetRig():
                if msg.sid in opened:
                    opened[msg.sid] = m.Open(0, msg.sid, opened[msg.sid].pipeline,
                                             opened[msg.sid].wanted, msg.rig)
            case m.Frame():
                session = opened.get(msg.sid)
                if session is None:
                    return m.FrameError(msg.sid, msg.frame_id, "internal", "not open")
                if msg.image == b"bad":
                    return m.FrameError(msg.sid, msg.frame_id, "undecodable", "not an image")
                rig = Rig.rest() if session.rig is not None else None
                return m.FrameResult(
                    msg.sid, msg.frame_id, WIDTH, HEIGHT, fake_parts(session.wanted),
                    decode_ms=1.0, inference_ms=2.0, pipeline=session.pipeline,
                    rig_json=rig.to_json() if rig else None,
                    rig_arrays=rig.to_arrays() if rig else None, cpu_s=0.002,
                )
            case m.Predict():
                image = m.ImageLandmarks(WIDTH, HEIGHT, fake_parts(msg.wanted), 1.0, 2.0)
                return m.Predicted(msg.key, image)
            case m.Calibrate():
                costs = {
                    name: m.PipelineMeasure(DEFAULT_COSTS[name].ms_per_frame,
                                            DEFAULT_COSTS[name].memory_bytes)
                    for name in msg.images
                }
                return m.Calibrated(msg.request, costs)
            case m.GetInfo():
                return m.Info(msg.request, worker.pid, len(opened), 1 << 20)
        return None
