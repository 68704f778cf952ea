"""One frame's landmarks as plain numpy arrays: the shape every layer agrees on.

The worker fills it from whichever MediaPipe pipeline ran; the protocol codec, the rig solver and
the fan-out read it. Arrays are float32 and already rounded to the protocol's precision, so JSON and
binary encodings of the same result carry the same values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float32]

POSE_POINTS = 33
FACE_POINTS = 478
HAND_POINTS = 21

# Stride (numbers per point) of each part, as sent on the wire in flat arrays.
PART_STRIDES: dict[str, int] = {
    "pose": 5,  # x, y, z (normalised image coords), visibility, presence
    "pose_world": 3,  # x, y, z metres, origin between the hips
    "face": 3,  # x, y, z normalised
    "left_hand": 3,
    "right_hand": 3,
    "left_hand_world": 3,  # metres, origin near the hand's centre
    "right_hand_world": 3,
}
PART_POINTS: dict[str, int] = {
    "pose": POSE_POINTS,
    "pose_world": POSE_POINTS,
    "face": FACE_POINTS,
    "left_hand": HAND_POINTS,
    "right_hand": HAND_POINTS,
    "left_hand_world": HAND_POINTS,
    "right_hand_world": HAND_POINTS,
}
PART_NAMES: tuple[str, ...] = tuple(PART_STRIDES)

# The user-facing groups a session asks for, and the wire parts each group carries.
GROUPS: dict[str, tuple[str, ...]] = {
    "face": ("face",),
    "hands": ("left_hand", "right_hand", "left_hand_world", "right_hand_world"),
    "pose": ("pose", "pose_world"),
}


@dataclass(slots=True)
class Landmarks:
    """Landmarks of one frame; a part is None when it was not found or not asked for.

    "left"/"right" are the person's own left and right, as MediaPipe Holistic reports them.
    Each array has shape (points, stride) per PART_POINTS / PART_STRIDES.
    """

    width: int
    height: int
    parts: dict[str, Array | None] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def get(self, name: str) -> Array | None:
        return self.parts.get(name)
