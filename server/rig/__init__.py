"""Server-side avatar rig: landmarks -> humanoid bone rotations and VRM expressions, smoothing,
and VMC protocol bundles. Pure computation, no I/O; conventions in skeleton.py."""

from server.rig.skeleton import (
    BONES,
    EXPRESSIONS,
    LAYOUT_CRC,
    LAYOUT_VERSION,
    PARTS,
    Rig,
    RigArrays,
)
from server.rig.solver import RigSolver, solve

__all__ = [
    "BONES",
    "EXPRESSIONS",
    "LAYOUT_CRC",
    "LAYOUT_VERSION",
    "PARTS",
    "Rig",
    "RigArrays",
    "RigSolver",
    "solve",
]
