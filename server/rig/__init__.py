"""Server-side avatar rig: MediaPipe Holistic landmarks -> humanoid bone rotations, VRM
expressions and head angles (solver), per-session smoothing, and VMC protocol bundles.

Pure computation, no I/O. The rig's types, its wire order of bones, expressions and parts, and
VMC bundles live in holistream.rig (clients need them too); they are re-exported here.
"""

from holistream.rig import quat
from holistream.rig.neutral import neutral_rig
from holistream.rig.skeleton import (
    BONES,
    EXPRESSIONS,
    LAYOUT_CRC,
    LAYOUT_VERSION,
    PARTS,
    Rig,
    RigArrays,
)
from holistream.rig.vmc import build_bundle, build_osc_bundle
from server.rig.smoothing import RigSmoother, mirror_rig
from server.rig.solver import RigSolver, solve

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
