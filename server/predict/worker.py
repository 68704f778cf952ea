"""Worker side of the single-image API: no answer depends on the images before it.

What carries over between images (measured, see docs/predict.md): FaceLandmarker, PoseLandmarker
and HandLandmarker in IMAGE mode keep no state, so one of each is created once and reused. The
HolisticLandmarker graph tracks and smooths whatever the running mode: the pose ROI of the
previous image, One Euro filters on the pose landmarks, and low-pass filters on the pose and
world visibilities that reset only on a frame the graph never feeds them. No input resets them,
so a holistic landmarker that has found a pose is spent. The cheapest correct cure is therefore
a one-shot landmarker taken from a small stock of clean ones, which a background thread refills
(creating one is native code and releases the GIL, so it overlaps with inference). A landmarker
that found no pose touched no filter and goes back to the stock. (Warming a new one on a blank
image would also leave it clean and take its lazy set-up off the request's path, but it costs
more CPU than it saves: measured in docs/predict.md, so it is not done.)

That clean stock is the *exact* path (`?mode=exact`). The default path for holistic images
needs no landmarker creation at all: server.predict.composite computes what a fresh holistic
landmarker would from stateless parts (PoseLandmarker, FaceLandmarker, the hand models), one
of them per worker, reused; it agrees with the exact path within the figures published in
docs/predict.md, at the cost of a reused landmarker.

The contract with server.workers.process: `ImagePredictor(models, decode).predict(pipeline,
wanted, data, exact=False)` returns an ImageLandmarks (server.workers.messages) or raises
ImageError.
`inference_ms` includes any wait for a clean holistic landmarker.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from multiprocessing.util import Finalize
from pathlib import Path
from typing import Any

from server.workers.imaging import ImageError
from server.workers.messages import ImageLandmarks

# Clean holistic landmarkers kept ready per worker (each holds about 130 MB).
SPARES = 1
# What the default (composite) holistic path runs on.
COMPOSITE_MODELS = ("holistic", "pose", "face")
# Memory the fast path adds beyond a pose and a face landmarker: LiteRT and the two hand models
# (measured: the whole fast path adds about 145 MB to a worker that already runs MediaPipe).
COMPOSITE_EXTRA_BYTES = 40 << 20

Factory = Callable[[str], Any]


class CleanStock:
    """Clean landmarkers of one pipeline, refilled by a daemon thread up to `size`."""

    def __init__(self, factory: Callable[[], Any], size: int = SPARES) -> None:
        self._factory = factory
        self._size = max(size, 0)
        self._ready: list[Any] = []
        self._spent: list[Any] = []  # closed by the refill thread, after the reply has gone
        self._building = False
        self._closed = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._refill, name="clean-stock", daemon=True)
        self._thread.start()

    def _refill(self) -> None:
        """Build clean landmarkers up to the stock size, close spent ones; until close()."""
        while True:
            with self._cond:
                while not (self._closed or self._spent or len(self._ready) < self._size):
                    self._cond.wait()
                if self._closed:
                    break
                spent, self._spent = self._spent, []
                self._building = build = len(self._ready) < self._size
            detector = None
            if build:
                try:
                    detector = self._factory()
                except Exception:  # a broken model: take() builds in the foreground, says why
                    time.sleep(1.0)
            with self._cond:
                self._building = False
                if detector is not None:
                    self._ready.append(detector)
                self._cond.notify_all()
            for old in spent:  # after building: a request may be waiting for that one
                old.close()
        self._close_ready()

    def take(self, timeout: float = 30.0) -> Any:
        """A clean landmarker: a ready one, the one being built, or a new one built here."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._ready and self._building and not self._closed:
                if not self._cond.wait(max(deadline - time.monotonic(), 0.0)):
                    break
            if self._ready:
                detector = self._ready.pop()
                self._cond.notify_all()
                return detector
        return self._factory()

    def give_back(self, detector: Any) -> None:
        """Return a landmarker that is still clean. The stock may then hold one more than its
        size (the refill thread may have replaced it meanwhile): a clean one is never wasted."""
        with self._cond:
            if not self._closed and len(self._ready) <= self._size:
                self._ready.append(detector)
                self._cond.notify_all()
                return
        detector.close()

    def retire(self, detector: Any) -> None:
        """A spent landmarker: closed in the background (closing takes a few ms)."""
        with self._cond:
            if not self._closed:
                self._spent.append(detector)
                self._cond.notify_all()
                return
        detector.close()

    def _close_ready(self) -> None:
        with self._cond:
            ready, self._ready = self._ready + self._spent, []
            self._spent = []
        for detector in ready:
            detector.close()

    def close(self, timeout: float = 2.0) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)
        self._close_ready()


class ImagePredictor:
    """Independent single-image inference in one worker process."""

    def __init__(
        self,
        models: dict[str, Path],
        decode: Callable[[bytes], Any],
        *,
        factory: Factory | None = None,
        composite: Callable[[], Any] | None = None,
        spares: int = SPARES,
    ) -> None:
        self.models = models
        self.decode = decode
        self._factory = factory or self._create
        self._reused: dict[str, Any] = {}  # stateless in IMAGE mode: face, pose, hands
        self._composite: Any = None  # server.predict.composite, created on first use
        self._composite_factory = composite
        self._stock: CleanStock | None = None  # created on the first exact holistic image
        self._spares = spares
        # Close before the interpreter shuts down: MediaPipe dispatches each call on its own
        # executor thread, and those refuse work once threading has begun to shut down.
        Finalize(self, self.close, exitpriority=10)

    def _create(self, pipeline: str) -> Any:
        from server.workers import pipelines  # heavy: only in the worker

        return pipelines.create(pipeline, self.models[pipeline], (), video=False)

    def predict(
        self, pipeline: str, wanted: tuple[str, ...], data: bytes, *, exact: bool = False
    ) -> ImageLandmarks:
        if pipeline not in self.models:
            raise ImageError("pipeline_unavailable", f"no {pipeline} model on this server")
        t0 = time.perf_counter()
        rgb = self.decode(data)
        t1 = time.perf_counter()
        try:
            found = self._detect(pipeline, rgb, exact, wanted)
        except ImageError:
            raise
        except Exception as exc:  # the worker must survive a native failure and say so
            raise ImageError("internal", f"{type(exc).__name__}: {exc}") from None
        t2 = time.perf_counter()
        height, width = rgb.shape[:2]
        parts = {name: found.get(name) for name in wanted}
        return ImageLandmarks(width, height, parts, (t1 - t0) * 1000, (t2 - t1) * 1000)

    def _composite_detector(self) -> Any:
        if self._composite is None:
            if self._composite_factory is not None:
                self._composite = self._composite_factory()
            else:
                missing = [n for n in COMPOSITE_MODELS if n not in self.models]
                if missing:
                    raise ImageError("pipeline_unavailable",
                                     f"the default holistic path needs the {missing} models; "
                                     "use mode=exact")
                from server.predict.composite import CompositeHolistic  # heavy: worker only

                self._composite = CompositeHolistic(self.models)
        return self._composite

    def _detect(
        self, pipeline: str, rgb: Any, exact: bool, wanted: tuple[str, ...]
    ) -> dict[str, Any]:
        if pipeline == "holistic" and not exact:
            composite: dict[str, Any] = self._composite_detector().detect(rgb, None, wanted)
            return composite
        if pipeline == "holistic" and self._stock is None:
            self._stock = CleanStock(lambda: self._factory("holistic"), self._spares)
        if pipeline != "holistic":
            detector = self._reused.get(pipeline)
            if detector is None:
                detector = self._reused[pipeline] = self._factory(pipeline)
            found: dict[str, Any] = detector.detect(rgb, None)
            return found
        assert self._stock is not None
        detector = self._stock.take()
        try:
            found = detector.detect(rgb, None)
        except BaseException:
            detector.close()
            raise
        if found.get("pose") is None:
            self._stock.give_back(detector)  # no pose: no filter was fed, still clean
        else:
            self._stock.retire(detector)
        return found

    def close(self) -> None:
        if self._stock is not None:
            self._stock.close()
        if self._composite is not None:
            self._composite.close()
            self._composite = None
        for detector in self._reused.values():
            detector.close()
        self._reused.clear()
