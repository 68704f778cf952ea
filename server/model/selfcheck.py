"""Prove a bundle works before it is trusted: run it on a known image and count landmarks.

A bundle that loads and finds the right counts can still be wrong: a face rewrite with a wrong
index table yields 478 well-formed but misplaced points. So besides counting we check that each
iris lies between the corners of its eye, and for Holistic that the face mesh's nose tip is
near the pose's nose.
Each check uses a fresh landmarker in IMAGE mode: in mediapipe 1.2.3 a reused landmarker is
not stateless between images.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import ModelError

Counts = dict[str, int]

# What each bundle must find on its fixture image (fixtures ship in server/fixtures/).
# Hands alone: its palm detector finds only the larger of messi5's two hands (the other is a
# few pixels wide against the crowd); legacy 0.10.21 ``solutions.hands`` finds the same one.
# So it must find at least one hand, with 21 points on every hand found.
EXPECTED: dict[str, tuple[str, Counts]] = {
    "holistic": ("messi5.jpg", {"face": 478, "pose": 33, "left_hand": 21, "right_hand": 21}),
    "holistic_lite": (
        "messi5.jpg", {"face": 478, "pose": 33, "left_hand": 21, "right_hand": 21}),
    "face": ("astronaut_face.jpg", {"face": 478}),
    "pose": ("messi5.jpg", {"pose": 33}),
    "hands": ("messi5.jpg", {"hands": 1, "hand_points": 21}),
}
_AT_LEAST = frozenset({"hands"})
# Face mesh indices: eye corners (outer, inner) per iris centre, and the nose tip.
_IRIS_EYE_CORNERS = ((468, 33, 133), (473, 263, 362))
_NOSE_TIP, _POSE_NOSE = 1, 0


def format_counts(counts: Counts) -> str:
    """``face=478 pose=33 ...`` for logs and the CLI."""
    return " ".join(f"{k}={v}" for k, v in counts.items())


def _landmarker(name: str, model: Path) -> Any:
    from mediapipe.tasks.python import BaseOptions, vision

    base = BaseOptions(model_asset_path=str(model))
    mode = vision.RunningMode.IMAGE
    if name in ("holistic", "holistic_lite"):
        return vision.HolisticLandmarker.create_from_options(
            vision.HolisticLandmarkerOptions(base_options=base, running_mode=mode)
        )
    if name == "face":
        return vision.FaceLandmarker.create_from_options(
            vision.FaceLandmarkerOptions(base_options=base, running_mode=mode, num_faces=1)
        )
    if name == "pose":
        return vision.PoseLandmarker.create_from_options(
            vision.PoseLandmarkerOptions(base_options=base, running_mode=mode, num_poses=1)
        )
    if name == "hands":
        return vision.HandLandmarker.create_from_options(
            vision.HandLandmarkerOptions(base_options=base, running_mode=mode, num_hands=2)
        )
    raise ModelError(f"no self-check for bundle {name!r}")


def _counts(name: str, result: Any) -> tuple[Counts, Sequence[Any], Sequence[Any]]:
    """(counts, face points, pose points) of one result, whatever the task type."""
    if name in ("holistic", "holistic_lite"):
        face, pose = result.face_landmarks or [], result.pose_landmarks or []
        counts = {"face": len(face), "pose": len(pose),
                  "left_hand": len(result.left_hand_landmarks or []),
                  "right_hand": len(result.right_hand_landmarks or [])}  # fmt: skip
        return counts, face, pose
    if name == "face":
        faces = result.face_landmarks or []
        return {"face": len(faces[0]) if faces else 0}, faces[0] if faces else [], []
    if name == "pose":
        poses = result.pose_landmarks or []
        return {"pose": len(poses[0]) if poses else 0}, [], poses[0] if poses else []
    hands = result.hand_landmarks or []
    return {"hands": len(hands), "hand_points": min((len(h) for h in hands), default=0)}, [], []


def counts_ok(counts: Counts, expected: Counts) -> bool:
    """Exact match, except keys in ``_AT_LEAST`` that may exceed the expected value."""
    return counts.keys() == expected.keys() and all(
        counts[k] >= v if k in _AT_LEAST else counts[k] == v for k, v in expected.items()
    )


def check_geometry(face: Sequence[Any], pose: Sequence[Any]) -> None:
    """Raise ModelError if the face points are not shaped like a face (see module doc)."""
    for iris, outer, inner in _IRIS_EYE_CORNERS:
        lo, hi = sorted((face[outer].x, face[inner].x))
        width = hi - lo
        mid_y = (face[outer].y + face[inner].y) / 2
        if not (lo < face[iris].x < hi and abs(face[iris].y - mid_y) < width):
            raise ModelError(
                f"face landmarks are implausible: iris {iris} at ({face[iris].x:.3f}, "
                f"{face[iris].y:.3f}) is not inside eye {outer}-{inner}"
            )
    if pose:
        xs = [p.x for p in face]
        tolerance = (max(xs) - min(xs)) / 2
        dx, dy = face[_NOSE_TIP].x - pose[_POSE_NOSE].x, face[_NOSE_TIP].y - pose[_POSE_NOSE].y
        if (dx * dx + dy * dy) ** 0.5 > tolerance:
            raise ModelError("face and pose landmarks disagree about where the nose is")


def self_check(name: str, model: Path) -> Counts:
    """Run bundle ``name`` at ``model`` on its fixture; return counts or raise ModelError."""
    if name not in EXPECTED:
        raise ModelError(f"no self-check for bundle {name!r}")
    import mediapipe as mp

    image_name, expected = EXPECTED[name]
    resource = importlib.resources.files("server") / "fixtures" / image_name
    try:
        with importlib.resources.as_file(resource) as image_path:
            image = mp.Image.create_from_file(str(image_path))
        with _landmarker(name, model) as landmarker:
            result = landmarker.detect(image)
    except ModelError:
        raise
    except Exception as e:  # the native layer raises RuntimeError/ValueError/OSError alike
        raise ModelError(f"self-check of {name} bundle {model} failed to run: {e}") from e
    counts, face, pose = _counts(name, result)
    if not counts_ok(counts, expected):
        raise ModelError(
            f"self-check of {name} bundle {model} on {image_name}: found "
            f"{format_counts(counts)}, expected {format_counts(expected)}"
        )
    if face:
        check_geometry(face, pose)
    return counts
