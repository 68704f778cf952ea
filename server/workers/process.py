"""The inference worker: a child process that owns its sessions' landmarkers.

It serves one message at a time from the server over a socketpair (workers/ipc.py). One VIDEO-mode
landmarker per session, created on `open` and closed on `close`; the image is decoded here, as
RGB, so the server's event loop never touches pixels. EOF on the socket means the server is gone:
the worker then exits, so it can never outlive its server.
"""

from __future__ import annotations

import contextlib
import gc
import os
import re
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from server.workers import ipc
from server.workers.fallback import HOLISTIC, FallbackPolicy, found_parts, targets


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
    rig: Any  # server.rig.session.RigSession, or None
    create: Callable[[str], Any]  # pipeline -> a fresh VIDEO landmarker for this session
    detectors: dict[str, Any] = field(default_factory=dict)
    policy: FallbackPolicy | None = None  # server.workers.fallback; None for holistic sessions

    def detect(self, rgb: Any, mp_ts: int) -> tuple[dict[str, Any], str, str | None]:
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
        self._predictor: Any = None

    # -- message handlers ------------------------------------------------------------------
    def open(self, sid: str, pipeline: str, wanted: tuple[str, ...], rig: Any) -> Any:
        old = self.trackers.pop(sid, None)
        if old is not None:
            old.close()
        t0 = time.perf_counter()
        models = self.settings.models

        def create(name: str) -> Any:
            return self._pipelines.create(name, models[name], wanted)

        tracker = _Tracker(pipeline, wanted, None, create)
        try:
            tracker.detectors[pipeline] = create(pipeline)
        except Exception as exc:  # a broken model must not kill the worker's other sessions
            return ("open_failed", sid, f"{type(exc).__name__}: {exc}")
        if pipeline != HOLISTIC and HOLISTIC in models:
            tracker.policy = FallbackPolicy(pipeline, targets(wanted))
        tracker.rig = self._make_rig(rig)
        self.trackers[sid] = tracker
        return ("opened", sid, pipeline, (time.perf_counter() - t0) * 1000)

    def set_rig(self, sid: str, options: Any) -> None:
        """Turn the rig on or off for a live session (a subscriber asked for it)."""
        tracker = self.trackers.get(sid)
        if tracker is not None and (tracker.rig is None) != (options is None):
            tracker.rig = self._make_rig(options)

    def close(self, sid: str) -> None:
        tracker = self.trackers.pop(sid, None)
        if tracker is not None:
            tracker.close()
            gc.collect()

    def frame(self, sid: str, frame_id: int, mp_ts: int, data: bytes) -> Any:
        tracker = self.trackers.get(sid)
        if tracker is None:
            return ("frame_error", sid, frame_id, "internal", "session not open in worker")
        t0 = time.perf_counter()
        try:
            rgb = self._decode(data)
        except self._imaging.ImageError as exc:
            return ("frame_error", sid, frame_id, exc.code, exc.message)
        t1 = time.perf_counter()
        found, pipeline, switched = tracker.detect(rgb, mp_ts)
        t2 = time.perf_counter()
        height, width = rgb.shape[:2]
        rig = None
        if tracker.rig is not None:
            rig = tracker.rig.solve(found, width, height, mp_ts / 1000.0)
        parts = {name: found.get(name) for name in tracker.wanted}
        return (
            "result", sid, frame_id, width, height, parts,
            (t1 - t0) * 1000, (t2 - t1) * 1000, rig, pipeline, switched,
        )

    def predict(self, key: str, pipeline: str, wanted: tuple[str, ...], data: bytes) -> Any:
        """One independent image (IMAGE mode); see server.predict.worker for the state cure."""
        if self._predictor is None:
            from server.predict.worker import ImagePredictor

            self._predictor = ImagePredictor(self.settings.models, self._decode)
        try:
            payload = self._predictor.predict(pipeline, wanted, data)
        except self._imaging.ImageError as exc:
            return ("predict_error", key, exc.code, exc.message)
        return ("predicted", key, payload)

    def calibrate(self, images: dict[str, bytes], frames: int) -> Any:
        """Measure per pipeline: CPU ms per frame (every thread of this process; robust to
        other load on the machine) and the memory one more landmarker adds."""
        costs: dict[str, tuple[float, int]] = {}
        for pipeline, data in images.items():
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
            for i in range(frames):
                second.detect(rgb, 33 * (i + 1))
            ms = (time.process_time() - t0) * 1000 / max(frames, 1)
            first.close()
            second.close()
            costs[pipeline] = (ms, max(memory, 0))
        gc.collect()
        return ("calibrated", costs)

    def info(self) -> Any:
        landmarkers = sum(len(t.detectors) for t in self.trackers.values())
        info = {"pid": os.getpid(), "landmarkers": landmarkers, "rss": _rss_bytes()}
        return ("info", info)

    # -- helpers ---------------------------------------------------------------------------
    def _decode(self, data: bytes) -> Any:
        return self._imaging.decode_rgb(
            data, max_pixels=self.settings.max_pixels, max_side=self.settings.max_side
        )

    def _make_rig(self, options: Any) -> Any:
        if options is None:
            return None
        from server.rig.session import RigSession

        return RigSession(options)

    def serve(self) -> None:
        handlers: dict[str, Callable[..., Any]] = {
            "open": self.open,
            "close": self.close,
            "rig": self.set_rig,
            "frame": self.frame,
            "calibrate": self.calibrate,
            "predict": self.predict,
            "info": self.info,
        }
        ipc.send_blocking(self.sock, ("hello", self.index, os.getpid()))
        while True:
            msg = ipc.recv_blocking(self.sock)
            if msg is None:
                break
            reply = handlers[msg[0]](*msg[1:])
            if reply is not None:
                ipc.send_blocking(self.sock, reply)
        for sid in list(self.trackers):
            self.close(sid)


# MediaPipe's native code logs a screenful of INFO/WARNING lines per landmarker to fd 2.
_NATIVE_NOISE = re.compile(rb"^(INFO: |WARNING: \[|WARNING: Logging before|[IW]\d{4} )")


def _filter_native_logs() -> None:
    """Route fd 2 through a thread that drops the native chatter and keeps everything else
    (errors, Python tracebacks). HOLISTREAM_NATIVE_LOGS=1 keeps it all."""
    if os.environ.get("HOLISTREAM_NATIVE_LOGS") == "1":
        return
    read_fd, write_fd = os.pipe()
    original = os.dup(2)
    os.dup2(write_fd, 2)
    os.close(write_fd)

    def pump() -> None:
        with os.fdopen(read_fd, "rb") as src, os.fdopen(original, "wb", buffering=0) as dst:
            for line in src:
                if not _NATIVE_NOISE.match(line):
                    dst.write(line)

    threading.Thread(target=pump, name="native-log-filter", daemon=True).start()


def worker_main(sock: socket.socket, index: int, settings: WorkerSettings) -> None:
    """Process entry point. SIGINT is ignored: the server decides when workers stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _filter_native_logs()
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        Worker(sock, index, settings).serve()
