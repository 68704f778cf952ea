"""Server-side avatar rig: MediaPipe Holistic landmarks -> humanoid bone rotations, VRM
expressions and head angles (solver), per-session smoothing, and VMC protocol bundles.

Pure computation, no I/O. Coordinate conventions and the wire order of bones, expressions and
parts are documented in skeleton.py.
"""

from server.rig import quat
from server.rig.skeleton import (
    BONES,
    EXPRESSIONS,
    LAYOUT_CRC,
    LAYOUT_VERSION,
    PARTS,
    Rig,
    RigArrays,
)
from server.rig.smoothing import RigSmoother, mirror_rig
from server.rig.solver import RigSolver, solve
from server.rig.tracking import neutral_rig
from server.rig.vmc import build_bundle, build_osc_bundle

__all__ = [
    "BONES",
    "EXPRESSIONS",
    "LAYOUT_CRC",
    "LAYOUT_VERSION",
    "PARTS",
    "Rig",
    "RigArrays",
    "RigSmoother",
    "RigSolver",
    "build_bundle",
    "build_osc_bundle",
    "mirror_rig",
    "neutral_rig",
    "quat",
    "solve",
]
