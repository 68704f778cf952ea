"""The rig's neutral pose and the ease into it: what a consumer shows when tracking is lost
(the server's motion gate, server/rig/tracking.py, rests lost parts on it; the VMC bridge fades a
stream that stopped into it). Pure; Unity frame, as in skeleton.py."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from holistream.rig import quat
from holistream.rig.skeleton import BONE_INDEX, BONES, EXPRESSIONS, PARTS, Rig

F64 = npt.NDArray[np.float64]

_LEGS = np.array(
    [BONE_INDEX[n] for n in ("LeftUpperLeg", "LeftLowerLeg", "LeftFoot",
                             "RightUpperLeg", "RightLowerLeg", "RightFoot")],
    dtype=np.intp,
)  # fmt: skip
ARM_DOWN_DEG = 65.0  # the rest arms hang this far below the T-pose, beside the body


def _axis_angle(axis: tuple[float, float, float], deg: float) -> list[float]:
    h = math.radians(deg) / 2.0
    return [axis[0] * math.sin(h), axis[1] * math.sin(h), axis[2] * math.sin(h), math.cos(h)]


def rest_bones(seated: bool) -> F64:
    """Local rotations of the rest (neutral) pose: upright, arms down beside the body, legs
    straight (standing) or thighs forward with the shins down (seated). Unity frame."""
    bones = quat.identity(len(BONES))
    # About +Z the avatar's left arm (along -X) turns down (toward -Y); the right arm mirrors.
    bones[BONE_INDEX["LeftUpperArm"]] = _axis_angle((0.0, 0.0, 1.0), ARM_DOWN_DEG)
    bones[BONE_INDEX["RightUpperArm"]] = _axis_angle((0.0, 0.0, 1.0), -ARM_DOWN_DEG)
    if seated:  # -90° about X turns a thigh from straight down (-Y) to forward (+Z)
        for side in ("Left", "Right"):
            bones[BONE_INDEX[side + "UpperLeg"]] = _axis_angle((1.0, 0.0, 0.0), -90.0)
            bones[BONE_INDEX[side + "LowerLeg"]] = _axis_angle((1.0, 0.0, 0.0), 90.0)
    return bones


def neutral_rig(rig: Rig, seated: bool | None = None) -> Rig:
    """The rest pose a rig eases to when tracking is lost: rest_bones, a neutral face and head,
    the hips at the neutral position. The legs stay as `rig` has them unless `seated` is given.
    Confidences are 0 (nothing tracked)."""
    bones = rest_bones(bool(seated))
    if seated is None:
        bones[_LEGS] = rig.bones[_LEGS]
    return Rig(bones, np.zeros(3), np.zeros(len(EXPRESSIONS)), np.zeros(3), np.zeros(len(PARTS)))


FADE_HZ = 30.0  # bundles a second while easing to neutral (the VMC bridge)


def blend_rig(a: Rig, b: Rig, t: float) -> Rig:
    """The rig t of the way from a to b (0..1): bones along the shortest arc, the rest linear."""
    t = min(max(t, 0.0), 1.0)
    step = quat.power(quat.mul(quat.conj(a.bones), b.bones), t)
    return Rig(
        quat.normalize(quat.mul(a.bones, step)),
        a.hips_position + t * (b.hips_position - a.hips_position),
        a.expressions + t * (b.expressions - a.expressions),
        a.head + t * (b.head - a.head),
        b.confidence.copy(),
    )


def fade_to_neutral(last: Rig, duration_s: float, hz: float = FADE_HZ) -> list[Rig]:
    """The rigs of an ease (smoothstep) from `last` to its neutral pose, ending on it."""
    end = neutral_rig(last)
    n = max(1, round(duration_s * hz))
    return [blend_rig(last, end, (k / n) * (k / n) * (3.0 - 2.0 * k / n)) for k in range(1, n + 1)]
