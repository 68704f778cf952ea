"""Per-session temporal filtering of Rigs: One Euro filter, quaternion continuity, blink hysteresis,
mirroring.

One Euro filter (Casiez, Roussel, Vogel, CHI 2012): an exponential smoother whose cutoff rises with
speed, cutoff = min_cutoff + beta * |smoothed derivative|, so a held pose is smoothed hard (jitter
down) while a fast move is followed with little lag. It runs on every channel at once (one numpy
pass): 4 components per bone, hips xyz, head angles (in radians, to share the scale of the
others) and expressions. A bone's 4 components share one speed (the norm of their derivative), so a
rotation is never filtered component by component at different rates.

Quaternions: each incoming quaternion is first flipped to the hemisphere of the previous output
(q and -q are the same rotation, but averaging them is not), then filtered and renormalised. An
exponential smoother's output is a positive blend of its previous output and the (aligned) input,
so consecutive outputs never change sign either.

Blinks: Blink_L / Blink_R pass through a two-threshold latch: an eye closes when its raw value
reaches blink_close and reopens only below blink_open. While closed the output is 1; while open it
is the filtered value capped at blink_open. A noisy value hovering around one threshold therefore
cannot make the eye flicker; on each change of state the channel's filter restarts from the raw
value, so blinks stay crisp instead of being smeared by the filter.

Mirror (mirror=True): swap Left*/Right* bones, Blink_L/R, LookLeft/LookRight and left/right
confidences, reflect rotations across the sagittal plane (quat.mirror_x), negate hips x, yaw and
roll: the avatar then moves like the user's mirror image (selfie view).

Settling with the defaults (min_cutoff=0.4 Hz, beta=2, d_cutoff=1 Hz; measured by
tests/test_rig_smoothing.py), counted in frames after the step until the output is within 5 % of
the step of its target and stays there:

    step                     30 fps            15 fps
    bone rotation 60°        4 (133 ms)        3 (200 ms)
    bone rotation 10°       10 (333 ms)        8 (533 ms)
    expression 0 -> 1        3 (100 ms)        2 (133 ms)

Big moves settle fastest because speed raises the cutoff. On a held pose with 1° of rotation noise
per frame, frame-to-frame jitter drops more than 5x at 30 fps; through the server, on real
landmarks, 5.1x over all bones (docs/rig.md).

Hands and forearms: their beta is HAND_BETA_SCALE times the others' (the hand's roll, which
both carry, is MediaPipe's noisiest measure), so a hand's jitter is not taken for speed.

Confidence: the arms', legs' and body's bones are smoothed harder when their part's confidence
is low (the cutoff is scaled by confidence_scale(): 1 from 0.9 up, down to 0.25 at 0.45 and
below, above 0), so MediaPipe's guesses at a half-hidden limb are damped rather than followed.

enabled=False passes values through untouched apart from mirroring and the hemisphere alignment.
A gap longer than max_gap seconds (tracking lost, stream paused) restarts the filter. Confidence
is never filtered: it reports tracking state, which a consumer wants at once.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from holistream.rig import quat
from holistream.rig.skeleton import (
    BONES,
    EXPRESSION_INDEX,
    EXPRESSIONS,
    PART_INDEX,
    Rig,
    mirror_rig,
)

F64 = npt.NDArray[np.float64]

NB = len(BONES)
NE = len(EXPRESSIONS)
# Channel layout of the filter state: bones (4 each), hips (3), head (3, radians), expressions.
_Q = slice(0, 4 * NB)
_HIPS = slice(4 * NB, 4 * NB + 3)
_HEAD = slice(4 * NB + 3, 4 * NB + 6)
_EXPR = slice(4 * NB + 6, 4 * NB + 6 + NE)
NCH = 4 * NB + 6 + NE
# Speed groups: one per bone, one for hips, one for head, one per expression.
_GROUP = np.concatenate(
    (np.repeat(np.arange(NB), 4), [NB] * 3, [NB + 1] * 3, NB + 2 + np.arange(NE))
).astype(np.intp)
NGROUPS = NB + 2 + NE
_BLINKS = np.array([EXPRESSION_INDEX["Blink_L"], EXPRESSION_INDEX["Blink_R"]])
HAND_BETA_SCALE = 0.3


def _bone_part(name: str) -> int:
    """The confidence part that scales a bone's smoothing, or -1 (never scaled)."""
    side = "left" if name.startswith("Left") else "right"
    if name.endswith(("UpperArm", "LowerArm")):
        return PART_INDEX[side + "_arm"]
    if name.endswith(("UpperLeg", "LowerLeg", "Foot")):
        return PART_INDEX[side + "_leg"]
    if name in ("Hips", "Spine", "Chest"):
        return PART_INDEX["body"]
    return -1


# Per speed group: the part whose confidence scales its cutoff (-1: none).
_GROUP_PART = np.array([_bone_part(n) for n in BONES] + [-1] * (NGROUPS - NB), dtype=np.intp)
_SCALED = _GROUP_PART >= 0
# Hands and forearms share the hand's roll, the noisiest thing MediaPipe measures (tens of
# degrees from one result to the next on a still hand): their cutoff rises with speed less.
_BETA = np.ones(NGROUPS)
_BETA[[i for i, n in enumerate(BONES) if n.endswith(("Hand", "LowerArm"))]] = HAND_BETA_SCALE


def confidence_scale(conf: F64) -> F64:
    """Cutoff factor for a confidence: 1 at 0.9 and above, falling to 0.25 at 0.45 and below;
    1 at 0 (a lost part: the motion gate, server/rig/tracking.py, holds or rests it)."""
    scale = np.clip(0.25 + 0.75 * (conf - 0.45) / 0.45, 0.25, 1.0)
    return np.asarray(np.where(conf <= 0.0, 1.0, scale), dtype=np.float64)


class RigSmoother:
    """Stateful smoother for one session's stream of Rigs; see the module docstring."""

    def __init__(
        self,
        min_cutoff: float = 0.4,
        beta: float = 2.0,
        d_cutoff: float = 1.0,
        *,
        enabled: bool = True,
        mirror: bool = False,
        blink_close: float = 0.6,
        blink_open: float = 0.35,
        max_gap: float = 1.0,
    ) -> None:
        if min_cutoff <= 0 or d_cutoff <= 0 or beta < 0:
            raise ValueError("min_cutoff and d_cutoff must be > 0, beta >= 0")
        if not 0.0 <= blink_open < blink_close <= 1.0:
            raise ValueError("need 0 <= blink_open < blink_close <= 1")
        self.min_cutoff = min_cutoff
        self.beta = beta
        self.d_cutoff = d_cutoff
        self.enabled = enabled
        self.mirror = mirror
        self.blink_close = blink_close
        self.blink_open = blink_open
        self.max_gap = max_gap
        self.reset()

    def reset(self) -> None:
        """Forget the history (next update passes its rig through)."""
        self._x: F64 | None = None  # filtered channels
        self._dx = np.zeros(NCH)  # filtered derivative
        self._t = 0.0
        self._closed = np.zeros(2, dtype=bool)  # blink latch (Blink_L, Blink_R)
        self._last: Rig | None = None

    def update(self, rig: Rig, t_seconds: float) -> Rig:
        """Filter one frame taken at t_seconds (monotonic clock); returns a new Rig."""
        src = mirror_rig(rig) if self.mirror else rig
        q = quat.normalize(src.bones)
        if self._x is not None:  # align to the previous output's hemisphere
            prev = self._x[_Q].reshape(NB, 4)
            q = np.where(np.add.reduce(q * prev, -1, keepdims=True) < 0.0, -q, q)
        x = np.empty(NCH)
        x[_Q] = q.ravel()
        x[_HIPS] = src.hips_position
        x[_HEAD] = np.radians(src.head)
        x[_EXPR] = src.expressions
        x = quat.clean(x)  # a NaN would otherwise stay in the filter state for good

        dt = t_seconds - self._t
        if not self.enabled or self._x is None or dt > self.max_gap or dt < 0:
            out = x
            self._dx = np.zeros(NCH)
            self._closed = src.expressions[_BLINKS] >= self.blink_close
        elif dt == 0.0 and self._last is not None:  # same frame again
            return self._last.copy()
        else:
            out = self._filter(x, dt, src.confidence)
        self._x = out
        self._t = t_seconds

        expr = out[_EXPR].copy()
        if self.enabled:
            expr[_BLINKS] = np.where(self._closed, 1.0, np.minimum(expr[_BLINKS], self.blink_open))
        result = Rig(
            quat.normalize(out[_Q].reshape(NB, 4)),
            out[_HIPS].copy(),
            np.clip(expr, 0.0, 1.0),
            np.degrees(out[_HEAD]),
            src.confidence.copy(),
        )
        self._last = result
        return result.copy()

    def _filter(self, x: F64, dt: float, confidence: F64) -> F64:
        assert self._x is not None
        prev = self._x
        a_d = _alpha(self.d_cutoff, dt)
        self._dx += a_d * ((x - prev) / dt - self._dx)
        speed = np.sqrt(np.bincount(_GROUP, self._dx * self._dx, minlength=NGROUPS))
        scale = np.ones(NGROUPS)
        scale[_SCALED] = confidence_scale(confidence[_GROUP_PART[_SCALED]])
        cutoff = ((self.min_cutoff + self.beta * _BETA * speed) * scale)[_GROUP]
        a = 1.0 / (1.0 + 1.0 / (2.0 * math.pi * cutoff * dt))
        out = prev + a * (x - prev)
        q = quat.normalize(out[_Q].reshape(NB, 4))
        out[_Q] = q.ravel()

        # Blink latch on the raw values; a change of state restarts that channel's filter.
        raw = x[_EXPR][_BLINKS]
        closed = np.where(self._closed, raw > self.blink_open, raw >= self.blink_close)
        flip = closed != self._closed
        if flip.any():
            ch = _EXPR.start + _BLINKS[flip]
            out[ch] = x[ch]
            self._dx[ch] = 0.0
        self._closed = closed
        return out


def _alpha(cutoff: float, dt: float) -> float:
    return 1.0 / (1.0 + 1.0 / (2.0 * math.pi * cutoff * dt))
