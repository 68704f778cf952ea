"""Regions of interest as MediaPipe's Holistic graph derives them: pure arithmetic, no I/O.

The Holistic graph finds the face and the hands inside regions derived from the pose landmarks
(tasks/cc/vision/holistic_landmarker: holistic_face_tracking.cc, holistic_hand_tracking.cc, and
the calculators they use). This module reproduces those regions and the projections back to
the image, so server.predict.composite can run the same models on the same crops without the
graph's tracking state.

Conventions are MediaPipe's: a `Rect` is a NormalizedRect (centre, width and height as fractions
of the image's width and height, rotation in radians, clockwise in image coordinates); every
angle is measured in pixels, so it needs the image size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Points = npt.NDArray[np.floating]

# Pose landmark indices (holistream.landmarks / MediaPipe's pose topology).
POSE_FACE = slice(0, 11)  # nose .. mouth right: the face part of the pose
LEFT_WRIST, RIGHT_WRIST = 15, 16
LEFT_PINKY, RIGHT_PINKY = 17, 18
LEFT_INDEX, RIGHT_INDEX = 19, 20
HAND_VISIBILITY = 0.1  # a hand is looked for only when the pose sees its wrist above this


@dataclass(frozen=True, slots=True)
class Rect:
    x: float  # centre, fraction of the image width
    y: float  # centre, fraction of the image height
    w: float  # fraction of the image width
    h: float  # fraction of the image height
    rotation: float = 0.0  # radians

    def pixels(self, width: int, height: int) -> tuple[float, float, float, float]:
        """Centre and size in pixels."""
        return self.x * width, self.y * height, self.w * width, self.h * height


def usable(rect: Rect, width: int, height: int) -> bool:
    """A region that can be cropped: finite, and at least a pixel a side (points that all
    coincide give an empty one)."""
    values = (rect.x, rect.y, rect.w, rect.h, rect.rotation)
    return all(math.isfinite(v) for v in values) and min(rect.w * width, rect.h * height) >= 1


def normalize_radians(angle: float) -> float:
    """Into [-pi, pi), as MediaPipe does."""
    return angle - 2 * math.pi * math.floor((angle + math.pi) / (2 * math.pi))


def rotation(start: Points, end: Points, target: float, width: int, height: int) -> float:
    """The rotation that turns the vector start→end (normalized points) to `target` radians."""
    x0, y0 = float(start[0]) * width, float(start[1]) * height
    x1, y1 = float(end[0]) * width, float(end[1]) * height
    return normalize_radians(target - math.atan2(-(y1 - y0), x1 - x0))


def bounding_rect(points: Points) -> Rect:
    """The axis-aligned box around normalized points (LandmarksToDetection + RectFromBox)."""
    xs, ys = points[:, 0].astype(np.float64), points[:, 1].astype(np.float64)
    xmin, xmax, ymin, ymax = xs.min(), xs.max(), ys.min(), ys.max()
    return Rect(float(xmin + xmax) / 2, float(ymin + ymax) / 2, float(xmax - xmin),
                float(ymax - ymin))


def transform(rect: Rect, width: int, height: int, *, scale: float, shift_x: float = 0.0,
              shift_y: float = 0.0, square_long: bool = False) -> Rect:
    """RectTransformationCalculator on a NormalizedRect: shift along the rotated axes, make
    square on the long side (in pixels), then scale."""
    w, h, r = rect.w, rect.h, rect.rotation
    if r == 0.0:
        x, y = rect.x + w * shift_x, rect.y + h * shift_y
    else:
        c, s = math.cos(r), math.sin(r)
        x = rect.x + (width * w * shift_x * c - height * h * shift_y * s) / width
        y = rect.y + (width * w * shift_x * s + height * h * shift_y * c) / height
    if square_long:
        side = max(w * width, h * height)
        w, h = side / width, side / height
    return Rect(x, y, w * scale, h * scale, r)


# ----------------------------------------------------------------------------- face


def face_roi_from_pose(pose: Points, width: int, height: int) -> Rect:
    """Where Holistic looks for a face: the box around the pose's 11 face points, rotated by
    the line from point 5 to point 2 (the eyes), three times as large and square."""
    face = pose[POSE_FACE, :2]
    box = bounding_rect(face)
    r = rotation(face[5], face[2], 0.0, width, height)
    return transform(Rect(box.x, box.y, box.w, box.h, r), width, height, scale=3.0,
                     square_long=True)


# ----------------------------------------------------------------------------- hands


def hand_roi_from_pose(wrist: Points, pinky: Points, index: Points, width: int,
                       height: int) -> Rect:
    """Where Holistic first crops a hand (HandDetectionsFromPoseToRectsCalculator, then 2.7×,
    square, shifted by -0.1 of its height along its own axis): centred on an estimated middle
    finger, twice as wide as the wrist→middle distance, rotated so the hand points up."""
    xw, yw = float(wrist[0]) * width, float(wrist[1]) * height
    xm = (2 * float(index[0]) + float(pinky[0])) / 3 * width
    ym = (2 * float(index[1]) + float(pinky[1])) / 3 * height
    size = math.hypot(xm - xw, ym - yw) * 2
    r = normalize_radians(math.pi / 2 - math.atan2(-(ym - yw), xm - xw))
    rect = Rect(xm / width, ym / height, size / width, size / height, r)
    return transform(rect, width, height, scale=2.7, shift_y=-0.1, square_long=True)


def hand_roi_from_recrop(centre: Points, guide: Points, width: int, height: int) -> Rect:
    """The refined hand region from the re-crop model's two points (AlignmentPointsRects with
    a target angle of -90°, then square, shifted by -0.1)."""
    xc, yc = float(centre[0]) * width, float(centre[1]) * height
    xg, yg = float(guide[0]) * width, float(guide[1]) * height
    size = math.hypot(xg - xc, yg - yc) * 2
    r = normalize_radians(-math.pi / 2 - math.atan2(-(yg - yc), xg - xc))
    rect = Rect(float(centre[0]), float(centre[1]), size / width, size / height, r)
    return transform(rect, width, height, scale=1.0, shift_y=-0.1, square_long=True)


# ----------------------------------------------------------------------------- projections


def box_points(rect: Rect, width: int, height: int) -> npt.NDArray[np.float32]:
    """The region's corners in pixels, in OpenCV's boxPoints order (bottom-left, top-left,
    top-right, bottom-right of the upright crop), which MediaPipe's CPU crop maps to the
    tensor's corners."""
    cx, cy, w, h = rect.pixels(width, height)
    b, a = math.cos(rect.rotation) * 0.5, math.sin(rect.rotation) * 0.5
    p0 = (cx - a * h - b * w, cy + b * h - a * w)
    p1 = (cx + a * h - b * w, cy - b * h - a * w)
    return np.array([p0, p1, (2 * cx - p0[0], 2 * cy - p0[1]), (2 * cx - p1[0], 2 * cy - p1[1])],
                    dtype=np.float32)


def from_crop(points: Points, rect: Rect, width: int, height: int) -> Points:
    """Points normalized to an upright crop of `rect` → normalized to the image (rotation in
    pixels, as ImageToTensor's matrix does). z, when present, scales with the region's width."""
    cx, cy, w, h = rect.pixels(width, height)
    c, s = math.cos(rect.rotation), math.sin(rect.rotation)
    u = (points[:, 0].astype(np.float64) - 0.5) * w
    v = (points[:, 1].astype(np.float64) - 0.5) * h
    out = np.array(points, dtype=np.float64, copy=True)
    out[:, 0] = (cx + c * u - s * v) / width
    out[:, 1] = (cy + s * u + c * v) / height
    if points.shape[1] > 2:
        out[:, 2] = points[:, 2] * rect.w
    return out


def from_crop_normalized(points: Points, rect: Rect) -> Points:
    """LandmarkProjectionCalculator with a NORM_RECT and no image size (what the hand landmarks
    graph uses): the rotation is applied to normalized coordinates, z scales with the width."""
    c, s = math.cos(rect.rotation), math.sin(rect.rotation)
    u = points[:, 0].astype(np.float64) - 0.5
    v = points[:, 1].astype(np.float64) - 0.5
    out = np.array(points, dtype=np.float64, copy=True)
    out[:, 0] = (c * u - s * v) * rect.w + rect.x
    out[:, 1] = (s * u + c * v) * rect.h + rect.y
    out[:, 2] = points[:, 2] * rect.w
    return out


def rotate_world(points: Points, angle: float) -> Points:
    """WorldLandmarkProjectionCalculator: world points turned by the region's rotation."""
    c, s = math.cos(angle), math.sin(angle)
    out = np.array(points, dtype=np.float64, copy=True)
    out[:, 0] = c * points[:, 0] - s * points[:, 1]
    out[:, 1] = s * points[:, 0] + c * points[:, 1]
    return out


def align_to_wrist(hand_world: Points, pose_wrist_world: Points) -> Points:
    """AlignHandToPoseInWorldCalculator: the hand moved so its wrist is the pose's wrist."""
    offset = np.asarray(pose_wrist_world[:3], np.float64) - hand_world[0, :3]
    return np.asarray(hand_world, np.float64) + offset
