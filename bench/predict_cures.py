"""Which cure makes single-image results independent of earlier images, and at what cost?

    .venv/bin/python bench/predict_cures.py     # prints the table of docs/predict.md

In this process, on the same decoded pixels: every candidate runs the sequence A B A C A B A
(A = messi5, B = astronaut, C = building, no person) and its results are compared with a fresh
IMAGE-mode landmarker's for the same image. Costs are per image: wall time of the request's
path and CPU time of every thread (so work moved to a background thread still counts).
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from server.model import resolve_model  # noqa: E402
from server.predict.worker import ImagePredictor  # noqa: E402
from server.workers import imaging, pipelines  # noqa: E402

Parts = dict[str, Any]
BLANK = np.zeros((64, 64, 3), np.uint8)
ROUNDS = 8


def load(path: Path) -> bytes:
    return path.read_bytes()


def decode(data: bytes) -> Any:
    return imaging.decode_rgb(data, max_pixels=1 << 24, max_side=8192)


def worst(got: Parts, ref: Parts) -> tuple[float, float, bool]:
    """Largest change of a coordinate, of a visibility, and whether a part appeared or vanished."""
    coord = vis = 0.0
    flipped = False
    for name in ref:
        a, b = got.get(name), ref[name]
        if (a is None) != (b is None):
            flipped = True
        elif a is not None and b is not None:
            coord = max(coord, float(np.abs(a[:, :3] - b[:, :3]).max()))
            if a.shape[1] == 5:
                vis = max(vis, float(np.abs(a[:, 3] - b[:, 3]).max()))
    return coord, vis, flipped


def measure(run: Callable[[str], Parts], sequence: list[str], refs: dict[str, Parts],
            idle: float = 0.0) -> tuple[float, float, tuple[float, float, bool]]:
    """Median wall ms and mean CPU ms per image over ROUNDS sequences, and the worst error."""
    walls: list[float] = []
    cpu0 = time.process_time()
    errors = (0.0, 0.0, False)
    for _ in range(ROUNDS):
        for name in sequence:
            t0 = time.perf_counter()
            got = run(name)
            walls.append((time.perf_counter() - t0) * 1000)
            c, v, f = worst(got, refs[name])
            errors = (max(errors[0], c), max(errors[1], v), errors[2] or f)
            time.sleep(idle)
    cpu = (time.process_time() - cpu0) * 1000 / len(walls)
    return statistics.median(walls), cpu, errors


def main() -> None:
    model = resolve_model("holistic", allow_download=False, allow_build=False, log=lambda _: None)
    data = {
        "A": load(ROOT / "server" / "fixtures" / "messi5.jpg"),
        "B": load(ROOT / "tests" / "fixtures" / "astronaut.png"),
        "C": load(ROOT / "tests" / "fixtures" / "building.jpg"),
    }
    rgb = {k: decode(v) for k, v in data.items()}
    sequence = list("ABACABA")

    def create() -> Any:
        return pipelines.create("holistic", model, (), video=False)

    def fresh(name: str) -> Parts:
        detector = create()
        try:
            return detector.detect(rgb[name], None)
        finally:
            detector.close()

    refs = {name: fresh(name) for name in data}
    reused = create()
    blank_reset = create()

    def with_blank(name: str) -> Parts:
        blank_reset.detect(BLANK, None)
        return blank_reset.detect(rgb[name], None)

    def warmed(name: str) -> Parts:
        detector = create()
        detector.detect(BLANK, None)
        try:
            return detector.detect(rgb[name], None)
        finally:
            detector.close()

    predictor = ImagePredictor({"holistic": model}, decode)
    wanted = tuple(refs["A"])

    def stock(name: str) -> Parts:
        parts: Parts = predictor.predict("holistic", wanted, data[name])[2]
        return parts

    candidates: list[tuple[str, Callable[[str], Parts], float]] = [
        ("fresh landmarker per image (MediaPipe's idiom, the placeholder)", fresh, 0.0),
        ("one reused landmarker, nothing done", lambda n: reused.detect(rgb[n], None), 0.0),
        ("one reused landmarker, a blank 64×64 image before each", with_blank, 0.0),
        ("fresh landmarker warmed on a blank image, then the image", warmed, 0.0),
        ("clean stock, requests back to back (holistream)", stock, 0.0),
        ("clean stock, 0.5 s between requests (holistream)", stock, 0.5),
    ]
    print("| cure | request path ms (median) | CPU ms per image | max coordinate change "
          "| max visibility change | part found/lost | correct |")
    print("|---|---|---|---|---|---|---|")
    for label, run, idle in candidates:
        wall, cpu, (coord, vis, flipped) = measure(run, sequence, refs, idle)
        if idle:
            cpu = float("nan")  # idle time lets other threads' work fall outside the window
        ok = coord == 0 and vis == 0 and not flipped
        print(f"| {label} | {wall:.0f} | {cpu:.0f} | {coord:.4f} | {vis:.4f} "
              f"| {'yes' if flipped else 'no'} | {'✅' if ok else '❌'} |", flush=True)
    for other in ("face", "pose", "hands"):
        path = resolve_model(other, allow_download=False, allow_build=False, log=lambda _: None)
        one = pipelines.create(other, path, (), video=False)
        outs = {}
        for name in data:
            detector = pipelines.create(other, path, (), video=False)
            outs[name] = detector.detect(rgb[name], None)
            detector.close()
        def reuse(name: str, detector: Any = one) -> Parts:
            found: Parts = detector.detect(rgb[name], None)
            return found

        wall, cpu, (coord, vis, flipped) = measure(reuse, sequence, outs)
        ok = coord == 0 and vis == 0 and not flipped
        print(f"| {other}: one reused IMAGE-mode landmarker (holistream) | {wall:.0f} | {cpu:.0f} "
              f"| {coord:.4f} | {vis:.4f} | {'yes' if flipped else 'no'} | "
              f"{'✅' if ok else '❌'} |", flush=True)
        one.close()
    predictor.close()
    reused.close()
    blank_reset.close()


if __name__ == "__main__":
    main()
