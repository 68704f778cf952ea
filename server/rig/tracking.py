"""Confidence-aware motion: what a part does when its tracking comes and goes.

A stateful stage between the solver (before it moves the hands' twist into the forearms) and the
smoother. The rig is split into groups of bones, each spoken for by confidence parts:

    group        bones                          tracked when              rest
    left_hand    LeftHand + its 15 finger bones  left_hand > 0             straight, fingers flat
    left_arm     LeftUpperArm, LeftLowerArm      left_arm >= arm_min       arms down beside the body
    left_leg     LeftUpperLeg, LeftLowerLeg, …   left_leg > 0              seated or standing
    head         Neck, Head, head angles         face > 0 (or body > 0)    upright, facing ahead
    body         Hips, Spine, Chest, hips        body > 0                  upright, neutral position
    face         expressions                     face > 0                  neutral (all 0)

(and the same for the right side). A group that loses tracking holds its last tracked pose for
`hold_s`, then eases to its rest. Whenever a group's source changes (tracked -> held -> rest ->
tracked, or the head going from the face mesh to the pose's ears), its bones do not jump: they
turn toward the new target at no more than `max_speed_deg` degrees a second (expressions
`expression_speed` a second, the hips `position_speed` metres a second) until they reach it, and
follow it directly from then on. A hand that flickers in and out of detection therefore keeps
its last pose instead of falling back to another source, and comes back without a snap.

Outliers. MediaPipe now and then turns a tracked hand over for a frame or two (the palm read as
the back: ~150° of roll about the forearm), or flips a finger's last joint. Once a group has
been tracked for `confirm` results in a row, a bone whose new rotation is more than `jump_deg`
from its last believed one keeps that (a hand whose Hand bone does so keeps all its bones); only
when `confirm` results in a row agree on where it went is it believed (a real, fast move), and
then reached at `confirmed_speed_deg` a second. A part seen for the first time (a leg that
comes into view) eases in at that speed too.

Legs at rest: "standing" (straight down, the T-pose's legs) or "seated" (thighs forward, shins
down); "auto" sits when neither leg is seen (a webcam close-up at a desk: the solver then keeps
the hips at rest too) and stands otherwise. A leg counts as seen once it has been for
`leg_confirm` results in a row (its visibility hovering at the limit must not flip the legs
between seated and tracked; MediaPipe's first frames guess the most).

Pure and per session; time is the frames' own timestamps (seconds); one step covers at most
max_step_s, so a pose still eases over after a pause in the stream.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from holistream.rig import quat
from holistream.rig.neutral import rest_bones
from holistream.rig.skeleton import BONE_INDEX, BONES, EXPRESSIONS, PART_INDEX, Rig

F64 = npt.NDArray[np.float64]

LEGS_MODES = ("auto", "seated", "standing")
def _group_rows(names: tuple[str, ...]) -> npt.NDArray[np.intp]:
    return np.array([BONE_INDEX[n] for n in names], dtype=np.intp)


def _hand_rows(side: str) -> npt.NDArray[np.intp]:
    return np.array(
        [BONE_INDEX[side + "Hand"]]
        + [i for i, n in enumerate(BONES) if n.startswith(side) and n.endswith(("Proximal",
           "Intermediate", "Distal"))],
        dtype=np.intp,
    )  # fmt: skip


# (name, bone rows, kind); kind decides what "tracked" means (see _source).
_GROUPS: tuple[tuple[str, npt.NDArray[np.intp]], ...] = (
    ("left_hand", _hand_rows("Left")),
    ("right_hand", _hand_rows("Right")),
    ("left_arm", _group_rows(("LeftUpperArm", "LeftLowerArm"))),
    ("right_arm", _group_rows(("RightUpperArm", "RightLowerArm"))),
    ("left_leg", _group_rows(("LeftUpperLeg", "LeftLowerLeg", "LeftFoot"))),
    ("right_leg", _group_rows(("RightUpperLeg", "RightLowerLeg", "RightFoot"))),
    ("head", _group_rows(("Neck", "Head"))),
    ("body", _group_rows(("Hips", "Spine", "Chest"))),
    ("face", np.zeros(0, dtype=np.intp)),
)


_LEGS = ("left_leg", "right_leg")
_CHECKED = frozenset(name for name, _ in _GROUPS if name != "face")


@dataclass(slots=True)
class _Group:
    mode: str = ""  # the source now: a part name, "hold" or "rest"
    seen_at: float = -math.inf
    last: list[F64] = field(default_factory=list)  # the last tracked values
    out: list[F64] = field(default_factory=list)  # the last output values
    blending: bool = False
    fast: bool = False  # a confirmed jump: blend at confirmed_speed
    streak: int = 0  # results tracked in a row from the same source
    raw_streak: int = 0  # results in a row with the part's confidence > 0 (legs)
    suspect: npt.NDArray[np.intp] = field(default_factory=lambda: np.zeros(0, dtype=np.intp))
    candidate: F64 = field(default_factory=lambda: np.zeros((0, 4)))  # where a jump went


class MotionGate:
    """Per-session hold / ease / blend stage; see the module docstring."""

    def __init__(
        self,
        *,
        legs: str = "auto",
        hold_s: float = 1.0,
        arm_min: float = 0.5,
        max_speed_deg: float = 90.0,
        expression_speed: float = 4.0,
        position_speed: float = 1.0,
        max_gap: float = 1.0,
        jump_deg: float = 40.0,
        confirm: int = 3,
        confirmed_speed_deg: float = 300.0,
        max_step_s: float = 0.1,
        leg_confirm: int = 5,
    ) -> None:
        if legs not in LEGS_MODES:
            raise ValueError(f"legs must be one of {LEGS_MODES}")
        self.legs = legs
        self.hold_s = hold_s
        self.arm_min = arm_min
        self.max_speed = math.radians(max_speed_deg)
        self.expression_speed = expression_speed
        self.position_speed = position_speed
        self.max_gap = max_gap
        self.jump = math.radians(jump_deg)
        self.confirm = confirm
        self.confirmed_speed = math.radians(confirmed_speed_deg)
        self.max_step_s = max_step_s
        self.leg_confirm = leg_confirm
        self._rest = {False: rest_bones(False), True: rest_bones(True)}
        self.reset()

    def reset(self) -> None:
        self._groups = {name: _Group() for name, _ in _GROUPS}
        self._t: float | None = None
        self.seated = self.legs == "seated"
        self._seated_shown = self.seated
        self._decided = False  # has a body been found yet ("auto" legs)

    def update(self, rig: Rig, t: float) -> Rig:
        """The rig to show for a frame at time t (seconds); `rig` is left untouched."""
        conf = rig.confidence
        for leg in _LEGS:  # legs seen only now and then (visibility near the limit) are not
            g = self._groups[leg]
            g.raw_streak = g.raw_streak + 1 if conf[PART_INDEX[leg]] > 0.0 else 0
        if self.legs != "auto":
            self.seated = self.legs == "seated"
        elif conf[PART_INDEX["body"]] > 0.0:  # no pose: keep what the last one said
            self.seated = all(self._source(leg, conf) is None for leg in _LEGS)
            if not self._decided:  # the first body found decides at once: nothing to ease from
                self._decided = True
                self._seated_shown = self.seated
        rest_changed = self.seated != self._seated_shown
        self._seated_shown = self.seated
        gap = self._t is not None and not 0.0 <= t - self._t <= self.max_gap
        # A step never covers more than max_step_s: after a pause the pose still eases over.
        dt = 0.0 if self._t is None else min(max(t - self._t, 0.0), self.max_step_s)
        self._t = t
        out = rig.copy()
        rest = self._rest[self.seated]
        for name, rows in _GROUPS:
            g = self._groups[name]
            src = self._source(name, conf)
            first = src is not None and not g.last  # tracked for the first time
            values = self._values(name, rows, rig)
            if src is not None:
                g.streak = g.streak + 1 if src == g.mode and not gap else 1
                if name in _CHECKED and g.streak > self.confirm:
                    values = self._reject_jumps(name, g, values)
                g.seen_at, g.last = t, values
                target, mode = values, src
            elif g.last and t - g.seen_at <= self.hold_s:
                target, mode = g.last, "hold"
            else:
                target, mode = self._rest_values(name, rows, rest), "rest"
            if not g.out:  # the first frame: shown as it is
                g.blending = False
            elif mode != g.mode or (mode == "rest" and rest_changed):
                g.blending, g.fast = True, first  # a first sighting eases in fast
            g.mode = mode
            if g.blending:
                speed = self.confirmed_speed if g.fast else self.max_speed
                result, done = self._step(name, g.out, target, dt, speed)
                g.blending = not done
                g.fast = g.fast and not done
            else:
                result = [v.copy() for v in target]
            g.out = result
            self._write(name, rows, out, result)
        return out

    def _reject_jumps(self, name: str, g: _Group, values: list[F64]) -> list[F64]:
        """Bones that jumped more than jump_deg from their last believed rotation keep it until
        `confirm` results in a row agree (within jump_deg / 2) on where they went. A hand whose
        Hand bone is doubted is doubted whole: its fingers are measured in the hand's frame."""
        believed_q, new = g.last[0], values[0]
        jumped = _angles(believed_q, new) > self.jump
        if g.suspect.shape != jumped.shape:
            g.suspect = np.zeros(jumped.shape, dtype=np.intp)
            g.candidate = new.copy()
        agrees = _angles(g.candidate, new) <= self.jump / 2.0
        g.suspect = np.where(jumped, np.where(agrees & (g.suspect > 0), g.suspect + 1, 1), 0)
        g.candidate = np.where((jumped & (g.suspect == 1))[:, None], new, g.candidate)
        believed = jumped & (g.suspect >= self.confirm)
        if believed.any():
            g.blending = g.fast = True
            g.suspect[believed] = 0
        doubted = jumped & ~believed
        if name.endswith("_hand") and doubted[0]:
            doubted[:] = True
        if not doubted.any():
            return values
        kept = new.copy()
        kept[doubted] = believed_q[doubted]
        return [kept, *values[1:]]

    # -- the parts of a group ----------------------------------------------------------------

    def _source(self, name: str, conf: F64) -> str | None:
        """The part a group is tracked from in this frame, or None when it is lost."""
        face, body = conf[PART_INDEX["face"]], conf[PART_INDEX["body"]]
        if name == "head":
            return "face" if face > 0.0 else ("body" if body > 0.0 else None)
        if name == "face":
            return "face" if face > 0.0 else None
        c = conf[PART_INDEX[name]]
        if name.endswith("_arm"):
            return name if c >= self.arm_min else None
        if name in _LEGS:  # a leg is believed after leg_confirm results seen in a row
            g = self._groups[name]
            seen = c > 0.0 and (g.mode == name or g.raw_streak >= self.leg_confirm)
            return name if seen else None
        return name if c > 0.0 else None

    @staticmethod
    def _values(name: str, rows: npt.NDArray[np.intp], rig: Rig) -> list[F64]:
        if name == "face":
            return [rig.expressions.copy()]
        values = [rig.bones[rows].copy()]
        if name == "head":
            values.append(rig.head.copy())
        elif name == "body":
            values.append(rig.hips_position.copy())
        return values

    @staticmethod
    def _rest_values(name: str, rows: npt.NDArray[np.intp], rest: F64) -> list[F64]:
        if name == "face":
            return [np.zeros(len(EXPRESSIONS))]
        values = [rest[rows].copy()]
        if name in ("head", "body"):
            values.append(np.zeros(3))
        return values

    @staticmethod
    def _write(name: str, rows: npt.NDArray[np.intp], rig: Rig, values: list[F64]) -> None:
        if name == "face":
            rig.expressions = values[0]
            return
        rig.bones[rows] = values[0]
        if name == "head":
            rig.head = values[1]
        elif name == "body":
            rig.hips_position = values[1]

    def _step(
        self, name: str, now: list[F64], target: list[F64], dt: float, speed: float
    ) -> tuple[list[F64], bool]:
        """One rate-limited step from `now` toward `target`; (values, reached)."""
        if name == "face":
            e, done = _toward(now[0], target[0], self.expression_speed * dt)
            return [e], done
        q, done = _turn_toward(now[0], target[0], speed * dt)
        out = [q]
        if name == "head":  # head angles in degrees, at the bones' speed
            a, ok = _toward(now[1], target[1], math.degrees(speed) * dt)
            out.append(a)
            done &= ok
        elif name == "body":
            p, ok = _toward(now[1], target[1], self.position_speed * dt)
            out.append(p)
            done &= ok
        return out, done


def _angles(a: F64, b: F64) -> F64:
    """Rotation angles (radians) between quaternion rows, either sign."""
    return np.asarray(2.0 * np.arccos(np.minimum(np.abs(np.add.reduce(a * b, -1)), 1.0)))


def _toward(a: F64, b: F64, step: float) -> tuple[F64, bool]:
    """Each value of a moved toward b by at most step."""
    d = b - a
    return a + np.clip(d, -step, step), bool(np.all(np.abs(d) <= step))


def _turn_toward(a: F64, b: F64, max_angle: float) -> tuple[F64, bool]:
    """Each rotation of a turned toward b (shortest arc) by at most max_angle radians."""
    dot = np.add.reduce(a * b, -1, keepdims=True)
    b = np.where(dot < 0.0, -b, b)
    dot = np.abs(dot)
    angle = 2.0 * np.arccos(np.minimum(dot, 1.0))
    t = np.where(angle > max_angle, max_angle / np.maximum(angle, 1e-12), 1.0)
    theta = angle / 2.0
    sin = np.sin(theta)
    safe = sin > 1e-6
    wa = np.where(safe, np.sin((1.0 - t) * theta) / np.where(safe, sin, 1.0), 1.0 - t)
    wb = np.where(safe, np.sin(t * theta) / np.where(safe, sin, 1.0), t)
    return quat.normalize(wa * a + wb * b), bool(np.all(angle <= max_angle + 1e-9))
