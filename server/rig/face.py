"""Head rotation and VRM expressions from the 478-point MediaPipe face mesh, by geometry alone.

No blendshape model runs offline, so everything comes from landmark geometry:

* Head rotation: a scaled rigid fit (Umeyama / Kabsch) of 21 landmarks that expressions barely
  move (nose ridge, forehead, eye corners, nostrils, face outline at the ears) onto the same points
  of MediaPipe's canonical face model. The landmarks are first scaled to pixels (x*width, y*height,
  z*width: MediaPipe's z has x's scale), otherwise a 16:9 image would squash the face and read as
  pitch. The fit gives the rotation from the canonical, camera-facing head to the observed one.
* Measurements are then taken in the head's own frame (points rotated back and divided by the fit
  scale, so in canonical-model centimetres): ratios of lid gap to eye width, lip gap and mouth
  width to the outer eye-corner distance, iris offset to eye width. They do not change with head
  rotation or distance to the camera.

Calibration constants below come from the canonical model (neutral: eyes open, lips together),
from a real MediaPipe run on the project's test video, and from typical ranges; they lean
conservative so that a neutral face reads as zero on every expression.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from holistream.rig import quat
from holistream.rig.skeleton import EXPRESSIONS

F64 = npt.NDArray[np.float64]

# Rigid landmarks and their positions in canonical_face_model.obj (cm; x toward the subject's
# left, y up, z toward the camera).
RIGID_INDICES = np.array(
    [1, 4, 5, 6, 8, 9, 10, 151, 168, 195, 197, 33, 133, 263, 362, 98, 327, 127, 356, 234, 454]
)
_RIGID_CANONICAL = np.array([
    (0.0000, -1.1269, 7.4756), (0.0000, -0.4632, 7.5866), (0.0000, 0.3657, 7.2429),
    (0.0000, 2.4733, 5.7886), (0.0000, 4.0190, 5.2848), (0.0000, 4.8860, 5.3853),
    (0.0000, 8.2618, 4.4815), (0.0000, 6.5454, 5.0273), (0.0000, 3.2710, 5.2360),
    (0.0000, 1.0594, 6.7746), (0.0000, 1.7284, 6.3167),
    (-4.4459, 2.6640, 3.1734), (-1.8564, 2.5852, 3.7579),
    (4.4459, 2.6640, 3.1734), (1.8564, 2.5852, 3.7579),
    (-1.4056, -1.7142, 5.2411), (1.4056, -1.7142, 5.2411),
    (-7.7431, 2.3650, -2.0052), (7.7431, 2.3650, -2.0052),
    (-7.6642, 0.6731, -2.4359), (7.6642, 0.6731, -2.4359),
])  # fmt: skip
# In the avatar frame (x = the subject's right), centred.
_REF = _RIGID_CANONICAL * (-1.0, 1.0, 1.0)
_REF = _REF - _REF.mean(axis=0)
_REF_SQ = float(np.sum(_REF * _REF))

# Eyes: subject's right eye = 33 (outer) / 133 (inner), iris centre 468; left: 263 / 362, 473.
# Lid pairs (upper, lower) across the middle of each eye.
RIGHT_EYE = (33, 133, ((160, 144), (159, 145), (158, 153)), 468)
LEFT_EYE = (263, 362, ((387, 373), (386, 374), (385, 380)), 473)
LIP_PAIRS = ((13, 14), (82, 87), (312, 317))  # inner upper / inner lower lip
MOUTH_CORNERS = (61, 291)

# Lid gap / eye width: canonical open eye 0.239, a real open eye 0.33-0.35 (MediaPipe
# FaceLandmarker on tests/fixtures/astronaut_pan_640x480.avi); <= EAR_CLOSED reads as closed.
EAR_OPEN = 0.22
EAR_CLOSED = 0.09
# Lip gap / outer eye-corner distance: canonical 0.064 (lips together); a wide "ah" is ~0.35.
MOUTH_OPEN_MIN = 0.08
MOUTH_OPEN_MAX = 0.30
# Mouth width / outer eye-corner distance in the canonical face; ±5 % is dead zone, ±25 % full.
MOUTH_WIDTH_NEUTRAL = 0.5525
# Iris offset from the eye-corner midpoint, in eye widths: dead zone and full scale. Looking
# straight ahead, MediaPipe puts the iris centre 0.066 ± 0.005 eye widths above the line between
# the corners (same video): GAZE_V_REST is subtracted first.
GAZE_H = (0.02, 0.12)
GAZE_V = (0.015, 0.07)
GAZE_V_REST = 0.065
# Beyond this yaw the far half of the mesh is guessed; confidence fades to 0 at +30°.
CONFIDENT_YAW_DEG = 50.0


class FaceResult(NamedTuple):
    rotation: F64  # (4,) head rotation in the avatar frame, relative to facing the camera
    expressions: F64  # (len(EXPRESSIONS),) in [0, 1]
    head: F64  # (yaw, pitch, roll) degrees, skeleton.Rig.head conventions
    confidence: float


def _ramp(x: float, lo: float, hi: float) -> float:
    """0 below lo, 1 above hi, linear between (plain floats: numpy is slow on scalars)."""
    return min(max((x - lo) / (hi - lo), 0.0), 1.0)


def face_points(face: npt.ArrayLike, width: int, height: int) -> F64:
    """Normalised face landmarks -> pixel-scaled points in avatar-frame axes."""
    return -quat.clean(np.asarray(face)[:, :3]) * (width, height, width)


def fit_head(pts: F64) -> tuple[F64, F64, F64, float]:
    """Scaled rigid fit of the canonical rigid points: (rotation matrix, quaternion, centre, scale).

    pts ≈ scale * R @ ref + centre. Scale is 0 when the points are degenerate.
    """
    obs = pts[RIGID_INDICES]
    centre = obs.mean(axis=0)
    obs_c = obs - centre
    cov = _REF.T @ obs_c  # sum of ref_i obs_i^T
    u, sv, vt = np.linalg.svd(cov)
    d = 1.0 if np.linalg.det(vt.T @ u.T) >= 0 else -1.0
    rot = vt.T @ np.diag((1.0, 1.0, d)) @ u.T
    scale = float((sv[0] + sv[1] + d * sv[2]) / _REF_SQ)
    if not np.isfinite(scale) or scale <= 1e-9 or not np.all(np.isfinite(rot)):
        return np.eye(3), quat.IDENTITY.copy(), centre, 0.0
    return rot, quat.from_matrix(rot), centre, scale


# The landmarks measured after the fit, gathered once: the rows of _MEASURED, by name.
_MEASURED = np.array(
    [RIGHT_EYE[0], RIGHT_EYE[1], RIGHT_EYE[3], *(i for p in RIGHT_EYE[2] for i in p)]
    + [LEFT_EYE[0], LEFT_EYE[1], LEFT_EYE[3], *(i for p in LEFT_EYE[2] for i in p)]
    + [i for p in LIP_PAIRS for i in p]
    + list(MOUTH_CORNERS)
)
Point = list[float]


def _eye(p: list[Point]) -> tuple[float, float, float]:
    """(lid gap / eye width, iris x offset, iris y offset / eye width) from [outer, inner, iris,
    up0, lo0, up1, lo1, up2, lo2] in head coordinates."""
    outer, inner, iris = p[0], p[1], p[2]
    width = max(math.dist(outer, inner), 1e-6)
    gap = (math.dist(p[3], p[4]) + math.dist(p[5], p[6]) + math.dist(p[7], p[8])) / 3.0
    gx = (iris[0] - 0.5 * (outer[0] + inner[0])) / width
    gy = (iris[1] - 0.5 * (outer[1] + inner[1])) / width
    return gap / width, gx, gy


def solve_face(face: npt.ArrayLike, width: int, height: int) -> FaceResult | None:
    """Head rotation, angles, expressions and confidence from one (478, 3) face, or None."""
    arr = np.asarray(face)
    if arr.ndim != 2 or arr.shape[0] < 478 or arr.shape[1] < 3:
        return None
    pts = face_points(arr[:478], width, height)
    rot, q, centre, scale = fit_head(pts)
    if scale == 0.0:
        return None
    # Back into the head frame (rot.T on each row), canonical-model centimetres; then plain
    # Python floats: a few dozen scalar measurements are far cheaper in math than in numpy.
    p: list[Point] = (((pts[_MEASURED] - centre) @ rot) / scale).tolist()
    ear_r, gx_r, gy_r = _eye(p[0:9])
    ear_l, gx_l, gy_l = _eye(p[9:18])
    lips, corners = p[18:24], p[24:26]
    blink_r = _ramp(EAR_OPEN - ear_r, 0.0, EAR_OPEN - EAR_CLOSED)
    blink_l = _ramp(EAR_OPEN - ear_l, 0.0, EAR_OPEN - EAR_CLOSED)

    span = max(math.dist(p[0], p[9]), 1e-6)  # outer eye corners
    gap = sum(math.dist(lips[k], lips[k + 1]) for k in (0, 2, 4)) / 3.0
    opened = _ramp(gap / span, MOUTH_OPEN_MIN, MOUTH_OPEN_MAX)
    w = math.dist(corners[0], corners[1]) / span / MOUTH_WIDTH_NEUTRAL
    wide = _ramp(w, 1.05, 1.25)
    narrow = _ramp(-w, -0.95, -0.75)

    gx = 0.5 * (gx_r + gx_l)  # toward the avatar's right
    gy = 0.5 * (gy_r + gy_l) - GAZE_V_REST  # up
    lid = 1.0 - max(blink_l, blink_r)  # closing lids drag the iris estimate: trust it less

    values = {
        "Blink_L": blink_l,
        "Blink_R": blink_r,
        "A": opened * (1.0 - wide) * (1.0 - narrow),
        "I": (1.0 - opened) * wide,
        "U": (1.0 - opened) * narrow,
        "E": opened * wide,
        "O": opened * narrow,
        "LookUp": _ramp(gy, *GAZE_V) * lid,
        "LookDown": _ramp(-gy, *GAZE_V) * lid,
        "LookLeft": _ramp(-gx, *GAZE_H),
        "LookRight": _ramp(gx, *GAZE_H),
    }
    out = np.array([values[name] for name in EXPRESSIONS])

    r = rot.tolist()  # Unity Euler order, as quat.to_euler_yxz
    yaw = math.degrees(math.atan2(r[0][2], r[2][2]))
    pitch = math.degrees(math.asin(min(max(-r[1][2], -1.0), 1.0)))
    roll = math.degrees(math.atan2(r[1][0], r[1][1]))
    conf = 1.0 - _ramp(abs(yaw), CONFIDENT_YAW_DEG, CONFIDENT_YAW_DEG + 30.0)
    return FaceResult(q, out, np.array([yaw, pitch, roll]), conf)
