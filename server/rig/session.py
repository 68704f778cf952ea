"""A session's rig state in the worker: solver + smoother, producing both wire forms at once."""

from __future__ import annotations

import time
from typing import Any

from holistream.landmarks import Array, Landmarks
from holistream.protocol import RigArrays, RigOptions
from server.rig import RigSmoother, RigSolver


class RigSession:
    def __init__(self, options: RigOptions) -> None:
        self.solver = RigSolver()
        self.smoother = RigSmoother(enabled=options.smoothing, mirror=options.mirror)

    def solve(
        self, parts: dict[str, Array | None], width: int, height: int, t_seconds: float
    ) -> tuple[dict[str, Any], RigArrays]:
        """The rig of one frame as (JSON dict, fixed-order arrays); `solve_ms` is the cost."""
        t0 = time.perf_counter()
        rig = self.smoother.update(self.solver.solve(Landmarks(width, height, parts)), t_seconds)
        arrays = rig.to_arrays()
        as_json = rig.to_json()
        as_json["solve_ms"] = round((time.perf_counter() - t0) * 1000, 3)
        return as_json, RigArrays(
            bones=arrays.bones,
            hips=arrays.hips,
            head=arrays.head,
            expressions=arrays.expressions,
            confidence=arrays.confidence,
        )
