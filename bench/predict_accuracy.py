"""Accuracy of the default single-image path against a fresh HolisticLandmarker.

    .venv/bin/python bench/predict_accuracy.py            # prints the table for docs/predict.md
    .venv/bin/python bench/predict_accuracy.py --stride 4 # every 4th clip frame (quicker)
    .venv/bin/python bench/predict_accuracy.py --hands lite  # the lite hand model (a trade-off)

Every fixture image and every frame of both fixture clips goes through
server.predict.composite (the default of POST /v1/predict) and through a HolisticLandmarker
created for that image alone (the exact path, `?mode=exact`). Per part: how often both agree on
found / not found, and for images where both found it, the distance between corresponding
landmarks (x, y in pixels) as a fraction of the image's longer side: median and 95th
percentile over every landmark of every such image. Also the CPU time per image of each path.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from server.model import resolve_model  # noqa: E402
from server.predict.composite import CompositeHolistic  # noqa: E402
from server.workers import pipelines  # noqa: E402
from server.workers.imaging import decode_rgb  # noqa: E402

FIXTURES = ROOT / "tests" / "fixtures"
IMAGES = (FIXTURES / "astronaut.png", FIXTURES / "building.jpg",
          ROOT / "server" / "fixtures" / "messi5.jpg",
          ROOT / "server" / "fixtures" / "astronaut_face.jpg")
CLIPS = (FIXTURES / "messi_pan_640x480.avi", FIXTURES / "astronaut_pan_640x480.avi")
PARTS = ("pose", "face", "left_hand", "right_hand")
WORLD = ("pose_world", "left_hand_world", "right_hand_world")
# The goals (docs/predict.md): same parts found on ≥ 98 % of images; median distance ≤ 1 %.
AGREE_GOAL, MEDIAN_GOAL = 0.98, 0.01


def frames(stride: int) -> Iterator[tuple[str, np.ndarray]]:
    import cv2

    for path in IMAGES:
        yield path.name, decode_rgb(path.read_bytes(), max_pixels=1 << 26, max_side=8192)
    for clip in CLIPS:
        cap = cv2.VideoCapture(str(clip))
        index = 0
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            if index % stride == 0:
                yield f"{clip.name}#{index}", np.ascontiguousarray(bgr[:, :, ::-1])
            index += 1
        cap.release()


def models(names: tuple[str, ...] = ("holistic", "pose", "face")) -> dict[str, Path]:
    return {name: resolve_model(name, allow_download=False, allow_build=False,
                                log=lambda _: None)
            for name in names}


def measure(stride: int, hands: str = "full") -> dict[str, object]:
    paths = models()
    composite_models = dict(paths)
    if hands == "lite":  # the hand models of the lite bundle (measured as an alternative)
        composite_models["holistic"] = models(("holistic_lite",))["holistic_lite"]
    composite = CompositeHolistic(composite_models)
    agree = {p: 0 for p in PARTS}
    found = {p: [0, 0] for p in PARTS}  # found by composite, by exact
    dist: dict[str, list[np.ndarray]] = {p: [] for p in PARTS}
    world: dict[str, list[np.ndarray]] = {p: [] for p in WORLD}
    disagreements: list[str] = []
    cpu = {"default": 0.0, "exact": 0.0}
    count = 0
    for name, rgb in frames(stride):
        height, width = rgb.shape[:2]
        t0 = time.process_time()
        ours = composite.detect(rgb, None)
        t1 = time.process_time()
        exact_detector = pipelines.create("holistic", paths["holistic"], (), video=False)
        try:
            exact = exact_detector.detect(rgb, None)
        finally:
            exact_detector.close()
        t2 = time.process_time()
        cpu["default"] += t1 - t0
        cpu["exact"] += t2 - t1
        count += 1
        for part in PARTS:
            a, b = ours[part], exact[part]
            found[part][0] += a is not None
            found[part][1] += b is not None
            if (a is None) == (b is None):
                agree[part] += 1
            else:
                which = "only default" if a is not None else "only exact"
                disagreements.append(f"{name}: {part} {which}")
            if a is not None and b is not None:
                px = (a[:, :2] - b[:, :2]) * (width, height)
                dist[part].append(np.hypot(px[:, 0], px[:, 1]) / max(width, height))
        for part in WORLD:
            a, b = ours[part], exact[part]
            if a is not None and b is not None:
                world[part].append(np.linalg.norm(a[:, :3] - b[:, :3], axis=1))
    composite.close()
    return {"count": count, "agree": agree, "found": found, "dist": dist, "world": world,
            "disagreements": disagreements, "cpu": cpu}


def report(result: dict[str, object], stride: int) -> str:
    count = int(result["count"])  # type: ignore[call-overload]
    agree, found = result["agree"], result["found"]
    dist, world = result["dist"], result["world"]
    assert isinstance(agree, dict) and isinstance(found, dict)
    assert isinstance(dist, dict) and isinstance(world, dict)
    lines = [
        f"{count} images ({len(IMAGES)} fixture images, the frames of both fixture clips"
        f"{'' if stride == 1 else f', every {stride}th'}); distances as a fraction of the "
        "image's longer side.",
        "",
        "| part | found (default / exact) | same found / not found | median distance "
        "| p95 distance | goal |",
        "|---|---|---|---|---|---|",
    ]
    for part in PARTS:
        d = np.concatenate(dist[part]) if dist[part] else np.array([np.nan])
        share = agree[part] / count
        med, p95 = float(np.median(d)), float(np.percentile(d, 95))
        ok = share >= AGREE_GOAL and (np.isnan(med) or med <= MEDIAN_GOAL)
        lines.append(f"| {part} | {found[part][0]} / {found[part][1]} | {share:.1%} "
                     f"| {med:.4f} | {p95:.4f} | {'✅' if ok else '❌'} |")
    lines += ["", "| world part | median distance (m) | p95 (m) |", "|---|---|---|"]
    for part in WORLD:
        d = np.concatenate(world[part]) if world[part] else np.array([np.nan])
        lines.append(f"| {part} | {np.median(d):.4f} | {np.percentile(d, 95):.4f} |")
    cpu = result["cpu"]
    assert isinstance(cpu, dict)
    lines += ["", f"CPU per image: default {1000 * cpu['default'] / count:.0f} ms, exact "
                  f"(a fresh HolisticLandmarker, creation included) "
                  f"{1000 * cpu['exact'] / count:.0f} ms."]
    disagreements = result["disagreements"]
    assert isinstance(disagreements, list)
    if disagreements:
        lines += ["", "Found by one path only: " + "; ".join(disagreements) + "."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stride", type=int, default=1, help="every n-th clip frame")
    parser.add_argument("--hands", choices=("full", "lite"), default="full",
                        help="hand landmark model of the default path (the exact path: full)")
    args = parser.parse_args(argv)
    print(report(measure(args.stride, args.hands), args.stride))


if __name__ == "__main__":
    main()
