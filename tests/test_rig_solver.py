"""Rig solver on synthetic landmarks built here, in MediaPipe's own terms.

Bodies and hands are described as a camera sees a person facing it (camera axes: x image-right,
y down, z away from the camera; the person's own left is at +x in a non-mirrored image), then
packed into Landmarks exactly as the worker would. Expected rotations are stated in the rig's
documented avatar frame (Unity: +X the avatar's right, +Y up, +Z forward), so a sign error in the
camera-to-avatar conversion fails these tests.
"""

from __future__ import annotations

import time
import zlib
from pathlib import Path

import numpy as np
import pytest

from holistream.landmarks import Landmarks
from holistream.rig import quat
from holistream.rig.skeleton import (
    BONES,
    EXPRESSIONS,
    LAYOUT_CRC,
    LAYOUT_VERSION,
    PARENT_INDEX,
    PARTS,
    REST_PRIMARY,
    Rig,
)
from server.rig.smoothing import RigSmoother
from server.rig.solver import RigSolver, solve

FACE_FIXTURE = Path(__file__).parent / "fixtures" / "face_neutral.npy"
BODY = BONES[:17]
LEGS = [b for b in BODY if "Leg" in b or "Foot" in b]
FINGER_BONES = BONES[17:]


# ---------------------------------------------------------------- synthetic landmarks


def body_points(arms: str = "t", lean_deg: float = 0.0) -> np.ndarray:
    """33 pose world points (metres, camera axes) of a person facing the camera.

    arms: "t" (T-pose, palms down) or "down" (hanging, palms toward the thighs).
    """
    p = np.zeros((33, 3))
    p[0] = (0, -0.60, -0.10)
    for i, x in ((1, 0.02), (2, 0.035), (3, 0.05), (4, -0.02), (5, -0.035), (6, -0.05)):
        p[i] = (x, -0.63, -0.08)
    p[7], p[8] = (0.075, -0.63, 0.0), (-0.075, -0.63, 0.0)
    p[9], p[10] = (0.025, -0.57, -0.09), (-0.025, -0.57, -0.09)
    for s, (sh, el, wr, pk, ix, th) in (
        (1, (11, 13, 15, 17, 19, 21)),
        (-1, (12, 14, 16, 18, 20, 22)),
    ):
        p[sh] = (s * 0.18, -0.45, 0)
        if arms == "t":  # palms down: the index knuckle is nearer the camera than the pinky's
            p[el], p[wr] = (s * 0.45, -0.45, 0), (s * 0.70, -0.45, 0)
            p[pk], p[ix], p[th] = (
                (s * 0.78, -0.45, 0.03),
                (s * 0.78, -0.45, -0.03),
                (s * 0.74, -0.45, -0.05),
            )
        else:  # hanging, palms facing the thighs: the index knuckle is again in front
            p[el], p[wr] = (s * 0.18, -0.18, 0), (s * 0.18, 0.08, 0)
            p[pk], p[ix], p[th] = (
                (s * 0.18, 0.16, 0.03),
                (s * 0.18, 0.16, -0.03),
                (s * 0.17, 0.12, -0.05),
            )
    for s, (hp, kn, an, he, to) in ((1, (23, 25, 27, 29, 31)), (-1, (24, 26, 28, 30, 32))):
        p[hp], p[kn], p[an] = (s * 0.1, 0, 0), (s * 0.1, 0.45, 0), (s * 0.1, 0.88, 0)
        p[he], p[to] = (s * 0.1, 0.93, 0.05), (s * 0.1, 0.93, -0.15)  # toes toward the camera
    if lean_deg:  # bend the upper body forward (toward the camera) about the hips
        a = np.radians(lean_deg)
        # z' = sin(a) y + cos(a) z: points above the hips (y < 0) come nearer (z < 0)
        rot = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
        upper = np.r_[0:23]
        p[upper] = p[upper] @ rot.T
    return p


def pose_arrays(
    world: np.ndarray, vis: float | np.ndarray = 0.99, width: int = 640, height: int = 480
):
    """(pose (33,5) normalised, pose_world (33,3)) for a body ~2.3 m from a 60° camera."""
    depth = 2.3
    f = 0.5 / np.tan(np.radians(30))  # in image widths
    pose = np.zeros((33, 5), np.float32)
    pose[:, 0] = 0.5 + f * world[:, 0] / depth
    pose[:, 1] = 0.5 + f * world[:, 1] / depth * width / height
    pose[:, 2] = f * world[:, 2] / depth
    pose[:, 3] = vis
    pose[:, 4] = 0.99
    return pose, world.astype(np.float32)


def landmarks(
    world: np.ndarray | None = None, vis: float | np.ndarray = 0.99, **parts
) -> Landmarks:
    lm = Landmarks(640, 480, {})
    if world is not None:
        lm.parts["pose"], lm.parts["pose_world"] = pose_arrays(world, vis)
    lm.parts.update(parts)
    return lm


def hand_points(side: str, curl_deg: float = 0.0, thumb_curl_deg: float = 0.0) -> np.ndarray:
    """21 hand world points (metres, camera axes) of a T-pose hand, palm down, fingers curled."""
    s = 1.0 if side == "left" else -1.0
    f = np.array([s, 0.0, 0.0])  # fingers point away from the body
    t = np.array([0.0, 0.0, -1.0])  # thumb side: toward the camera
    n = np.array([0.0, 1.0, 0.0])  # palm normal: down (image y)
    pts = np.zeros((21, 3))
    knuckles = {5: (0.09, 0.025), 9: (0.09, 0.0), 13: (0.085, -0.02), 17: (0.075, -0.04)}
    for base, (along, side_off) in knuckles.items():
        pts[base] = along * f + side_off * t
        angle = 0.0
        for k, length in enumerate((0.045, 0.025, 0.02)):
            angle += np.radians(curl_deg)
            pts[base + k + 1] = pts[base + k] + length * (np.cos(angle) * f + np.sin(angle) * n)
    pts[1] = 0.02 * f + 0.02 * t
    d = (f + t) / np.sqrt(2.0)  # 45° between the fingers and the thumb side, in the palm plane
    angle = 0.0
    for k, length in enumerate((0.04, 0.03, 0.025)):
        angle += np.radians(thumb_curl_deg)
        pts[2 + k] = pts[1 + k] + length * (np.cos(angle) * d + np.sin(angle) * n)
    return pts - pts.mean(axis=0)


def hand_parts(side: str, **kw: float) -> dict[str, np.ndarray]:
    world = hand_points(side, **kw)
    norm = np.empty_like(world)
    norm[:, 0] = 0.5 + world[:, 0] * 2.0
    norm[:, 1] = 0.5 + world[:, 1] * 2.0 * 640 / 480
    norm[:, 2] = world[:, 2] * 2.0
    return {f"{side}_hand": norm.astype(np.float32), f"{side}_hand_world": world.astype(np.float32)}


def deg(q: np.ndarray) -> float:
    return float(np.degrees(quat.angle(q)))


def world_rotations(rig: Rig) -> np.ndarray:
    """Forward kinematics: each bone's rotation in the avatar frame."""
    w = np.empty_like(rig.bones)
    for i in range(len(BONES)):
        w[i] = rig.bones[i] if i == 0 else quat.mul(w[PARENT_INDEX[i]], rig.bones[i])
    return w


def assert_valid(rig: Rig) -> None:
    assert rig.bones.shape == (len(BONES), 4)
    for arr in (rig.bones, rig.hips_position, rig.expressions, rig.head, rig.confidence):
        assert np.all(np.isfinite(arr))
    np.testing.assert_allclose(np.linalg.norm(rig.bones, axis=1), 1.0, atol=1e-6)
    assert np.all((rig.expressions >= 0) & (rig.expressions <= 1))
    assert np.all((rig.confidence >= 0) & (rig.confidence <= 1))


# ---------------------------------------------------------------- layout


def test_layout_is_pinned() -> None:
    """BONES/EXPRESSIONS/PARTS are a wire format: changing them must be deliberate."""
    assert BONES[:17] == (
        "Hips", "Spine", "Chest", "Neck", "Head",
        "LeftUpperArm", "LeftLowerArm", "LeftHand", "RightUpperArm", "RightLowerArm", "RightHand",
        "LeftUpperLeg", "LeftLowerLeg", "LeftFoot", "RightUpperLeg", "RightLowerLeg", "RightFoot",
    )  # fmt: skip
    assert BONES[17:20] == ("LeftThumbProximal", "LeftThumbIntermediate", "LeftThumbDistal")
    assert BONES[-1] == "RightLittleDistal" and len(BONES) == 47
    assert EXPRESSIONS == (
        "Blink_L", "Blink_R", "A", "I", "U", "E", "O",
        "LookUp", "LookDown", "LookLeft", "LookRight",
    )  # fmt: skip
    assert PARTS == (
        "body", "left_arm", "right_arm", "left_leg", "right_leg", "face", "left_hand", "right_hand",
    )  # fmt: skip
    assert LAYOUT_VERSION == 1
    assert zlib.crc32("|".join((*BONES, "#", *EXPRESSIONS, "#", *PARTS)).encode()) == LAYOUT_CRC
    assert LAYOUT_CRC == 3237847752


def test_rig_serialisation_roundtrip() -> None:
    rig = solve(landmarks(body_points("down"), **hand_parts("left", curl_deg=40)))
    arrays = rig.to_arrays()
    assert arrays.bones.dtype == np.float32 and arrays.bones.shape == (47, 4)
    assert arrays.expressions.shape == (11,) and arrays.confidence.shape == (8,)
    back = Rig.from_arrays(arrays.bones, arrays.expressions, arrays.confidence, arrays.hips,
                           arrays.head)
    np.testing.assert_allclose(back.bones, rig.bones, atol=1e-6)
    np.testing.assert_allclose(back.confidence, rig.confidence, atol=1e-6)
    js = rig.to_json()
    assert list(js["bones"]) == list(BONES) and list(js["expressions"]) == list(EXPRESSIONS)
    assert all(len(v) == 4 and all(round(c, 5) == c for c in v) for v in js["bones"].values())
    with pytest.raises(ValueError):
        Rig.from_arrays(arrays.bones[:10], arrays.expressions, arrays.confidence, arrays.hips,
                        arrays.head)


# ---------------------------------------------------------------- body


def test_t_pose_is_identity_for_every_body_bone() -> None:
    lm = landmarks(body_points("t"), **hand_parts("left"), **hand_parts("right"))
    rig = solve(lm)
    assert_valid(rig)
    for name in BODY:
        assert deg(rig.bone(name)) < 2.0, (name, rig.bone(name))
    for name in FINGER_BONES:  # flat hands with the thumb at the VRM rest angle
        assert deg(rig.bone(name)) < 2.0, (name, rig.bone(name))
    for part in PARTS:
        assert (rig.part_confidence(part) > 0.9) == (part != "face"), part
    assert rig.part_confidence("face") == 0.0


def test_arms_down_rotate_upper_arms_90_degrees_about_forward_axis() -> None:
    rig = solve(landmarks(body_points("down")))
    left, right = rig.bone("LeftUpperArm"), rig.bone("RightUpperArm")
    for q in (left, right):
        assert abs(deg(q) - 90.0) < 2.0
        axis = q[:3] / np.linalg.norm(q[:3])
        assert abs(abs(axis[2]) - 1.0) < 0.01  # about the forward (Z) axis
    assert left[2] * right[2] < 0  # opposite signs
    # the arms actually hang down: rest direction (±X) rotated by the world rotation is -Y
    w = world_rotations(rig)
    for name in ("LeftUpperArm", "RightUpperArm", "LeftLowerArm", "RightLowerArm"):
        d = quat.rotate(w[BONES.index(name)], REST_PRIMARY[BONES.index(name)])
        np.testing.assert_allclose(d, (0, -1, 0), atol=0.02)
    for name in ("LeftLowerArm", "RightLowerArm", "LeftHand", "RightHand"):
        assert deg(rig.bone(name)) < 2.0, name


@pytest.mark.parametrize("bend", [30.0, 90.0, 130.0])
def test_elbows_and_knees_bend_about_their_hinges(bend: float) -> None:
    """Forearms fold forward, shins fold back; the upper bones must not roll to get there."""
    p = body_points("t")
    a = np.radians(bend)
    for s, el, wr in ((1, 13, 15), (-1, 14, 16)):  # forearm toward the camera (-z)
        p[wr] = p[el] + 0.25 * np.array([s * np.cos(a), 0.0, -np.sin(a)])
    for kn, an in ((25, 27), (26, 28)):  # shin away from the camera (+z), i.e. backward
        p[an] = p[kn] + 0.43 * np.array([0.0, np.cos(a), np.sin(a)])
    rig = solve(landmarks(p))
    for name in ("LeftUpperArm", "RightUpperArm", "LeftUpperLeg", "RightUpperLeg"):
        assert deg(rig.bone(name)) < 2.0, name
    expected = {  # rotation axis of each hinge in the avatar frame, for a positive bend
        "LeftLowerArm": (0, 1, 0),  # -X toward +Z is a positive turn about +Y
        "RightLowerArm": (0, -1, 0),  # +X toward +Z is a positive turn about -Y
        "LeftLowerLeg": (1, 0, 0),  # -Y toward -Z is a positive turn about +X
        "RightLowerLeg": (1, 0, 0),
    }
    for name, axis in expected.items():
        q = rig.bone(name)
        assert abs(deg(q) - bend) < 2.0, name
        np.testing.assert_allclose(q[:3] / np.linalg.norm(q[:3]), axis, atol=0.02)


def test_forward_kinematics_reproduces_random_limb_directions() -> None:
    """Solved local rotations, chained, point every limb where the landmarks do."""
    rng = np.random.default_rng(7)
    for _ in range(20):
        p = body_points("t")
        for a, b, c in ((11, 13, 15), (12, 14, 16), (23, 25, 27), (24, 26, 28)):
            u = rng.normal(size=3)
            v = rng.normal(size=3)
            p[b] = p[a] + 0.27 * u / np.linalg.norm(u)
            p[c] = p[b] + 0.25 * v / np.linalg.norm(v)
        p[[11, 12]] += rng.normal(scale=0.03, size=(2, 3))
        rig = solve(landmarks(p))
        assert_valid(rig)
        w = world_rotations(rig)
        cam = -p  # camera axes -> avatar axes
        for name, a, b in (
            ("LeftUpperArm", 11, 13), ("LeftLowerArm", 13, 15),
            ("RightUpperArm", 12, 14), ("RightLowerArm", 14, 16),
            ("LeftUpperLeg", 23, 25), ("LeftLowerLeg", 25, 27),
            ("RightUpperLeg", 24, 26), ("RightLowerLeg", 26, 28),
            ("Chest", 11, 12),
        ):  # fmt: skip
            want = cam[b] - cam[a]
            want /= np.linalg.norm(want)
            i = BONES.index(name)
            got = quat.rotate(w[i], REST_PRIMARY[i])
            assert np.degrees(np.arccos(np.clip(got @ want, -1, 1))) < 1.0, name


def test_lean_goes_to_spine_and_chest_not_hips() -> None:
    rig = solve(landmarks(body_points("t", lean_deg=30)))
    assert deg(rig.bone("Hips")) < 1.0
    assert abs(deg(rig.bone("Spine")) - 15) < 1.5 and abs(deg(rig.bone("Chest")) - 15) < 1.5
    # leaning toward the camera is a forward bend: chest up-axis tilts toward +Z
    w = world_rotations(rig)
    up = quat.rotate(w[BONES.index("Chest")], np.array([0.0, 1.0, 0.0]))
    assert up[2] > 0.4


def test_invisible_legs_stay_at_rest_with_zero_confidence() -> None:
    p = body_points("t")
    p[25] += (0.0, -0.2, -0.3)  # a bent knee, guessed out of frame
    vis = np.full(33, 0.99)
    vis[23:33] = 0.1
    rig = solve(landmarks(p, vis))
    for name in LEGS:
        assert deg(rig.bone(name)) < 1e-6, name
    assert rig.part_confidence("left_leg") == 0.0 and rig.part_confidence("right_leg") == 0.0
    assert rig.part_confidence("left_arm") > 0.9
    vis[23:33] = 0.99
    assert deg(solve(landmarks(p, vis)).bone("LeftUpperLeg")) > 10


def test_hips_position_follows_the_person() -> None:
    p = body_points("t")
    base = solve(landmarks(p)).hips_position
    assert abs(base[2] - (2.0 - 2.3)) < 0.1  # 2.3 m away, reference depth 2 m
    moved = p.copy()
    moved[:, 0] += 0.5  # the person steps to their own left (image right)
    assert solve(landmarks(moved)).hips_position[0] - base[0] == pytest.approx(-0.5, abs=0.05)
    near = landmarks(p)
    centre = np.array([0.5, 0.5, 0.0])
    near.parts["pose"][:, :3] = (near.parts["pose"][:, :3] - centre) * 2.3 / 1.15 + centre
    assert solve(near).hips_position[2] == pytest.approx(2.0 - 1.15, abs=0.1)


# ---------------------------------------------------------------- hands


@pytest.mark.parametrize("side", ["left", "right"])
def test_curled_fingers_rotate_toward_the_palm(side: str) -> None:
    cap = side.capitalize()
    rig = solve(landmarks(body_points("t"), **hand_parts(side, curl_deg=60, thumb_curl_deg=30)))
    w = world_rotations(rig)
    for finger in ("Index", "Middle", "Ring", "Little"):
        for seg in ("Proximal", "Intermediate", "Distal"):
            q = rig.bone(f"{cap}{finger}{seg}")
            assert abs(deg(q) - 60) < 3, (finger, seg, deg(q))
        i = BONES.index(f"{cap}{finger}Proximal")
        rest = REST_PRIMARY[i]
        bent = quat.rotate(rig.bones[i], rest)  # in the hand's frame: palm faces -Y (VRM T-pose)
        assert bent[1] < -0.8, (finger, bent)
        assert quat.rotate(w[i], rest)[1] < -0.8  # and in the world, toward the floor
        # curl is a rotation about the hand's forward (Z) axis: + for the left, - for the right
        assert np.sign(rig.bones[i][2]) == (1 if side == "left" else -1)
    thumb = BONES.index(f"{cap}ThumbProximal")
    assert quat.rotate(rig.bones[thumb], REST_PRIMARY[thumb])[1] < -0.3  # thumb toward the palm too
    assert rig.part_confidence(f"{side}_hand") == 1.0
    other = "right" if side == "left" else "left"
    assert rig.part_confidence(f"{other}_hand") == 0.0


def test_normalised_hand_only_gives_the_same_curl() -> None:
    parts = hand_parts("left", curl_deg=45)
    del parts["left_hand_world"]
    rig = solve(landmarks(body_points("t"), **parts))
    assert abs(deg(rig.bone("LeftIndexProximal")) - 45) < 3


def test_palm_up_twist_moves_into_the_forearm() -> None:
    pts = hand_points("left")
    pts[:, 1:] *= -1  # rotate the hand 180° about the arm axis (x): palm up, thumb away
    rig = solve(landmarks(body_points("t"), left_hand_world=pts.astype(np.float32)))
    assert abs(deg(rig.bone("LeftLowerArm")) - 180) < 2  # pronation lives in the forearm
    assert deg(rig.bone("LeftHand")) < 2


# ---------------------------------------------------------------- robustness


def _check_frames(frames: list[Landmarks]) -> None:
    smoother = RigSmoother()
    for k, lm in enumerate(frames):
        rig = solve(lm)
        assert_valid(rig)
        assert_valid(smoother.update(rig, k / 30))


def test_unit_quaternions_and_no_nan_on_degenerate_input() -> None:
    z = np.zeros
    nan = np.full
    frames = [
        Landmarks(640, 480, {}),
        Landmarks(0, 0, {"pose": z((33, 5), np.float32), "face": z((478, 3), np.float32)}),
        landmarks(z((33, 3))),
        landmarks(nan((33, 3), np.nan), vis=np.nan),
        landmarks(nan((33, 3), np.inf), left_hand_world=nan((21, 3), -np.inf, np.float32)),
        landmarks(
            body_points("t"),
            face=z((478, 3), np.float32),
            left_hand=z((21, 3), np.float32),
            right_hand_world=nan((21, 3), 3e38, np.float32),
        ),
        landmarks(None, face=nan((478, 3), np.nan, np.float32)),
        landmarks(None, right_hand=nan((21, 3), 0.5, np.float32)),  # all points coincide
    ]
    rig = solve(landmarks(None, right_hand=np.full((21, 3), 0.5, np.float32)))
    assert rig.part_confidence("right_hand") == 0.0  # all points on one spot: no hand
    p = body_points("t")
    p[13] = p[11]  # zero-length upper arm
    p[15] = p[13]
    p[[23, 24]] = 0.0  # hips on one point
    frames.append(landmarks(p))
    _check_frames(frames)


def test_unit_quaternions_and_no_nan_on_random_input() -> None:
    rng = np.random.default_rng(3)
    frames = []
    for _ in range(40):
        parts = {
            "pose": rng.random((33, 5)).astype(np.float32),
            "pose_world": rng.normal(size=(33, 3)).astype(np.float32),
            "face": rng.random((478, 3)).astype(np.float32),
            "left_hand": rng.random((21, 3)).astype(np.float32),
            "right_hand_world": rng.normal(size=(21, 3)).astype(np.float32),
        }
        for key in list(parts):
            if rng.random() < 0.3:
                del parts[key]
        frames.append(Landmarks(int(rng.integers(1, 2000)), int(rng.integers(1, 2000)), parts))
    _check_frames(frames)


def test_solver_options() -> None:
    p = body_points("t")
    pts = hand_points("left")
    pts[:, 1:] *= -1
    lm = landmarks(p, left_hand_world=pts.astype(np.float32))
    rig = RigSolver(forearm_twist=0.0).solve(lm)
    assert deg(rig.bone("LeftLowerArm")) < 2 and abs(deg(rig.bone("LeftHand")) - 180) < 2
    vis = np.full(33, 0.99)
    vis[23:33] = 0.6
    assert deg(RigSolver(leg_min_visibility=0.7).solve(landmarks(p, vis)).bone("LeftFoot")) == 0


def test_solve_and_smooth_are_fast() -> None:
    """Informational budget: solve + smooth per frame well under a millisecond on a quiet core.

    The bound asserted is loose (shared CI machines); the measured figure is in the report.
    """
    face = np.load(FACE_FIXTURE).astype(np.float64)  # canonical cm, x to the subject's left, y up
    face_norm = np.stack(
        (0.5 + face[:, 0] / 45, 0.3 - face[:, 1] / 45 * 640 / 480, -face[:, 2] / 45), 1
    )
    lm = landmarks(
        body_points("down"),
        face=face_norm.astype(np.float32),
        **hand_parts("left", curl_deg=30),
        **hand_parts("right", curl_deg=20),
    )
    smoother = RigSmoother()
    solve(lm)
    best = float("inf")
    for rep in range(5):
        t0 = time.perf_counter()
        for k in range(50):
            smoother.update(solve(lm), rep + k / 30)
        best = min(best, (time.perf_counter() - t0) / 50)
    assert best < 5e-3, f"{best * 1e6:.0f} µs per frame"


# ---------------------------------------------------------------- a real Holistic frame


def messi() -> Landmarks:
    """MediaPipe HolisticLandmarker (holistic_landmarker.task, IMAGE mode) on
    server/fixtures/messi5.jpg (548x342, OpenCV sample data): a footballer mid-kick, left arm out,
    both hands and the face visible. Stored as the worker sends it."""
    d = np.load(Path(__file__).parent / "fixtures" / "holistic_messi.npz")
    parts = {k: d[k] for k in d.files if k not in ("width", "height")}
    return Landmarks(int(d["width"]), int(d["height"]), parts)


def test_real_frame_solves_consistently() -> None:
    lm = messi()
    rig = solve(lm)
    assert_valid(rig)
    assert min(rig.confidence) > 0.6  # everything is in view
    w = world_rotations(rig)
    cam = -lm.parts["pose_world"].astype(np.float64)
    for name, a, b in (
        ("LeftUpperArm", 11, 13), ("LeftLowerArm", 13, 15),
        ("RightUpperArm", 12, 14), ("RightLowerArm", 14, 16),
        ("LeftUpperLeg", 23, 25), ("LeftLowerLeg", 25, 27),
        ("RightUpperLeg", 24, 26), ("RightLowerLeg", 26, 28),
    ):  # fmt: skip
        want = (cam[b] - cam[a]) / np.linalg.norm(cam[b] - cam[a])
        i = BONES.index(name)
        assert quat.rotate(w[i], REST_PRIMARY[i]) @ want > np.cos(np.radians(1.0)), name
    # the kicking (left) leg is raised: the thigh points forward of straight down
    i = BONES.index("LeftUpperLeg")
    thigh = quat.rotate(w[i], REST_PRIMARY[i])
    assert thigh[1] > -0.9
    # the right hand's fingers are curled toward its palm (the palm faces -Y at rest)
    for finger in ("Index", "Middle", "Ring"):
        j = BONES.index(f"Right{finger}Proximal")
        assert quat.rotate(rig.bones[j], REST_PRIMARY[j])[1] < -0.2, finger
    # the head is turned: yaw from the face mesh agrees with the pose model's ears and eyes
    del lm.parts["face"]
    assert abs(solve(lm).head[0] - rig.head[0]) < 8
