"""Confidence-aware motion (server/rig/tracking.py), calibration (server/rig/session.py) and the
protocol options that drive them: pure, in process, milliseconds."""

from __future__ import annotations

import math

import numpy as np
import pytest

from holistream.protocol import Hello, ProtocolError, RigOptions, parse_configure, parse_hello
from holistream.rig import quat
from holistream.rig.neutral import neutral_rig, rest_bones
from holistream.rig.skeleton import BONE_INDEX, BONES, EXPRESSION_INDEX, PART_INDEX, Rig
from server.rig.session import Calibration, RigSession
from server.rig.tracking import MotionGate

X, Y, Z = np.eye(3)
HAND = [i for i, n in enumerate(BONES) if n.startswith("Right") and (
    n.endswith("Hand") or any(f in n for f in ("Thumb", "Index", "Middle", "Ring", "Little")))]
FOREARM_AND_HAND = [BONE_INDEX["RightHand"], BONE_INDEX["RightLowerArm"]]


def deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    dot = np.abs(np.sum(np.asarray(a) * np.asarray(b), -1))
    return np.degrees(2.0 * np.arccos(np.minimum(dot, 1.0)))


def tracked(**conf: float) -> Rig:
    """A rig with every part tracked (confidence 1) unless given."""
    rig = Rig.rest()
    rig.confidence[:] = 1.0
    for part, value in conf.items():
        rig.confidence[PART_INDEX[part]] = value
    return rig


def with_hand(rig: Rig, roll_deg: float, curl_deg: float) -> Rig:
    rig = rig.copy()
    rig.bones[BONE_INDEX["RightHand"]] = quat.from_axis_angle(X, math.radians(roll_deg))
    for i in HAND[1:]:
        rig.bones[i] = quat.from_axis_angle(Y, math.radians(curl_deg))
    return rig


def run(gate: MotionGate, rigs: list[Rig], fps: float) -> np.ndarray:
    return np.array([gate.update(r, k / fps).bones for k, r in enumerate(rigs)])


@pytest.mark.parametrize("fps", [30.0, 15.0])
def test_a_flickering_hand_never_snaps(fps: float) -> None:
    """Hand detection flickers; when lost, the solver's fallback hand disagrees by 50° of roll
    and has flat fingers. No hand bone may move more than 10° from one result to the next."""
    seen = with_hand(tracked(), roll_deg=10.0, curl_deg=40.0)
    lost = with_hand(tracked(right_hand=0.0), roll_deg=60.0, curl_deg=0.0)
    pattern = [seen] * 5 + [lost] * 2 + [seen] * 3 + [lost] * 6 + [seen] * 4 + [lost] * 60
    out = run(MotionGate(), pattern, fps)
    steps = deg(out[1:], out[:-1])[:, HAND]
    assert steps.max() <= 10.0, steps.max()
    # Held while lost for a short while: the fingers keep their curl ...
    assert deg(out[15, HAND[1]], seen.bones[HAND[1]]) < 1.0
    # ... and after the hold (1 s) the hand eases to rest (straight, flat), not to the fallback.
    assert np.all(deg(out[-1, HAND], np.array([0.0, 0.0, 0.0, 1.0])) < 1e-6)


def test_without_the_gate_the_same_flicker_snaps() -> None:
    """The test above can fail: the raw solver output jumps 50° and 40° at each toggle."""
    seen = with_hand(tracked(), roll_deg=10.0, curl_deg=40.0)
    lost = with_hand(tracked(right_hand=0.0), roll_deg=60.0, curl_deg=0.0)
    raw = np.array([r.bones for r in [seen, lost, seen]])
    assert deg(raw[1:], raw[:-1])[:, HAND].max() > 39.0


def test_a_one_result_flip_is_ignored_and_a_lasting_move_is_followed() -> None:
    seen = with_hand(tracked(), roll_deg=10.0, curl_deg=20.0)
    flipped = with_hand(tracked(), roll_deg=160.0, curl_deg=20.0)
    rigs = [seen] * 8 + [flipped] + [seen] * 4
    out = run(MotionGate(), rigs, 30.0)
    assert deg(out[8:, HAND], seen.bones[HAND]).max() < 1e-6  # the flip never shows
    moved = with_hand(tracked(), roll_deg=80.0, curl_deg=20.0)
    out = run(MotionGate(), [seen] * 8 + [moved] * 30, 30.0)
    assert deg(out[9, HAND], seen.bones[HAND]).max() < 1e-6  # doubted: < 3 results agree
    assert deg(out[-1, HAND], moved.bones[HAND]).max() < 1e-6  # then believed and reached
    assert deg(out[9:, HAND], out[8:-1, HAND]).max() <= 300.0 / 30.0 + 1e-6  # at 300°/s


def test_legs_rest_seated_or_standing() -> None:
    unseen_legs = tracked(left_leg=0.0, right_leg=0.0)
    thigh = BONE_INDEX["LeftUpperLeg"]
    auto = MotionGate().update(unseen_legs, 0.0)
    assert deg(auto.bones[thigh], [0, 0, 0, 1]) == pytest.approx(90.0)  # close-up: seated
    forward = quat.rotate(auto.bones[thigh], -Y)  # the thigh points forward (+Z)
    assert forward @ Z > 0.99
    shin = quat.rotate(quat.mul(auto.bones[thigh], auto.bones[BONE_INDEX["LeftLowerLeg"]]), -Y)
    assert shin @ -Y > 0.99  # and the shin hangs straight down
    standing = MotionGate(legs="standing").update(unseen_legs, 0.0)
    assert deg(standing.bones[thigh], [0, 0, 0, 1]) < 1e-6
    with pytest.raises(ValueError):
        MotionGate(legs="kneeling")


def test_lost_tracking_eases_to_neutral_within_the_hold_and_a_second() -> None:
    pose = with_hand(tracked(), roll_deg=30.0, curl_deg=30.0)
    pose.bones[BONE_INDEX["LeftUpperArm"]] = quat.from_axis_angle(Z, math.radians(-40.0))
    pose.bones[BONE_INDEX["Head"]] = quat.from_axis_angle(Y, math.radians(20.0))
    pose.expressions[EXPRESSION_INDEX["A"]] = 0.8
    pose.head[:] = (20.0, 5.0, 0.0)
    nobody = Rig.rest()  # no person: confidence 0 everywhere
    gate = MotionGate(legs="standing")
    fps = 30.0
    out = [gate.update(r, k / fps) for k, r in enumerate([pose] * 10 + [nobody] * 90)]
    neutral = neutral_rig(pose, seated=False)
    at = [k for k, r in enumerate(out) if np.all(deg(r.bones, neutral.bones) < 0.5)
          and r.expressions.max() < 0.01 and np.abs(r.head).max() < 0.5]
    assert at, "never reached neutral"
    # held for hold_s, then the arm's 105° to its rest at 90°/s
    assert (at[0] - 10) / fps <= gate.hold_s + 105.0 / 90.0 + 0.1
    assert deg(out[15].bones, pose.bones).max() < 1e-6  # held first
    arm = quat.rotate(neutral.bones[BONE_INDEX["LeftUpperArm"]], -X)
    assert arm @ -Y > 0.85  # neutral arms hang down beside the body


def test_neutral_rig_keeps_the_legs_unless_told() -> None:
    rig = tracked()
    rig.bones[BONE_INDEX["LeftLowerLeg"]] = quat.from_axis_angle(X, 1.0)
    assert np.allclose(neutral_rig(rig).bones[BONE_INDEX["LeftLowerLeg"]],
                       rig.bones[BONE_INDEX["LeftLowerLeg"]])
    assert np.allclose(neutral_rig(rig, seated=True).bones, rest_bones(True))
    assert neutral_rig(rig).confidence.max() == 0.0


def test_hips_and_head_are_relative_to_the_neutral() -> None:
    cal = Calibration()
    first = tracked()
    first.hips_position[:] = (0.1, -0.3, -1.5)  # 3.5 m from the camera
    assert np.allclose(cal.apply(first.copy()).hips_position, 0.0)  # the first frame is neutral
    later = first.copy()
    later.hips_position[:] = (0.3, -0.3, -1.4)
    assert np.allclose(cal.apply(later.copy()).hips_position, (0.2, 0.0, 0.1))
    # Re-centre on a frame looking 20° down: that becomes straight ahead.
    down = later.copy()
    tilt = quat.from_axis_angle(X, math.radians(10.0))
    down.bones[BONE_INDEX["Neck"]] = down.bones[BONE_INDEX["Head"]] = tilt
    down.head[:] = (5.0, 20.0, 0.0)
    cal.recenter()
    again = cal.apply(down.copy())
    assert np.allclose(again.hips_position, 0.0)
    assert deg(again.bones[BONE_INDEX["Head"]], [0, 0, 0, 1]) < 1e-6
    assert np.allclose(again.head, 0.0)
    up = down.copy()
    up.head[:] = (5.0, 0.0, 0.0)
    up.bones[BONE_INDEX["Neck"]] = up.bones[BONE_INDEX["Head"]] = quat.identity(1)[0]
    assert cal.apply(up).head[1] == pytest.approx(-20.0)


def test_a_session_re_centres_when_the_option_counts_up() -> None:
    session = RigSession(RigOptions())
    session.update(RigOptions(recenter=1))
    assert session.calibration.pending
    session.update(RigOptions(recenter=1, legs="standing"))
    assert session.gate.legs == "standing"


def test_protocol_options() -> None:
    hello = parse_hello({"protocol": 1, "rig": {"legs": "seated"}})
    assert hello.rig == RigOptions(legs="seated")
    with pytest.raises(ProtocolError, match="legs"):
        parse_hello({"protocol": 1, "rig": {"legs": "lotus"}})
    once = parse_configure({"recenter": True}, hello)
    assert once.rig is not None and once.rig.recenter == 1 and once.rig.legs == "seated"
    twice = parse_configure({"recenter": True}, once)
    assert twice.rig is not None and twice.rig.recenter == 2
    kept = parse_configure({"rig": {"legs": "standing"}}, twice)
    assert kept.rig == RigOptions(legs="standing", recenter=2)
    with pytest.raises(ProtocolError, match="needs the rig"):
        parse_configure({"recenter": True}, Hello())
    with pytest.raises(ProtocolError, match="boolean"):
        parse_configure({"recenter": "yes"}, hello)
