"""How the avatar rig moves on the fixture clips: the figures in docs/rig.md, "Motion quality".

`messi_pan` and `astronaut_pan` are pans (and zooms, and a ±8° roll) over still photos: the
person never moves, so every change of a bone's rotation between two results is jitter. Each clip
goes through the holistic landmarker in VIDEO mode (30 fps timestamps, every frame, as a worker
runs it) and then through a RigSession (server/rig/session.py) — once with the defaults and once
with `"smoothing": false` (the raw solve) — and this prints, per clip:

- hips: the Hips bone's rotation from rest, median and p95 (degrees);
- jitter: the rotation change between consecutive results per bone group, p50 / p95 / max;
- toggles: how often each hand's detection came or went, and the largest change of that side's
  Hand / LowerArm bones between two consecutive results anywhere in the clip;
- seated: what the legs hold when they are not seen;

and then the same for `messi_pan` with hand detection made to fail in 6 of every 18 frames (the
hands taken out of those frames' detections: what the rig sees when MediaPipe loses a hand while
the picture, and so the pose, stays the same). The first LOCK_ON results (MediaPipe's trackers
locking on) are left out of every figure.

    .venv/bin/python -m bench.rig_quality [--clips messi_pan astronaut_pan]

Deterministic: MediaPipe gives the same landmarks for the same frames and timestamps.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from holistream.landmarks import Landmarks  # noqa: E402
from holistream.protocol import RigOptions  # noqa: E402
from holistream.rig.skeleton import BONE_INDEX, BONES, PART_INDEX  # noqa: E402

F64 = npt.NDArray[np.float64]
CLIPS = {
    "messi_pan": ROOT / "tests" / "fixtures" / "messi_pan_640x480.avi",
    "astronaut_pan": ROOT / "tests" / "fixtures" / "astronaut_pan_640x480.avi",
}
FPS = 30.0
LOCK_ON = 10  # results left out of the statistics: MediaPipe's trackers locking on
FINGER_WORDS = ("Thumb", "Index", "Middle", "Ring", "Little")


def bone_group(name: str) -> str:
    if any(w in name for w in FINGER_WORDS):
        return "fingers"
    if name.endswith("Hand"):
        return "hands"
    if name.endswith(("UpperArm", "LowerArm")):
        return "arms"
    if name.endswith(("UpperLeg", "LowerLeg", "Foot")):
        return "legs"
    if name in ("Neck", "Head"):
        return "head"
    return "torso"


GROUPS = ("torso", "head", "arms", "hands", "fingers", "legs")
GROUP_ROWS = {g: np.array([i for i, n in enumerate(BONES) if bone_group(n) == g]) for g in GROUPS}


# -- pure statistics over a clip's rigs: bones (frames, bones, 4), confidence (frames, parts) ----


def angles_deg(q: F64, r: F64) -> F64:
    """Rotation angle between quaternions (either sign) along the last axis, in degrees."""
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    r = r / np.linalg.norm(r, axis=-1, keepdims=True)
    r = np.where(np.sum(q * r, axis=-1, keepdims=True) < 0.0, -r, r)
    return np.asarray(
        np.degrees(
            4.0 * np.arctan2(np.linalg.norm(q - r, axis=-1), np.linalg.norm(q + r, axis=-1))
        ),
        dtype=np.float64,
    )


def steps_deg(bones: F64) -> F64:
    """(frames - 1, bones): each bone's rotation change between consecutive results."""
    return angles_deg(bones[1:], bones[:-1])


def from_rest_deg(bones: F64, name: str) -> F64:
    rest = np.zeros(4)
    rest[3] = 1.0
    return angles_deg(bones[:, BONE_INDEX[name]], rest)


def jitter_by_group(bones: F64) -> dict[str, tuple[float, float, float]]:
    """p50, p95, max of the per-result change, over every bone of each group."""
    steps = steps_deg(bones)
    out = {}
    for group, rows in GROUP_ROWS.items():
        values = steps[:, rows].ravel()
        out[group] = (
            float(np.percentile(values, 50)),
            float(np.percentile(values, 95)),
            float(values.max()),
        )
    return out


def hand_toggles(confidence: F64) -> dict[str, int]:
    """How many times each hand's detection came or went."""
    out = {}
    for side in ("left", "right"):
        seen = confidence[:, PART_INDEX[f"{side}_hand"]] > 0.0
        out[side] = int(np.count_nonzero(seen[1:] != seen[:-1]))
    return out


def largest_hand_step(bones: F64) -> dict[str, float]:
    """Per side, the largest change of its Hand or LowerArm between consecutive results."""
    steps = steps_deg(bones)
    out = {}
    for side in ("Left", "Right"):
        rows = [BONE_INDEX[side + "Hand"], BONE_INDEX[side + "LowerArm"]]
        out[side.lower()] = float(steps[:, rows].max())
    return out


# -- running a clip -------------------------------------------------------------------------


def masked(i: int) -> bool:
    """Frames in which hand detection is made to fail: 6 of every 18, from frame 12."""
    return i >= 12 and (i // 6) % 3 == 2


HAND_KEYS = ("left_hand", "left_hand_world", "right_hand", "right_hand_world")


def toggle_hands(frames: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The same detections with both hands lost in masked() frames: what the rig sees when
    MediaPipe's hand detection drops out while the picture (and so the pose) stays the same."""
    return [
        {k: v for k, v in parts.items() if not (masked(i) and k in HAND_KEYS)}
        for i, parts in enumerate(frames)
    ]


def clip_frames(path: Path) -> list[Any]:
    """A clip's BGR frames."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(bgr)
    cap.release()
    return frames


def clip_landmarks(path: Path) -> tuple[list[dict[str, Any]], int, int]:
    """Every frame of a clip through the holistic landmarker (VIDEO mode, 30 fps timestamps)."""
    import cv2

    from holistream.protocol import wire_parts
    from server.model import resolve_model
    from server.workers.pipelines import create

    model = resolve_model("holistic", allow_download=False, allow_build=False)
    detector = create("holistic", model, wire_parts(("face", "hands", "pose"), True))
    frames: list[dict[str, Any]] = []
    pictures = clip_frames(path)
    height, width = pictures[0].shape[:2]
    try:
        for i, bgr in enumerate(pictures):
            rgb = np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            frames.append(detector.detect(rgb, round(i * 1000 / FPS)))
    finally:
        detector.close()
    return frames, width, height


def run_rig(
    frames: Sequence[dict[str, Any]], width: int, height: int, options: RigOptions
) -> tuple[F64, F64]:
    """(bones (n, B, 4), confidence (n, P)) of a fresh RigSession over the frames."""
    from server.rig.session import RigSession

    session = RigSession(options)
    bones, conf = [], []
    for i, parts in enumerate(frames):
        rig = session.rig(Landmarks(width, height, dict(parts)), i / FPS)
        bones.append(rig.bones.copy())
        conf.append(rig.confidence.copy())
    return np.array(bones), np.array(conf)


def report(name: str, frames: Sequence[dict[str, Any]], width: int, height: int) -> list[str]:
    lines = [f"## {name} ({len(frames)} frames, {width}x{height})", ""]
    runs = {
        "default": run_rig(frames, width, height, RigOptions()),
        "raw (smoothing off)": run_rig(frames, width, height, RigOptions(smoothing=False)),
    }
    for label, (all_bones, conf) in runs.items():
        bones = all_bones[LOCK_ON:]
        hips = from_rest_deg(bones, "Hips")
        lines.append(f"{label}: Hips from rest median {np.median(hips):.1f}°, "
                     f"p95 {np.percentile(hips, 95):.1f}°")
        toggles = hand_toggles(conf[LOCK_ON:])
        lines.append(f"{label}: hand detection toggles {toggles}; largest Hand/LowerArm "
                     "change between results " + ", ".join(
                         f"{k} {v:.1f}°" for k, v in largest_hand_step(bones).items()))
        lines.append(f"{label}: jitter per result (p50 / p95 / max, degrees):")
        for group, (p50, p95, top) in jitter_by_group(bones).items():
            lines.append(f"    {group:8s} {p50:6.2f} {p95:6.2f} {top:6.1f}")
        legs = from_rest_deg(bones, "LeftUpperLeg")
        lines.append(f"{label}: LeftUpperLeg from rest median {np.median(legs):.0f}° "
                     "(90° seated, 0° standing or tracked straight)")
    lines.append("")
    return lines


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.rig_quality", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", nargs="+", choices=sorted(CLIPS), default=sorted(CLIPS))
    args = parser.parse_args(list(argv) if argv is not None else None)
    for name in args.clips:
        frames, width, height = clip_landmarks(CLIPS[name])
        print("\n".join(report(name, frames, width, height)), flush=True)
        if name == "messi_pan":
            toggled = toggle_hands(frames)
            print("\n".join(report(name + ", hands toggling", toggled, width, height)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
