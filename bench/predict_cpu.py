"""CPU per image of the single-image paths, in one process, on the same images.

    .venv/bin/python bench/predict_cpu.py             # every 4th clip frame, two rounds
    .venv/bin/python bench/predict_cpu.py --stride 1  # every frame (slower)

Three ways to answer one holistic image, each given all the images as one block, blocks in
A B C C B A order (so all three meet the same machine load). A block's CPU counts whatever
MediaPipe's threads do between calls too; the stages of the default path are timed call by
call, so work a stage leaves running on those threads is counted in the next one.

- **default**: server.predict.composite (`POST /v1/predict`), split into its stages: the
  PoseLandmarker, the FaceLandmarker on the face region, the hand re-crop and hand landmark
  models (LiteRT), and the rest (crops, region arithmetic, Python);
- **reused**: one HolisticLandmarker in IMAGE mode kept for every image (the classic design;
  its answers depend on the images before, docs/predict.md);
- **exact**: a fresh HolisticLandmarker per image, creation and closing included (`mode=exact`).

Also the floor: each model of the holistic bundle alone on LiteRT, one thread (the face landmark
model needs MediaPipe's custom operators, so it is not in that list). CPU is process time, all
threads of this process (MediaPipe runs its graphs on its own threads). Decoding and HTTP, which
every design pays the same, are not included.
"""

from __future__ import annotations

import argparse
import sys
import time
import zipfile
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.predict_accuracy import frames, models  # noqa: E402
from server.predict.composite import CompositeHolistic  # noqa: E402
from server.workers import pipelines  # noqa: E402

STAGES = ("pose", "face", "hand re-crop", "hand landmarks")


class _Timed:
    """Wraps a callable (or an object's detect) and adds its CPU time to a running total."""

    def __init__(self, target: Any, totals: dict[str, float], stage: str, method: str) -> None:
        self._call: Callable[..., Any] = getattr(target, method) if method else target
        self._totals, self._stage = totals, stage
        self.size = getattr(target, "size", 0)

    def _timed(self, *args: Any) -> Any:
        t0 = time.process_time()
        try:
            return self._call(*args)
        finally:
            self._totals[self._stage] += time.process_time() - t0

    def __call__(self, *args: Any) -> Any:
        return self._timed(*args)

    def detect(self, *args: Any) -> Any:
        return self._timed(*args)

    def close(self) -> None:
        pass


def instrument(composite: CompositeHolistic, totals: dict[str, float]) -> None:
    """Time each stage of the composite (its parts, replaced by timing wrappers)."""
    parts = vars(composite)
    parts["_pose"] = _Timed(parts["_pose"], totals, "pose", "detect")
    parts["_face"] = _Timed(parts["_face"], totals, "face", "detect")
    parts["_recrop"] = _Timed(parts["_recrop"], totals, "hand re-crop", "")
    parts["_hand"] = _Timed(parts["_hand"], totals, "hand landmarks", "")


def floor(holistic: Path, repeat: int = 20) -> dict[str, float]:
    """CPU ms of one invocation of each model of the bundle on LiteRT (one thread)."""
    from ai_edge_litert.interpreter import Interpreter

    out: dict[str, float] = {}
    with zipfile.ZipFile(holistic) as bundle:
        for name in bundle.namelist():
            if name.startswith("face_landmarks"):
                continue  # MediaPipe's custom operators: not runnable on bare LiteRT
            interpreter = Interpreter(model_content=bundle.read(name), num_threads=1)
            interpreter.allocate_tensors()
            detail = interpreter.get_input_details()[0]
            data = np.random.default_rng(0).random(detail["shape"], dtype=np.float32)
            interpreter.set_tensor(detail["index"], data)
            interpreter.invoke()
            t0 = time.process_time()
            for _ in range(repeat):
                interpreter.set_tensor(detail["index"], data)
                interpreter.invoke()
            out[name.removesuffix(".tflite")] = 1000 * (time.process_time() - t0) / repeat
    return out


def measure(stride: int, rounds: int) -> tuple[int, dict[str, float], dict[str, float]]:
    paths = models()
    composite = CompositeHolistic(paths)
    stages: dict[str, float] = defaultdict(float)
    instrument(composite, stages)
    reused = pipelines.create("holistic", paths["holistic"], (), video=False)
    images = [rgb for _, rgb in frames(stride)]
    composite.detect(images[0], None)  # first use: lazy set-up, not counted
    reused.detect(images[0], None)
    stages.clear()
    cpu: dict[str, float] = defaultdict(float)

    def exact(rgb: np.ndarray) -> object:
        detector = pipelines.create("holistic", paths["holistic"], (), video=False)
        try:
            return detector.detect(rgb, None)
        finally:
            detector.close()

    designs: list[tuple[str, Callable[[np.ndarray], object]]] = [
        ("default", lambda rgb: composite.detect(rgb, None)),
        ("reused", lambda rgb: reused.detect(rgb, None)),
        ("exact", exact),
    ]
    for turn in range(rounds):  # blocks in A B C, then C B A order, and so on
        for name, run in designs if turn % 2 == 0 else designs[::-1]:
            t0 = time.process_time()
            for rgb in images:
                run(rgb)
            cpu[name] += time.process_time() - t0
    count = rounds * len(images)
    composite.close()
    reused.close()
    return count, {k: 1000 * v / count for k, v in cpu.items()}, \
        {k: 1000 * v / count for k, v in stages.items()}


def report(count: int, cpu: dict[str, float], stages: dict[str, float],
           models_ms: dict[str, float], stride: int, rounds: int) -> str:
    default = cpu["default"]
    rest = default - sum(stages.get(s, 0.0) for s in STAGES)
    lines = [
        f"{count} detections per design ({rounds} blocks over the fixture images and 1 in "
        f"{stride} clip frames); CPU ms per image, all threads of one process.",
        "",
        "| design | CPU ms per image | images per CPU-second | vs reused |",
        "|---|---|---|---|",
    ]
    for name, label in (("default", "default (composite)"),
                        ("reused", "one reused HolisticLandmarker (classic)"),
                        ("exact", "fresh HolisticLandmarker per image (`mode=exact`)")):
        lines.append(f"| {label} | {cpu[name]:.1f} | {1000 / cpu[name]:.1f} "
                     f"| {cpu['reused'] / cpu[name]:.2f}× |")
    lines += ["", "| default path stage | CPU ms per image | share |", "|---|---|---|"]
    for stage in STAGES:
        ms = stages.get(stage, 0.0)
        lines.append(f"| {stage} | {ms:.1f} | {ms / default:.0%} |")
    lines.append(f"| crops, regions, Python | {rest:.1f} | {rest / default:.0%} |")
    lines += ["", "| model alone (LiteRT, one thread) | CPU ms per invocation |", "|---|---|"]
    lines += [f"| {name} | {ms:.1f} |" for name, ms in models_ms.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stride", type=int, default=4, help="every n-th clip frame")
    parser.add_argument("--rounds", type=int, default=2, help="blocks per design")
    args = parser.parse_args(argv)
    count, cpu, stages = measure(args.stride, args.rounds)
    print(report(count, cpu, stages, floor(models()["holistic"]), args.stride, args.rounds))


if __name__ == "__main__":
    main()
