"""Head pose and expressions from synthetic 478-point faces.

Fixtures:
* face_neutral.npy: the 468 vertices of MediaPipe's canonical face model
  (mediapipe/modules/face_geometry/data/canonical_face_model.obj, Apache-2.0; cm, x toward the
  subject's left, y up, z toward the camera) plus 10 iris points (468-472 right iris, 473-477
  left, 5.5 mm radius) synthesised midway between the eye corners and 0.065 eye widths above
  them, where a real MediaPipe run puts irises looking straight ahead. Neutral: eyes open, lips
  together, symmetric.
* face_astronaut.npy: a real run, MediaPipe FaceLandmarker (face_landmarker.task, IMAGE mode) on
  tests/fixtures/astronaut.png (512x512; NASA, public domain): a smiling woman looking into the
  camera, normalised (478, 3) landmarks as the worker sends them.

Faces are posed here in the subject's own terms (turn toward their right, look down, tilt toward
their left shoulder), projected the way MediaPipe reports landmarks (x, y normalised to the image
width/height, z in x's scale) and then solved; a mix-up of image axes, aspect ratio or sign fails.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from holistream.landmarks import Landmarks
from holistream.rig import quat
from holistream.rig.skeleton import EXPRESSIONS
from server.rig.face import RIGID_INDICES, solve_face
from server.rig.solver import solve

FIXTURES = Path(__file__).parent / "fixtures"
CANONICAL = np.load(FIXTURES / "face_neutral.npy").astype(np.float64)
ASTRONAUT = np.load(FIXTURES / "face_astronaut.npy")  # normalised, 512 x 512
UPPER_LIDS = [246, 161, 160, 159, 158, 157, 173, 466, 388, 387, 386, 385, 384, 398]
LOWER_LIDS = [7, 163, 144, 145, 153, 154, 155, 249, 390, 373, 374, 380, 381, 382]


def _rx(a: float) -> np.ndarray:
    c, s = np.cos(np.radians(a)), np.sin(np.radians(a))
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _ry(a: float) -> np.ndarray:
    c, s = np.cos(np.radians(a)), np.sin(np.radians(a))
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _rz(a: float) -> np.ndarray:
    c, s = np.cos(np.radians(a)), np.sin(np.radians(a))
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def face_landmarks(
    yaw: float = 0.0,
    pitch: float = 0.0,
    roll: float = 0.0,
    *,
    width: int = 640,
    height: int = 480,
    points: np.ndarray | None = None,
    px_per_cm: float = 14.0,
    noise_px: float = 0.0,
    seed: int = 0,
) -> np.ndarray:
    """(478, 3) normalised landmarks of the canonical face posed in the subject's terms.

    yaw > 0 turns toward the subject's right, pitch > 0 looks down, roll > 0 tilts the head toward
    the subject's left shoulder; applied roll, then pitch, then yaw (Unity's Euler order).
    In canonical axes (right-handed, x = subject's left): a turn to the right is -y rotation,
    looking down is +x rotation, a tilt to the left is -z rotation.
    """
    pts = CANONICAL if points is None else points
    rot = _ry(-yaw) @ _rx(pitch) @ _rz(-roll)
    q = (pts - pts[RIGID_INDICES].mean(axis=0)) @ rot.T * px_per_cm
    if noise_px:
        q = q + np.random.default_rng(seed).normal(scale=noise_px, size=q.shape)
    out = np.empty_like(q)
    out[:, 0] = 0.5 + q[:, 0] / width  # canonical x (subject's left) is image right
    out[:, 1] = 0.45 - q[:, 1] / height  # image y points down
    out[:, 2] = -q[:, 2] / width  # z away from the camera, in x's scale
    return out.astype(np.float32)


def expressions(face: np.ndarray, width: int = 640, height: int = 480) -> dict[str, float]:
    res = solve_face(face, width, height)
    assert res is not None
    return dict(zip(EXPRESSIONS, res.expressions.tolist(), strict=True))


def closed_eyes(amount: float = 1.0, eyes: str = "both") -> np.ndarray:
    pts = CANONICAL.copy()
    sel = slice(None) if eyes == "both" else slice(0, 7) if eyes == "right" else slice(7, 14)
    up, lo = np.array(UPPER_LIDS)[sel], np.array(LOWER_LIDS)[sel]
    pts[up] += (pts[lo] - pts[up]) * amount
    return pts


def open_mouth(drop_cm: float) -> np.ndarray:
    """Jaw drop: everything below the mouth corners (lower lip, chin) moves down."""
    pts = CANONICAL.copy()
    below = np.flatnonzero(pts[:468, 1] < -4.40)
    pts[below, 1] -= drop_cm
    return pts


def moved_irises(dx: float, dy: float) -> np.ndarray:
    pts = CANONICAL.copy()
    pts[468:] += (dx, dy, 0.0)
    return pts


# ---------------------------------------------------------------- head pose


POSES = [(0, 0, 0), (30, 0, 0), (-30, 0, 0), (0, 20, 0), (0, -20, 0), (0, 0, 15),
         (0, 0, -15), (25, -15, 10), (-40, 10, -20), (45, 25, 0)]  # fmt: skip


@pytest.mark.parametrize("size", [(640, 480), (1280, 720), (480, 640)])
@pytest.mark.parametrize("ypr", POSES)
def test_head_angles_are_recovered(ypr: tuple[float, float, float], size: tuple[int, int]) -> None:
    w, h = size
    face = face_landmarks(*ypr, width=w, height=h, noise_px=0.8, seed=sum(ypr) + w)
    res = solve_face(face, w, h)
    assert res is not None
    np.testing.assert_allclose(res.head, ypr, atol=5.0)
    assert res.confidence == 1.0


def test_head_angle_signs_match_what_the_camera_sees() -> None:
    nose, right_eye, left_eye = 1, 33, 263
    front = face_landmarks()
    turned = face_landmarks(yaw=30)  # toward the subject's right = the image's left
    assert turned[nose, 0] < front[nose, 0]
    down = face_landmarks(pitch=20)
    assert down[nose, 1] > front[nose, 1]  # nose lower in the image
    tilted = face_landmarks(roll=15)  # toward the left shoulder: the right eye rises
    assert tilted[right_eye, 1] < tilted[left_eye, 1]
    for face, axis, sign in ((turned, 0, 1), (down, 1, 1), (tilted, 2, 1)):
        res = solve_face(face, 640, 480)
        assert res is not None and np.sign(res.head[axis]) == sign


def test_aspect_ratio_is_taken_into_account() -> None:
    """A tilted face at 16:9 read as if the image were square comes out tilted ~6° too far."""
    face = face_landmarks(roll=30, width=1280, height=720)
    good = solve_face(face, 1280, 720)
    wrong = solve_face(face, 1280, 1280)
    assert good is not None and wrong is not None
    assert abs(good.head[2] - 30) < 1.0
    assert abs(wrong.head[2] - 30) > 4.0


def test_head_bone_and_rig_head_follow_the_face() -> None:
    lm = Landmarks(640, 480, {"face": face_landmarks(yaw=20, pitch=10)})
    rig = solve(lm)
    np.testing.assert_allclose(rig.head, (20, 10, 0), atol=1.0)
    # no pose: the chest is at rest, so Neck * Head is the whole head rotation
    head = quat.mul(rig.bone("Neck"), rig.bone("Head"))
    np.testing.assert_allclose(quat.to_euler_yxz(head), (20, 10, 0), atol=1.0)
    np.testing.assert_allclose(rig.bone("Neck"), rig.bone("Head"), atol=1e-9)
    assert rig.part_confidence("face") == 1.0
    empty = solve(Landmarks(640, 480, {}))
    assert empty.part_confidence("face") == 0.0 and not empty.expressions.any()


def test_confidence_fades_for_profile_faces() -> None:
    res = solve_face(face_landmarks(yaw=70), 640, 480)
    assert res is not None and 0.0 < res.confidence < 1.0


# ---------------------------------------------------------------- expressions


@pytest.mark.parametrize("ypr", [(0, 0, 0), (30, 15, -10), (-35, -10, 12)])
def test_neutral_face_reads_neutral(ypr: tuple[float, float, float]) -> None:
    ex = expressions(face_landmarks(*ypr, points=CANONICAL))
    assert max(ex.values()) < 0.05, ex


@pytest.mark.parametrize("ypr", [(0, 0, 0), (30, 15, -10), (-35, -10, 12)])
def test_blinks(ypr: tuple[float, float, float]) -> None:
    opened = expressions(face_landmarks(*ypr, noise_px=0.3))
    closed = expressions(face_landmarks(*ypr, points=closed_eyes(), noise_px=0.3))
    assert opened["Blink_L"] < 0.2 and opened["Blink_R"] < 0.2
    assert closed["Blink_L"] > 0.8 and closed["Blink_R"] > 0.8
    half = expressions(face_landmarks(*ypr, points=closed_eyes(0.5)))
    assert 0.3 < half["Blink_L"] < 0.9


def test_wink_closes_the_right_eye_only() -> None:
    ex = expressions(face_landmarks(points=closed_eyes(eyes="right")))  # subject's right eye
    assert ex["Blink_R"] > 0.8 and ex["Blink_L"] < 0.2


@pytest.mark.parametrize("ypr", [(0, 0, 0), (25, -15, 10)])
def test_open_mouth_is_a(ypr: tuple[float, float, float]) -> None:
    ex = expressions(face_landmarks(*ypr, points=open_mouth(2.5), noise_px=0.3))
    assert ex["A"] > 0.5, ex
    assert ex["I"] < 0.2 and ex["U"] < 0.2
    slightly = expressions(face_landmarks(*ypr, points=open_mouth(1.0)))
    assert 0.1 < slightly["A"] < ex["A"]


def test_wide_and_pursed_mouths() -> None:
    wide = CANONICAL.copy()
    wide[:468, 0] *= np.where(np.abs(CANONICAL[:468, 1] + 4.2) < 1.0, 1.3, 1.0)  # stretch the lips
    ex = expressions(face_landmarks(points=wide))
    assert ex["I"] > 0.5 and ex["A"] < 0.1
    pursed = CANONICAL.copy()
    pursed[:468, 0] *= np.where(np.abs(CANONICAL[:468, 1] + 4.2) < 1.0, 0.7, 1.0)
    ex = expressions(face_landmarks(points=pursed))
    assert ex["U"] > 0.5
    pursed_open = pursed.copy()
    below = np.flatnonzero(pursed_open[:468, 1] < -4.40)
    pursed_open[below, 1] -= 2.5
    assert expressions(face_landmarks(points=pursed_open))["O"] > 0.5


@pytest.mark.parametrize("ypr", [(0, 0, 0), (20, 10, 5)])
def test_gaze_from_irises(ypr: tuple[float, float, float]) -> None:
    # toward the subject's right is -x in canonical axes
    right = expressions(face_landmarks(*ypr, points=moved_irises(-0.3, 0.0)))
    assert right["LookRight"] > 0.5 and right["LookLeft"] == 0.0
    left = expressions(face_landmarks(*ypr, points=moved_irises(0.3, 0.0)))
    assert left["LookLeft"] > 0.5 and left["LookRight"] == 0.0
    up = expressions(face_landmarks(*ypr, points=moved_irises(0.0, 0.15)))
    assert up["LookUp"] > 0.5 and up["LookDown"] == 0.0
    down = expressions(face_landmarks(*ypr, points=moved_irises(0.0, -0.15)))
    assert down["LookDown"] > 0.5 and down["LookUp"] == 0.0


def test_degenerate_faces() -> None:
    assert solve_face(np.zeros((478, 3), np.float32), 640, 480) is None
    assert solve_face(np.zeros((10, 3), np.float32), 640, 480) is None
    res = solve_face(np.full((478, 3), np.nan, np.float32), 640, 480)
    assert res is None or np.all(np.isfinite(res.expressions))


# ---------------------------------------------------------------- a real MediaPipe face


def rotate_normalised(face: np.ndarray, ypr: tuple[float, float, float], size: int) -> np.ndarray:
    """Turn a real normalised face by (yaw, pitch, roll) in the subject's terms, about its centre.

    Camera axes (x right, y down, z away) flip y and z of the canonical ones, which conjugates
    each rotation: Rx(a) stays Rx(a), Ry(a) becomes Ry(-a), Rz(a) becomes Rz(-a). So
    face_landmarks' Ry(-yaw) Rx(pitch) Rz(-roll) is Ry(yaw) Rx(pitch) Rz(roll) here.
    """
    yaw, pitch, roll = ypr
    rot = _ry(yaw) @ _rx(pitch) @ _rz(roll)
    px = face.astype(np.float64) * size
    centre = px[RIGID_INDICES].mean(axis=0)
    return (((px - centre) @ rot.T + centre) / size).astype(np.float32)


def test_real_face_reads_as_what_it_shows() -> None:
    res = solve_face(ASTRONAUT, 512, 512)
    assert res is not None
    ex = dict(zip(EXPRESSIONS, res.expressions.tolist(), strict=True))
    assert np.abs(res.head).max() < 10  # facing the camera
    assert ex["Blink_L"] < 0.2 and ex["Blink_R"] < 0.2  # eyes open
    for look in ("LookUp", "LookDown", "LookLeft", "LookRight"):
        assert ex[look] < 0.3, (look, ex)  # looking into the lens
    assert ex["I"] > 0.3  # a broad smile
    assert ex["A"] < 0.3 and ex["O"] < 0.1


@pytest.mark.parametrize("ypr", [(25, 0, 0), (0, 15, 0), (0, 0, -20), (-20, -10, 15)])
def test_real_face_turned_by_known_angles(ypr: tuple[float, float, float]) -> None:
    base = solve_face(ASTRONAUT, 512, 512)
    turned = solve_face(rotate_normalised(ASTRONAUT, ypr, 512), 512, 512)
    assert base is not None and turned is not None
    # the applied turn, composed with the face's own small initial pose (rotation about its centre)
    want = quat.to_euler_yxz(
        quat.mul(
            quat.mul(
                quat.from_axis_angle(np.array([0.0, 1.0, 0.0]), np.radians(ypr[0])),
                quat.mul(
                    quat.from_axis_angle(np.array([1.0, 0.0, 0.0]), np.radians(ypr[1])),
                    quat.from_axis_angle(np.array([0.0, 0.0, 1.0]), np.radians(ypr[2])),
                ),
            ),
            base.rotation,
        )
    )
    np.testing.assert_allclose(turned.head, want, atol=5.0)
    np.testing.assert_allclose(turned.expressions, base.expressions, atol=0.15)
