"""The Holistic graph's regions of interest (server.predict.roi): pure arithmetic, fast."""

from __future__ import annotations

import math

import numpy as np
import pytest

from server.predict import roi

W, H = 640, 480


def pose_with_face(cx: float, cy: float, eye_dx: float, tilt: float = 0.0) -> np.ndarray:
    """33 pose points whose 11 face points lie around (cx, cy) in pixels, facing the camera
    (the person's left eye, point 2, on the image's right); the line from the right eye
    (point 5) to the left turned by `tilt` radians."""
    pose = np.zeros((33, 5))
    offsets = np.array([(0, 0), (0.4, -0.2), (0.5, -0.2), (0.6, -0.2), (-0.4, -0.2),
                        (-0.5, -0.2), (-0.6, -0.2), (0.8, 0), (-0.8, 0), (0.3, 0.3),
                        (-0.3, 0.3)]) * eye_dx
    c, s = math.cos(tilt), math.sin(tilt)
    turned = offsets @ np.array([[c, s], [-s, c]])
    pose[:11, 0] = (cx + turned[:, 0]) / W
    pose[:11, 1] = (cy + turned[:, 1]) / H
    return pose


def test_radians_are_normalized_into_minus_pi_to_pi() -> None:
    for angle in (0.0, 1.0, -1.0, math.pi - 1e-6, 3 * math.pi / 2, -3 * math.pi / 2, 7.0):
        out = roi.normalize_radians(angle)
        assert -math.pi <= out < math.pi
        assert math.isclose(math.cos(out), math.cos(angle), abs_tol=1e-9)
        assert math.isclose(math.sin(out), math.sin(angle), abs_tol=1e-9)


def test_degenerate_regions_are_not_cropped() -> None:
    point = np.array([0.5, 0.5])
    assert not roi.usable(roi.hand_roi_from_pose(point, point, point, W, H), W, H)
    assert not roi.usable(roi.Rect(0.5, math.nan, 0.1, 0.1), W, H)
    assert roi.usable(roi.Rect(0.5, 0.5, 2 / W, 2 / H, 1.0), W, H)


def test_transform_makes_square_in_pixels_then_scales_and_shifts_along_its_axes() -> None:
    rect = roi.Rect(0.5, 0.5, 0.1, 0.2)  # 64 × 96 pixels
    out = roi.transform(rect, W, H, scale=2.0, square_long=True)
    assert math.isclose(out.w * W, 192) and math.isclose(out.h * H, 192)
    shifted = roi.transform(rect, W, H, scale=1.0, shift_y=-0.1)
    assert math.isclose(shifted.y, 0.5 - 0.02) and shifted.x == 0.5
    # Turned by 90°: "up" of the region is the image's +x, so a shift in y moves x.
    turned = roi.transform(roi.Rect(0.5, 0.5, 0.1, 0.2, math.pi / 2), W, H, scale=1.0,
                           shift_y=-0.1)
    assert math.isclose(turned.x * W, 320 + 96 * 0.1) and math.isclose(turned.y, 0.5)


def test_face_region_is_three_times_the_face_points_square_and_follows_the_eyes() -> None:
    upright = roi.face_roi_from_pose(pose_with_face(300, 200, 40), W, H)
    assert math.isclose(upright.x * W, 300) and math.isclose(upright.rotation, 0, abs_tol=1e-9)
    assert math.isclose(upright.w * W, 3 * 64) and math.isclose(upright.h * H, 3 * 64)
    tilted = roi.face_roi_from_pose(pose_with_face(300, 200, 40, tilt=0.3), W, H)
    assert math.isclose(tilted.rotation, 0.3, abs_tol=1e-6)
    assert math.isclose(tilted.w * W, tilted.h * H)


@pytest.mark.parametrize(("dx", "dy", "expected"), [
    (0, -1, 0.0),  # fingers up: upright
    (1, 0, math.pi / 2),  # fingers to the right: turned a quarter clockwise
    (0, 1, -math.pi),  # fingers down: upside down
])
def test_hand_region_from_the_pose_points_along_the_hand(dx: int, dy: int,
                                                         expected: float) -> None:
    wrist = np.array([320 / W, 240 / H])
    index = np.array([(320 + 30 * dx - 5 * dy) / W, (240 + 30 * dy + 5 * dx) / H])
    pinky = np.array([(320 + 30 * dx + 10 * dy) / W, (240 + 30 * dy - 10 * dx) / H])
    rect = roi.hand_roi_from_pose(wrist, pinky, index, W, H)
    assert math.isclose(roi.normalize_radians(rect.rotation - expected), -math.pi,
                        abs_tol=1e-6) or math.isclose(rect.rotation, expected, abs_tol=1e-6)
    middle = np.array([320 + 30 * dx, 240 + 30 * dy], float)
    size = 2 * 30 * 2.7
    assert math.isclose(rect.w * W, size) and math.isclose(rect.h * H, size)
    # Centred on the middle finger, moved towards the fingers by 10 % of the tight region
    # (twice the wrist to middle finger distance).
    centre = np.array([rect.x * W, rect.y * H])
    assert np.allclose(centre, middle + 0.1 * 60 * np.array([dx, dy]), atol=1e-6)


def test_recrop_region_is_centred_on_the_first_point_twice_the_distance_to_the_second() -> None:
    centre, guide = np.array([0.5, 0.5]), np.array([0.5 + 50 / W, 0.5])
    rect = roi.hand_roi_from_recrop(centre, guide, W, H)
    assert math.isclose(rect.w * W, 100) and math.isclose(rect.h * H, 100)
    assert math.isclose(rect.rotation, -math.pi / 2)  # the guide to the right: -90° - 0
    # Shifted by -0.1 of its height along its own "down", which is the image's -x here.
    assert math.isclose(rect.x * W, 320 - 10, abs_tol=1e-6)
    assert math.isclose(rect.y * H, 240, abs_tol=1e-6)


@pytest.mark.parametrize("angle", [0.0, 0.4, -2.0, math.pi / 2])
def test_crop_corners_and_projection_back_agree(angle: float) -> None:
    rect = roi.Rect(0.4, 0.6, 0.2, 0.2 * W / H, angle)
    corners = roi.box_points(rect, W, H)  # bottom-left, top-left, top-right, bottom-right
    crop_corners = np.array([[0, 1, 0.25], [0, 0, 0.25], [1, 0, 0.25], [1, 1, 0.25]])
    back = roi.from_crop(crop_corners, rect, W, H)
    assert np.allclose(back[:, 0] * W, corners[:, 0], atol=1e-3)
    assert np.allclose(back[:, 1] * H, corners[:, 1], atol=1e-3)
    assert np.allclose(back[:, 2], 0.25 * rect.w)  # z scales with the region's width


def test_normalized_projection_equals_the_pixel_one_on_a_square_image() -> None:
    rect = roi.Rect(0.3, 0.7, 0.25, 0.25, 0.9)
    points = np.random.default_rng(1).random((21, 3))
    assert np.allclose(roi.from_crop_normalized(points, rect),
                       roi.from_crop(points, rect, 500, 500))


def test_hand_world_points_turn_with_the_region_and_sit_on_the_pose_wrist() -> None:
    hand = np.array([[0.01, 0.0, 0.0], [0.05, 0.0, 0.01]])
    turned = roi.rotate_world(hand, math.pi / 2)
    assert np.allclose(turned, [[0.0, 0.01, 0.0], [0.0, 0.05, 0.01]])
    aligned = roi.align_to_wrist(turned, np.array([0.3, -0.2, 0.1]))
    assert np.allclose(aligned[0], [0.3, -0.2, 0.1])
    assert np.allclose(aligned[1] - aligned[0], turned[1] - turned[0])
