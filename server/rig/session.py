"""A session's rig state in the worker: solver, calibration, motion gate and smoother, producing
both wire forms at once.

Per frame: solve (server/rig/solver.py, before the forearm twist) -> calibrate (head and hips
relative to the session's neutral) -> MotionGate (hold, ease to rest, blend source changes;
server/rig/tracking.py) -> forearm twist -> RigSmoother. With "smoothing": false only the solve
and the calibration run: the raw per-frame rig.

Neutral. The hips position is reported relative to a neutral position: the first frame in
which the body is found, and after a re-centre (RigOptions.recenter counting up) the next such
frame. A re-centre also takes the head's pose of that frame as neutral: from then on the head
bones (Neck, Head) and the `head` angles are relative to it, so a camera above or beside the
screen does not leave the avatar looking down or away.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import numpy.typing as npt

from holistream.landmarks import Array, Landmarks
from holistream.protocol import RigArrays, RigOptions
from holistream.rig import quat
from holistream.rig.skeleton import BONE_INDEX, PART_INDEX, Rig
from server.rig import RigSmoother, RigSolver
from server.rig.tracking import MotionGate

F64 = npt.NDArray[np.float64]

NECK, HEAD = BONE_INDEX["Neck"], BONE_INDEX["Head"]
BODY = PART_INDEX["body"]


class Calibration:
    """The session's neutral: hips position, and (after a re-centre) the head's pose."""

    def __init__(self) -> None:
        self.hips: F64 | None = None
        self.head_rel: quat.Q | None = None  # chest -> head rotation at neutral
        self.head_angles = np.zeros(3)
        self.pending = False  # a re-centre waits for a frame with the body found

    def recenter(self) -> None:
        self.pending = True

    def apply(self, rig: Rig) -> Rig:
        """Head and hips of `rig` relative to the neutral (in place; returns rig)."""
        found = rig.confidence[BODY] > 0.0
        if found and (self.hips is None or self.pending):
            self.hips = rig.hips_position.copy()
        if self.pending and found:
            n, h = tuple(rig.bones[NECK].tolist()), tuple(rig.bones[HEAD].tolist())
            self.head_rel = quat.mul1(n, h)
            self.head_angles = rig.head.copy()
            self.pending = False
        if self.hips is not None and found:
            rig.hips_position = rig.hips_position - self.hips
        if self.head_rel is not None:
            x, y, z, w = self.head_rel
            n, h = tuple(rig.bones[NECK].tolist()), tuple(rig.bones[HEAD].tolist())
            rel = quat.mul1((-x, -y, -z, w), quat.mul1(n, h))
            half = quat.power1(rel, 0.5)
            rig.bones[NECK] = rig.bones[HEAD] = half
            angles = rig.head - self.head_angles
            angles[0] = (angles[0] + 180.0) % 360.0 - 180.0
            rig.head = angles
        return rig


class RigSession:
    def __init__(self, options: RigOptions) -> None:
        self.options = options
        self.solver = RigSolver()
        self.options = options
        self.smoother = RigSmoother(enabled=options.smoothing, mirror=options.mirror)
        self.gate = MotionGate(legs=options.legs)
        self.calibration = Calibration()
        if options.recenter:
            self.calibration.recenter()

    def update(self, options: RigOptions) -> None:
        """New options on a live session: legs now, a re-centre at the next frame with a body."""
        if options.recenter != self.options.recenter:
            self.calibration.recenter()
        if options.legs != self.options.legs:
            self.gate.legs = options.legs
        if (options.smoothing, options.mirror) != (self.options.smoothing, self.options.mirror):
            self.smoother = RigSmoother(enabled=options.smoothing, mirror=options.mirror)
            self.gate.reset()
        self.options = options

    def rig(self, lm: Landmarks, t_seconds: float) -> Rig:
        """One frame's rig, through every stage."""
        rig = self.calibration.apply(self.solver.solve_untwisted(lm))
        if self.options.smoothing:
            rig = self.gate.update(rig, t_seconds)
        return self.smoother.update(self.solver.twist_forearms(rig), t_seconds)

    def solve(
        self, parts: dict[str, Array | None], width: int, height: int, t_seconds: float
    ) -> tuple[dict[str, Any], RigArrays]:
        """The rig of one frame as (JSON dict, fixed-order arrays); `solve_ms` is the cost."""
        t0 = time.perf_counter()
        rig = self.rig(Landmarks(width, height, parts), t_seconds)
        arrays = rig.to_arrays()
        as_json = rig.to_json()
        as_json["solve_ms"] = round((time.perf_counter() - t0) * 1000, 3)
        return as_json, arrays
