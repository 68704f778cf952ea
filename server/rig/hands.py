"""Hand and finger bone directions from MediaPipe's 21 hand landmarks.

Each bone is given as a (primary, secondary) pair of directions in the avatar frame, matching
skeleton.REST_PRIMARY / REST_SECONDARY; the solver turns all pairs of a frame into rotations in one
batch. Fingers carry no twist of their own: their roll is pinned to the hand's side axis (index
knuckle minus little knuckle), which is the hinge of a curling finger, so curl and spread come out
as rotations about the right axes and never as spurious twist.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from holistream.landmarks import Landmarks
from holistream.rig.quat import clean, cross

F64 = npt.NDArray[np.float64]

WRIST, INDEX_MCP, MIDDLE_MCP, PINKY_MCP = 0, 5, 9, 17
# MediaPipe hand joints per finger, base to tip (thumb: CMC, MCP, IP, tip).
FINGER_JOINTS: dict[str, tuple[int, int, int, int]] = {
    "Thumb": (1, 2, 3, 4),
    "Index": (5, 6, 7, 8),
    "Middle": (9, 10, 11, 12),
    "Ring": (13, 14, 15, 16),
    "Little": (17, 18, 19, 20),
}
# Segment k of a finger (Proximal, Intermediate, Distal) runs joint k -> joint k+1, in the order of
# skeleton.BONES. Unity's ThumbProximal is the thumb metacarpal (CMC -> MCP), so this holds for
# the thumb as well.
SEG_FROM = np.array([j[k] for j in FINGER_JOINTS.values() for k in range(3)], dtype=np.intp)
SEG_TO = np.array([j[k + 1] for j in FINGER_JOINTS.values() for k in range(3)], dtype=np.intp)
IS_THUMB = np.array([k < 3 for k in range(15)])


def hand_points(lm: Landmarks, side: str) -> F64 | None:
    """The (21, 3) hand of `side` ("left"/"right") in avatar-frame axes, or None.

    Prefers the metric world landmarks; falls back to the normalised ones scaled to pixels
    (x*width, y*height, z*width) so that the aspect ratio does not skew directions. Both are in
    camera axes (x right, y down, z away), which the avatar frame negates.
    """
    world = lm.get(f"{side}_hand_world")
    if world is not None and world.shape == (21, 3):
        return -clean(world)
    norm = lm.get(f"{side}_hand")
    if norm is None or norm.ndim != 2 or norm.shape[0] != 21:
        return None
    return -clean(norm[:, :3]) * (lm.width, lm.height, lm.width)


def hand_axes(pts: F64) -> tuple[F64, F64]:
    """(hand primary, hand secondary): wrist -> middle knuckle, little -> index knuckle."""
    return pts[MIDDLE_MCP] - pts[WRIST], pts[INDEX_MCP] - pts[PINKY_MCP]


def finger_vectors(pts: F64) -> tuple[F64, F64]:
    """Primary and secondary directions of the 15 finger bones (Thumb P/I/D, Index P/I/D, …)."""
    hand_p, hand_s = hand_axes(pts)
    prim = pts[SEG_TO] - pts[SEG_FROM]
    sec = np.empty_like(prim)
    sec[:] = hand_s
    # The thumb lies roughly in the palm plane, so the side axis cannot pin its roll; the hand's
    # normal (hand axis x side axis) can, and matches skeleton.REST_SECONDARY for thumbs.
    sec[IS_THUMB] = cross(hand_p, hand_s)
    return prim, sec


def pose_hand_axes(pose_pts: F64, side: str) -> tuple[F64, F64]:
    """Hand axes from the pose model's wrist / index / pinky points when no hand was tracked."""
    wrist, pinky, index = (15, 17, 19) if side == "left" else (16, 18, 20)
    mid = 0.5 * (pose_pts[index] + pose_pts[pinky])
    return mid - pose_pts[wrist], pose_pts[index] - pose_pts[pinky]
