"""Full vs lite Holistic on the fixture clips: detections per part and CPU per frame.

Bare landmarkers, no server: each (bundle, clip) runs in its own spawned process, one after the
other, in VIDEO mode over every frame of the clip (JPEG-encoded by `loadgen.frames.load_frames`
and decoded as the workers decode), after a warm-up pass. CPU is `time.process_time()` of the
child (every MediaPipe thread), decode excluded. Prints a Markdown table.

    .venv/bin/python bench/lite.py [--passes 2]
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CLIPS = ("messi_pan_640x480.avi", "astronaut_pan_640x480.avi")
BUNDLES = ("holistic", "holistic_lite")
PARTS = ("face", "pose", "left_hand", "right_hand")


def _child(bundle: str, model: str, frames: list[bytes], passes: int, out: Any) -> None:
    from bench.ceiling import _decode_all, _quiet

    _quiet()
    from server.workers import pipelines

    rgbs = _decode_all(frames)
    detector = pipelines.create(bundle, Path(model), (), video=True)
    ts = 0
    for rgb in rgbs[:10]:  # warm-up
        ts += 33
        detector.detect(rgb, ts)
    found = dict.fromkeys(PARTS, 0)
    n = 0
    c0, t0 = time.process_time(), time.perf_counter()
    for _ in range(passes):
        for rgb in rgbs:
            ts += 33
            parts = detector.detect(rgb, ts)
            n += 1
            for p in PARTS:
                found[p] += parts.get(p) is not None
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    detector.close()
    out.put({"frames": n, "found": found, "cpu_ms": cpu * 1000 / n, "wall_ms": wall * 1000 / n})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passes", type=int, default=2, help="passes over each clip")
    args = parser.parse_args()
    from loadgen.frames import load_frames
    from server.model import resolve_model

    ctx = multiprocessing.get_context("spawn")
    print("| clip | bundle | frames | face | pose | left hand | right hand | CPU ms/frame "
          "| wall ms/frame |")
    print("|---|---|---|---|---|---|---|---|---|")
    for clip in CLIPS:
        frames = load_frames(ROOT / "tests" / "fixtures" / clip)
        for bundle in BUNDLES:
            model = resolve_model(bundle, allow_download=False, log=lambda m: None)
            out = ctx.Queue()
            proc = ctx.Process(target=_child, args=(bundle, str(model), frames, args.passes, out))
            proc.start()
            r = out.get(timeout=600)
            proc.join(10)
            per = r["frames"] // args.passes
            cells = " | ".join(f"{r['found'][p] // args.passes}/{per}" for p in PARTS)
            print(
                f"| {clip.split('_640')[0]} | {bundle} | {per} | {cells} | "
                f"{r['cpu_ms']:.1f} | {r['wall_ms']:.1f} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
