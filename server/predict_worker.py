"""Worker side of the single-image API. Placeholder cure until measured: a fresh landmarker.

The contract with server.worker_process: `ImagePredictor(models, decode).predict(pipeline,
wanted, data)` returns `(width, height, parts, decode_ms, inference_ms)` or raises ImageError.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


class ImagePredictor:
    def __init__(self, models: dict[str, Path], decode: Callable[[bytes], Any]) -> None:
        self.models = models
        self.decode = decode

    def predict(self, pipeline: str, wanted: tuple[str, ...], data: bytes) -> tuple[Any, ...]:
        from server import pipelines

        t0 = time.perf_counter()
        rgb = self.decode(data)
        t1 = time.perf_counter()
        detector = pipelines.create(pipeline, self.models[pipeline], wanted, video=False)
        try:
            found = detector.detect(rgb, None)
        finally:
            detector.close()
        t2 = time.perf_counter()
        height, width = rgb.shape[:2]
        parts = {name: found.get(name) for name in wanted}
        return (width, height, parts, (t1 - t0) * 1000, (t2 - t1) * 1000)
