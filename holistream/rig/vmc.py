"""VMC protocol (OSC over UDP) bundles from a Rig: pure, returns bytes; sending is the caller's job.

The VMC protocol (protocol.vmc.info, "Marionette" receiving side) carries Unity values: left-handed,
+Y up, the avatar facing +Z, metres, quaternions (x, y, z, w), bone names from Unity's
HumanBodyBones and VRM 0.x BlendShapePreset names. Rig values are already in that frame
(skeleton.py), so nothing is converted here.

One bundle per frame, in this order (receivers such as EVMC4U apply blendshapes on Apply):
    /VMC/Ext/OK        (int) 1 3 0 tracking                      loaded, calibrated, normal
                                                                 mode, tracking 1 (ok) or 0 (lost)
    /VMC/Ext/T         (float) t                                 sender's relative time
    /VMC/Ext/Root/Pos  "root" px py pz qx qy qz qw               (include_root=True)
    /VMC/Ext/Bone/Pos  name px py pz qx qy qz qw                 one per skeleton.BONES
    /VMC/Ext/Blend/Val name value                                one per skeleton.EXPRESSIONS
    /VMC/Ext/Blend/Apply

Positions. Root carries the hips' horizontal motion (hips_position x and z; y = 0) with identity
rotation. Bone positions are *local* positions in VMC; receivers that apply them (EVMC4U's
BonePositionSynchronize, on by default) need the rest offsets of the receiving avatar, which the
server does not know. So Hips gets (0, hips_height, 0) and every other bone (0, 0, 0) unless
bone_offsets supplies local rest offsets; with zero offsets, configure the receiver to apply
rotations only (EVMC4U: BonePositionSynchronize off). Rotations are normalised local rotations
(T-pose = identity), what VRM 0.x models and VRM 1.0's ControlRig expect.

python-osc's builders write the messages (build_osc_bundle); build_bundle reuses a bundle they
built once and only rewrites the float arguments, byte-identical and much cheaper per frame. The
time tag is "immediately", so receivers apply frames on arrival rather than scheduling them.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping

import numpy as np
import numpy.typing as npt
from pythonosc.osc_bundle import OscBundle
from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder

from holistream.rig.skeleton import BONE_INDEX, BONES, EXPRESSIONS, Rig

F64 = npt.NDArray[np.float64]

OK = "/VMC/Ext/OK"
TIME = "/VMC/Ext/T"
ROOT = "/VMC/Ext/Root/Pos"
BONE = "/VMC/Ext/Bone/Pos"
BLEND = "/VMC/Ext/Blend/Val"
APPLY = "/VMC/Ext/Blend/Apply"

DEFAULT_HIPS_HEIGHT = 0.9  # metres above the root for a typical adult-sized VRM
CALIBRATED = 3  # /VMC/Ext/OK calibration state: the rig is relative to its neutral (docs/rig.md)


def _message(address: str, *args: str | int | float) -> OscMessage:
    builder = OscMessageBuilder(address=address)
    for arg in args:
        builder.add_arg(arg)
    return builder.build()


def _frame_values(
    rig: Rig,
    t_seconds: float,
    include_root: bool,
    hips_height: float,
    bone_offsets: Mapping[str, npt.ArrayLike] | None,
) -> tuple[F64, F64, F64, F64]:
    """(time, root pos+rot (7,), bone pos+rot (len(BONES), 7), expressions) as float64."""
    hips = np.nan_to_num(np.asarray(rig.hips_position, dtype=np.float64))
    root = np.array([hips[0], 0.0, hips[2], 0.0, 0.0, 0.0, 1.0])
    positions = np.zeros((len(BONES), 3))
    if bone_offsets:
        for name, offset in bone_offsets.items():
            if name in BONE_INDEX:
                positions[BONE_INDEX[name]] = np.asarray(offset, dtype=np.float64)
    if not bone_offsets or "Hips" not in bone_offsets:
        positions[0] = (0.0, hips_height, 0.0)
    if not include_root:  # nothing else carries the horizontal motion then
        positions[0, [0, 2]] += hips[[0, 2]]
    bones = np.concatenate((positions, np.asarray(rig.bones, dtype=np.float64)), axis=1)
    expr = np.asarray(rig.expressions, dtype=np.float64)
    return np.array([float(t_seconds)]), root, bones, expr


def ok_args(tracking: bool) -> tuple[int, int, int, int]:
    """/VMC/Ext/OK's arguments (protocol v2.7): loaded, calibration state (3: calibrated),
    calibration mode (0: normal), tracking status (1: tracking, 0: lost)."""
    return (1, CALIBRATED, 0, int(tracking))


def build_osc_bundle(
    rig: Rig,
    t_seconds: float,
    *,
    include_root: bool = True,
    hips_height: float = DEFAULT_HIPS_HEIGHT,
    bone_offsets: Mapping[str, npt.ArrayLike] | None = None,
    tracking: bool = True,
) -> OscBundle:
    """The frame's VMC bundle as a python-osc OscBundle, message by message (reference path)."""
    t, root, bones, expr = _frame_values(rig, t_seconds, include_root, hips_height, bone_offsets)
    bundle = OscBundleBuilder(IMMEDIATELY)
    bundle.add_content(_message(OK, *ok_args(tracking)))
    bundle.add_content(_message(TIME, *t.tolist()))
    if include_root:
        bundle.add_content(_message(ROOT, "root", *root.tolist()))
    for name, vals in zip(BONES, bones.tolist(), strict=True):
        bundle.add_content(_message(BONE, name, *vals))
    for name, value in zip(EXPRESSIONS, expr.tolist(), strict=True):
        bundle.add_content(_message(BLEND, name, value))
    bundle.add_content(_message(APPLY))
    return bundle.build()


class _Template:
    """A bundle built once by python-osc, plus the byte offsets of its float arguments.

    Every message of a frame has the same address, type tags and names; only the float32
    arguments (always the trailing ones) change. Writing them into a copy of the template is
    ~50x faster than re-running the builders for ~60 messages per frame and session.
    """

    def __init__(self, include_root: bool, tracking: bool) -> None:
        zero = Rig.rest()
        dgram = bytes(
            build_osc_bundle(zero, 0.0, include_root=include_root, tracking=tracking).dgram
        )
        self.data = np.frombuffer(dgram, dtype=np.uint8).copy()
        floats = [(TIME, 1)] + ([(ROOT, 7)] if include_root else [])
        floats += [(BONE, 7)] * len(BONES) + [(BLEND, 1)] * len(EXPRESSIONS) + [(APPLY, 0)]
        counts = [0] + [n for _, n in floats]  # OK has no float
        offsets: list[int] = []
        pos = 16  # "#bundle\0" + time tag
        for n in counts:
            (size,) = struct.unpack(">i", dgram[pos : pos + 4])
            end = pos + 4 + size
            offsets.extend(range(end - 4 * n, end))
            pos = end
        if pos != len(dgram):
            raise AssertionError("unexpected VMC bundle layout")
        self.byte_index = np.array(offsets, dtype=np.intp)

    def render(self, values: F64) -> bytes:
        out = self.data.copy()
        out[self.byte_index] = values.astype(">f4").view(np.uint8)
        return out.tobytes()


_TEMPLATES: dict[tuple[bool, bool], _Template] = {}


def build_bundle(
    rig: Rig,
    t_seconds: float,
    *,
    include_root: bool = True,
    hips_height: float = DEFAULT_HIPS_HEIGHT,
    bone_offsets: Mapping[str, npt.ArrayLike] | None = None,
    tracking: bool = True,
) -> bytes:
    """The frame's VMC bundle as one UDP datagram payload.

    Byte-identical to build_osc_bundle(...).dgram (tested), via a cached python-osc template.
    """
    key = (include_root, tracking)
    template = _TEMPLATES.get(key)
    if template is None:
        template = _TEMPLATES[key] = _Template(include_root, tracking)
    t, root, bones, expr = _frame_values(rig, t_seconds, include_root, hips_height, bone_offsets)
    parts = (t, root, bones.ravel(), expr) if include_root else (t, bones.ravel(), expr)
    return template.render(np.concatenate(parts))
