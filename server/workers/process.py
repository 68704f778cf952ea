"""The inference worker: a child process that owns its sessions' landmarkers.

It serves one message at a time from the server over a socketpair: the typed requests and replies
of workers/messages.py, carried by workers/ipc.py. One VIDEO-mode
landmarker per session, created on `open` and closed on `close`; the image is decoded here, as
RGB, so the server's event loop never touches pixels. EOF on the socket means the server is gone:
the worker then exits, so it can never outlive its server.
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from holistream.protocol import RigOptions
from server.logs import filter_native_logs
from server.workers import ipc
from server.workers import messages as m
from server.workers.fallback import CHEAP, HOLISTIC, FallbackPolicy, found_parts, targets

if TYPE_CHECKING:  # heavy: imported in the worker when needed
    from server.predict.worker import ImagePredictor
    from server.rig.session import RigSession
    from server.workers.imaging import RGB
    from server.workers.pipelines import Detector, Parts


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    models: dict[str, Path]
    max_pixels: int
    max_side: int


@dataclass(slots=True)
class _Tracker:
    """A session's landmarkers: its own pipeline's, plus Holistic while a cheap one needs it."""

    pipeline: str
    wanted: tuple[str, ...]
    rig: RigSession | None
    create: Callable[[str], Detector]  # pipeline -> a fresh VIDEO landmarker for this session
    detectors: dict[str, Detector] = field(default_factory=dict)
    policy: FallbackPolicy | None = None  # server.workers.fallback; None for holistic sessions

    def detect(self, rgb: RGB, mp_ts: int) -> tuple[Parts, str, str | None]:
        """Run what the policy plans; returns (parts, pipeline that produced them, switch)."""
        if self.policy is None:
            return self.detectors[self.pipeline].detect(rgb, mp_ts), self.pipeline, None
        runs = {}
        for name in self.policy.plan():
            if name not in self.detectors:
                self.detectors[name] = self.create(name)
            runs[name] = self.detectors[name].detect(rgb, mp_ts)
        verdict = self.policy.observe({n: found_parts(r) for n, r in runs.items()})
        for name in verdict.close:
            self.detectors.pop(name).close()
        return runs[verdict.deliver], verdict.deliver, verdict.switched

    def close(self) -> None:
        for detector in self.detectors.values():
            detector.close()
        self.detectors.clear()

    def reset(self, rig: RigSession | None) -> None:
        """Fresh landmarkers (and rig) after one of them raised: its graph may be unusable."""
        for detector in self.detectors.values():
            with contextlib.suppress(Exception):
                detector.close()
        self.detectors.clear()
        self.detectors[self.pipeline] = self.create(self.pipeline)
        if self.policy is not None:
            self.policy = FallbackPolicy(self.pipeline, targets(self.wanted))
        self.rig = rig


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Worker:
    def __init__(self, sock: socket.socket, index: int, settings: WorkerSettings) -> None:
        from server.workers import imaging, pipelines  # heavy: only in the child

        self._imaging = imaging
        self._pipelines = pipelines
        self.sock = sock
        self.index = index
        self.settings = settings
        self.trackers: dict[str, _Tracker] = {}
        self._predictor: ImagePredictor | None = None
        # Process CPU time when the previous message was done: a frame is charged everything the
        # process burnt since (MediaPipe's threads also work, and spin, between detect calls).
        self._cpu_mark = time.process_time()

    # -- message handlers ------------------------------------------------------------------
    def open(self, msg: m.Open) -> m.Opened | m.OpenFailed:
        sid, pipeline, wanted = msg.sid, msg.pipeline, msg.wanted
        old = self.trackers.pop(sid, None)
        if old is not None:
            old.close()
        t0 = time.perf_counter()
        models = self.settings.models

        def create(name: str) -> Detector:
            return self._pipelines.create(name, models[name], wanted)

        tracker = _Tracker(pipeline, wanted, None, create)
        try:
            tracker.detectors[pipeline] = create(pipeline)
        except Exception as exc:  # a broken model must not kill the worker's other sessions
            return m.OpenFailed(msg.request, sid, f"{type(exc).__name__}: {exc}")
        if pipeline in CHEAP and HOLISTIC in models:  # holistic_lite needs no fallback
            tracker.policy = FallbackPolicy(pipeline, targets(wanted))
        tracker.rig = self._make_rig(msg.rig)
        self.trackers[sid] = tracker
        return m.Opened(msg.request, sid, pipeline, (time.perf_counter() - t0) * 1000)

    def set_rig(self, msg: m.SetRig) -> None:
        """Turn the rig on or off for a live session (a subscriber asked for it), or change its
        options (a `configure` that changed only the rig's)."""
        tracker = self.trackers.get(msg.sid)
        if tracker is not None and (tracker.rig is None) != (msg.rig is None):
            tracker.rig = self._make_rig(msg.rig)
        elif tracker is not None and tracker.rig is not None and msg.rig is not None:
            tracker.rig.update(msg.rig)  # new legs, a re-centre: tracking goes on

    def close(self, msg: m.Close) -> None:
        tracker = self.trackers.pop(msg.sid, None)
        if tracker is not None:
            tracker.close()
            gc.collect()

    def frame(self, msg: m.Frame) -> m.FrameResult | m.FrameError:
        sid, frame_id, mp_ts = msg.sid, msg.frame_id, msg.mp_ts
        tracker = self.trackers.get(sid)
        if tracker is None:
            return m.FrameError(sid, frame_id, "internal", "session not open in worker")
        cpu0 = self._cpu_mark
        t0 = time.perf_counter()
        try:
            rgb = self._decode(msg.image)
        except self._imaging.ImageError as exc:
            return m.FrameError(sid, frame_id, exc.code, exc.message)
        t1 = time.perf_counter()
        found, pipeline, switched = tracker.detect(rgb, mp_ts)
        t2 = time.perf_counter()
        height, width = rgb.shape[:2]
        rig_json = rig_arrays = None
        if tracker.rig is not None:
            rig_json, rig_arrays = tracker.rig.solve(found, width, height, mp_ts / 1000.0)
        return m.FrameResult(
            sid,
            frame_id,
            width,
            height,
            {name: found.get(name) for name in tracker.wanted},
            decode_ms=(t1 - t0) * 1000,
            inference_ms=(t2 - t1) * 1000,
            pipeline=pipeline,
            switched=switched,
            rig_json=rig_json,
            rig_arrays=rig_arrays,
            cpu_s=time.process_time() - cpu0,
        )

    def predict(self, msg: m.Predict) -> m.Predicted | m.PredictError:
        """One independent image (IMAGE mode); see server.predict.worker for the state cure."""
        if self._predictor is None:
            from server.predict.worker import ImagePredictor

            self._predictor = ImagePredictor(self.settings.models, self._decode)
        try:
            image = self._predictor.predict(msg.pipeline, msg.wanted, msg.image, exact=msg.exact)
        except self._imaging.ImageError as exc:
            return m.PredictError(msg.key, exc.code, exc.message)
        return m.Predicted(msg.key, image)

    def calibrate(self, msg: m.Calibrate) -> m.Calibrated:
        """Measure per pipeline: CPU ms per frame (every thread of this process; robust to
        other load on the machine) and the memory one more landmarker adds."""
        costs: dict[str, m.PipelineMeasure] = {}
        for pipeline, data in msg.images.items():
            model = self.settings.models.get(pipeline)
            if model is None:
                continue
            rgb = self._decode(data)
            first = self._pipelines.create(pipeline, model, ())
            first.detect(rgb, 0)
            before = _rss_bytes()
            second = self._pipelines.create(pipeline, model, ())
            second.detect(rgb, 0)
            memory = _rss_bytes() - before
            t0 = time.process_time()
            for i in range(msg.frames):
                second.detect(rgb, 33 * (i + 1))
            ms = (time.process_time() - t0) * 1000 / max(msg.frames, 1)
            first.close()
            second.close()
            costs[pipeline] = m.PipelineMeasure(ms, max(memory, 0))
        gc.collect()
        return m.Calibrated(msg.request, costs)

    def info(self, msg: m.GetInfo) -> m.Info:
        landmarkers = sum(len(t.detectors) for t in self.trackers.values())
        return m.Info(msg.request, os.getpid(), landmarkers, _rss_bytes())

    def handle_safely(self, msg: m.ToWorker) -> m.FromWorker | None:
        """`handle`, where whatever a landmarker, the rig or a decoder raises for one session's
        input becomes that session's error (its tracker starts afresh), never the worker's end."""
        try:
            return self.handle(msg)
        except Exception as exc:
            reason = f"{type(exc).__name__}: {str(exc)[:200]}"
            print(f"worker {self.index}: {type(msg).__name__} failed: {reason}", file=sys.stderr)
            return self._failed(msg, reason)

    def _failed(self, msg: m.ToWorker, reason: str) -> m.FromWorker | None:
        match msg:
            case m.Frame():
                tracker = self.trackers.get(msg.sid)
                if tracker is not None:
                    try:
                        tracker.reset(self._make_rig(tracker.rig.options if tracker.rig else None))
                    except Exception:  # cannot even start afresh: the session ends
                        self.trackers.pop(msg.sid, None)
                return m.FrameError(msg.sid, msg.frame_id, "inference_failed", reason)
            case m.Predict():
                self._predictor = None  # its landmarkers start afresh too
                return m.PredictError(msg.key, "internal", reason)
            case m.Open():
                return m.OpenFailed(msg.request, msg.sid, reason)
            case m.Calibrate():
                return m.Calibrated(msg.request)
            case m.GetInfo():
                return m.Info(msg.request, os.getpid(), 0, 0)
        return None

    def handle(self, msg: m.ToWorker) -> m.FromWorker | None:
        """One request; the reply to send, if it has one."""
        match msg:
            case m.Frame():
                return self.frame(msg)
            case m.Open():
                return self.open(msg)
            case m.Close():
                self.close(msg)
            case m.SetRig():
                self.set_rig(msg)
            case m.Predict():
                return self.predict(msg)
            case m.Calibrate():
                return self.calibrate(msg)
            case m.GetInfo():
                return self.info(msg)
        return None

    # -- helpers ---------------------------------------------------------------------------
    def _decode(self, data: bytes) -> RGB:
        return self._imaging.decode_rgb(
            data, max_pixels=self.settings.max_pixels, max_side=self.settings.max_side
        )

    def _make_rig(self, options: RigOptions | None) -> RigSession | None:
        if options is None:
            return None
        from server.rig.session import RigSession

        return RigSession(options)

    def serve(self) -> None:
        ipc.send_blocking(self.sock, m.Hello(self.index, os.getpid()))
        while True:
            msg = ipc.recv_blocking(self.sock)
            if msg is None:
                break
            reply = self.handle_safely(msg)
            if reply is not None:
                ipc.send_blocking(self.sock, reply)
            self._cpu_mark = time.process_time()
        for tracker in self.trackers.values():
            tracker.close()
        self.trackers.clear()


def worker_main(sock: socket.socket, index: int, settings: WorkerSettings) -> None:
    """Process entry point. SIGINT is ignored: the server decides when workers stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    filter_native_logs("worker")  # MediaPipe's native chatter (server/logs.py)
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        Worker(sock, index, settings).serve()
