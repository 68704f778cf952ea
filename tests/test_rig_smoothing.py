"""RigSmoother: jitter reduction, settling time (the figures in smoothing.py's docstring), blink
hysteresis, quaternion sign continuity, mirroring."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from holistream.rig import quat
from holistream.rig.skeleton import BONE_INDEX, BONES, EXPRESSION_INDEX, PART_INDEX, Rig
from server.rig.smoothing import RigSmoother, mirror_rig

ARM = BONE_INDEX["LeftUpperArm"]
Z = np.array([0.0, 0.0, 1.0])


def random_rig(rng: np.random.Generator) -> Rig:
    rig = Rig.rest()
    rig.bones = quat.normalize(rng.normal(size=rig.bones.shape))
    rig.expressions = rng.random(rig.expressions.shape) * 0.3
    rig.hips_position = rng.normal(size=3)
    rig.head = rng.normal(scale=10, size=3)
    rig.confidence = rng.random(rig.confidence.shape)
    return rig


def with_noise(rig: Rig, rng: np.random.Generator, deg: float) -> Rig:
    out = rig.copy()
    axis = rng.normal(size=(len(BONES), 3))
    angle = np.radians(deg) * rng.normal(size=len(BONES))
    out.bones = quat.mul(quat.from_axis_angle(axis, angle), out.bones)
    out.bones *= np.where(rng.random((len(BONES), 1)) < 0.5, -1.0, 1.0)  # arbitrary signs
    return out


def angles(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.degrees(quat.angle(quat.mul(quat.conj(a), b)))


def jitter(seq: list[Rig]) -> float:
    return float(np.mean([angles(a.bones, b.bones).mean() for a, b in itertools.pairwise(seq)]))


def frames_to_settle(fps: float, target: Rig, error) -> int:
    """Frames after a step from rest until the error stays within 5 % of the step."""
    sm = RigSmoother()
    for k in range(10):
        sm.update(Rig.rest(), k / fps)
    errors = [error(sm.update(target, (10 + k) / fps)) for k in range(60)]
    return next(k for k in range(len(errors)) if max(errors[k:]) < 0.05) + 1


def test_held_pose_jitter_drops_at_least_5x_at_30fps() -> None:
    rng = np.random.default_rng(1)
    held = random_rig(rng)
    raw = [with_noise(held, rng, 1.0) for _ in range(240)]
    sm = RigSmoother()
    out = [sm.update(r, k / 30) for k, r in enumerate(raw)]
    ratio = jitter(raw[30:]) / jitter(out[30:])
    assert ratio >= 5.0, ratio
    # and the smoothed pose is still the held one
    assert angles(out[-1].bones, held.bones).mean() < 1.0


def test_jitter_at_15fps_matches_the_docstring() -> None:
    rng = np.random.default_rng(2)
    held = random_rig(rng)
    raw = [with_noise(held, rng, 1.0) for _ in range(240)]
    sm = RigSmoother()
    out = [sm.update(r, k / 15) for k, r in enumerate(raw)]
    assert jitter(raw[30:]) / jitter(out[30:]) >= 4.5


@pytest.mark.parametrize(
    ("fps", "step_deg", "documented"),
    [(30, 60, 4), (15, 60, 3), (30, 10, 10), (15, 10, 8)],
)
def test_rotation_step_settles_within_documented_frames(
    fps: int, step_deg: float, documented: int
) -> None:
    target = Rig.rest()
    target.bones[ARM] = quat.from_axis_angle(Z, np.radians(step_deg))

    def error(r: Rig) -> float:
        return float(angles(r.bones[ARM], target.bones[ARM])) / step_deg

    assert frames_to_settle(fps, target, error) <= documented


@pytest.mark.parametrize(("fps", "documented"), [(30, 3), (15, 2)])
def test_expression_step_settles_within_documented_frames(fps: int, documented: int) -> None:
    target = Rig.rest()
    target.expressions[EXPRESSION_INDEX["A"]] = 1.0

    def error(r: Rig) -> float:
        return 1.0 - r.expression("A")

    assert frames_to_settle(fps, target, error) <= documented


def _blink_rig(value: float) -> Rig:
    rig = Rig.rest()
    rig.expressions[EXPRESSION_INDEX["Blink_L"]] = value
    rig.expressions[EXPRESSION_INDEX["Blink_R"]] = value
    return rig


def test_blink_hysteresis_prevents_flicker_around_threshold() -> None:
    rng = np.random.default_rng(4)
    values = 0.5 + rng.uniform(-0.09, 0.09, size=300)  # hovering around a naive 0.5 threshold
    naive_flips = int(np.sum(np.diff(values > 0.5) != 0))
    assert naive_flips > 50
    sm = RigSmoother()
    out = np.array(
        [sm.update(_blink_rig(v), k / 30).expression("Blink_L") for k, v in enumerate(values)]
    )
    assert int(np.sum(np.diff(out > 0.5) != 0)) == 0
    assert out.max() <= 0.35 + 1e-9  # stays "open" (capped at blink_open)


def test_real_blink_goes_through_crisply() -> None:
    seq = [0.05] * 10 + [0.5, 0.95, 0.9, 0.5, 0.2] + [0.05] * 10
    sm = RigSmoother()
    out = [sm.update(_blink_rig(v), k / 30).expression("Blink_R") for k, v in enumerate(seq)]
    assert max(out[10:13]) == 1.0  # closes within two frames of the eyelid
    assert out[14] < 0.35 and out[-1] < 0.1  # and reopens


def test_no_sign_flips_between_consecutive_outputs() -> None:
    rng = np.random.default_rng(5)
    for enabled in (True, False):
        sm = RigSmoother(enabled=enabled)
        prev = None
        for k in range(300):  # a full turn, with the input's sign flipped at random
            rig = Rig.rest()
            rig.bones[:] = quat.from_axis_angle(Z, np.radians(k * 2.4))
            rig = with_noise(rig, rng, 2.0)
            out = sm.update(rig, k / 30)
            np.testing.assert_allclose(np.linalg.norm(out.bones, axis=1), 1.0, atol=1e-9)
            if prev is not None:
                assert np.all(np.sum(prev.bones * out.bones, axis=1) > 0.0)
            prev = out


def test_disabled_passes_through_and_gap_restarts() -> None:
    rng = np.random.default_rng(6)
    a, b = random_rig(rng), random_rig(rng)
    sm = RigSmoother(enabled=False)
    sm.update(a, 0.0)
    out = sm.update(b, 1 / 30)
    assert angles(out.bones, b.bones).max() < 1e-6
    np.testing.assert_allclose(out.expressions, b.expressions)
    on = RigSmoother()
    on.update(a, 0.0)
    assert angles(on.update(b, 1 / 30).bones, b.bones).max() > 1.0
    assert angles(on.update(b, 5.0).bones, b.bones).max() < 1e-6  # long gap: restart
    same = on.update(a, 5.0)  # same timestamp again: the previous output
    assert angles(same.bones, b.bones).max() < 1e-6


def test_mirror_swaps_sides_and_reflects() -> None:
    rig = Rig.rest()
    rig.bones[ARM] = quat.from_axis_angle(Z, np.radians(80))  # left arm down
    rig.expressions[EXPRESSION_INDEX["Blink_L"]] = 1.0
    rig.expressions[EXPRESSION_INDEX["LookLeft"]] = 0.7
    rig.hips_position = np.array([0.3, 0.1, -0.2])
    rig.head = np.array([20.0, 10.0, 5.0])
    rig.confidence[PART_INDEX["left_hand"]] = 1.0
    m = mirror_rig(rig)
    right = m.bone("RightUpperArm")
    assert abs(np.degrees(quat.angle(right)) - 80) < 1e-6 and right[2] < 0  # -80° about Z
    assert np.degrees(quat.angle(m.bone("LeftUpperArm"))) < 1e-6
    # the mirrored right arm points where the left one did, reflected: down, not up
    rest_right = np.array([1.0, 0.0, 0.0])
    assert quat.rotate(right, rest_right)[1] < -0.9
    assert m.expression("Blink_R") == 1.0 and m.expression("Blink_L") == 0.0
    assert m.expression("LookRight") == 0.7 and m.expression("LookLeft") == 0.0
    np.testing.assert_allclose(m.hips_position, (-0.3, 0.1, -0.2))
    np.testing.assert_allclose(m.head, (-20.0, 10.0, -5.0))
    assert m.part_confidence("right_hand") == 1.0
    back = mirror_rig(m)
    assert angles(back.bones, rig.bones).max() < 1e-6  # an involution
    sm = RigSmoother(mirror=True, enabled=False)
    assert sm.update(rig, 0.0).expression("Blink_R") == 1.0


def test_bad_parameters_are_rejected() -> None:
    with pytest.raises(ValueError):
        RigSmoother(min_cutoff=0)
    with pytest.raises(ValueError):
        RigSmoother(blink_close=0.3, blink_open=0.5)


def test_non_finite_input_does_not_poison_the_filter() -> None:
    sm = RigSmoother()
    sm.update(Rig.rest(), 0.0)
    bad = Rig.rest()
    bad.bones[3] = np.nan
    bad.hips_position[:] = np.inf
    bad.expressions[:] = np.nan
    out = sm.update(bad, 1 / 30)
    assert np.all(np.isfinite(out.bones)) and np.all(np.isfinite(out.hips_position))
    good = sm.update(Rig.rest(), 2 / 30)
    assert np.all(np.isfinite(good.bones)) and np.all(np.isfinite(good.expressions))
