"""Bone and expression order, the rig's coordinate conventions, and the Rig container.

Coordinate frame (the "avatar frame", the one every Rig value is in): Unity's humanoid frame, as
the VMC protocol expects. Left-handed, metres, +Y up, the avatar faces +Z, +X is the avatar's own
right. This is how UniVRM loads both VRM 0.x and VRM 1.0 models into Unity (VRM 1.0 files face +Z
in glTF's right-handed frame; UniVRM negates X). To drive three-vrm / glTF instead, negate x of
positions and map quaternions (x, y, z, w) -> (x, -y, -z, w) (quat.mirror_x), keeping the sides.

Rest pose: the VRM T-pose. Upright, arms straight along ±X, palms facing -Y (nails +Y), four
fingers straight along the arm, thumbs level at 45° between the arm axis and +Z, legs straight
down, feet pointing +Z. Every bone's rest rotation is the identity ("normalised" bones, as UniVRM
0.x exports them and as VRM 1.0's ControlRig presents them).

Rotations: unit quaternions (x, y, z, w), each **local**, i.e. relative to its parent bone, and the
identity at rest. Parents follow Unity's HumanBodyBones hierarchy restricted to BONES: UpperArm's
parent is Chest (Shoulder / UpperChest are not sent and assumed at rest), UpperLeg's is Hips,
Thumb/Index/... Proximal's is Hand. Hips' rotation is relative to the avatar root.

Person vs avatar: the avatar copies the person as seen by a non-mirrored camera: the person's own
left arm drives LeftUpperArm, and a person facing the camera makes the avatar face +Z. A selfie
(mirrored) camera or a "mirror me" view is RigSmoother(mirror=True).

BONES, EXPRESSIONS and PARTS are a wire format (the binary encoder sends arrays in these orders):
never reorder them; append only, and bump LAYOUT_VERSION. tests pin LAYOUT_CRC.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from holistream.protocol import RigArrays
from holistream.rig import quat

F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]

FINGERS: tuple[str, ...] = ("Thumb", "Index", "Middle", "Ring", "Little")
SEGMENTS: tuple[str, ...] = ("Proximal", "Intermediate", "Distal")

BODY_BONES: tuple[str, ...] = (
    "Hips", "Spine", "Chest", "Neck", "Head",
    "LeftUpperArm", "LeftLowerArm", "LeftHand",
    "RightUpperArm", "RightLowerArm", "RightHand",
    "LeftUpperLeg", "LeftLowerLeg", "LeftFoot",
    "RightUpperLeg", "RightLowerLeg", "RightFoot",
)  # fmt: skip
BONES: tuple[str, ...] = BODY_BONES + tuple(
    f"{side}{finger}{seg}" for side in ("Left", "Right") for finger in FINGERS for seg in SEGMENTS
)
BONE_INDEX: dict[str, int] = {name: i for i, name in enumerate(BONES)}

# VRM 0.x BlendShapePreset names (what VMC receivers expect; case-sensitive in UniVRM).
EXPRESSIONS: tuple[str, ...] = (
    "Blink_L", "Blink_R", "A", "I", "U", "E", "O", "LookUp", "LookDown", "LookLeft", "LookRight",
)  # fmt: skip
EXPRESSION_INDEX: dict[str, int] = {name: i for i, name in enumerate(EXPRESSIONS)}

PARTS: tuple[str, ...] = (
    "body", "left_arm", "right_arm", "left_leg", "right_leg", "face", "left_hand", "right_hand",
)  # fmt: skip
PART_INDEX: dict[str, int] = {name: i for i, name in enumerate(PARTS)}

LAYOUT_VERSION = 1
LAYOUT_CRC: int = zlib.crc32("|".join((*BONES, "#", *EXPRESSIONS, "#", *PARTS)).encode())


def _parent(name: str) -> str | None:
    if name == "Hips":
        return None
    if name in ("Spine", "LeftUpperLeg", "RightUpperLeg"):
        return "Hips"
    if name in ("Chest",):
        return "Spine"
    if name in ("Neck", "LeftUpperArm", "RightUpperArm"):
        return "Chest"
    if name == "Head":
        return "Neck"
    chains = {
        "UpperArm": "LowerArm",
        "LowerArm": "Hand",
        "UpperLeg": "LowerLeg",
        "LowerLeg": "Foot",
    }
    for side in ("Left", "Right"):
        for parent, child in chains.items():
            if name == side + child:
                return side + parent
        for finger in FINGERS:
            if name == f"{side}{finger}Proximal":
                return side + "Hand"
            if name == f"{side}{finger}Intermediate":
                return f"{side}{finger}Proximal"
            if name == f"{side}{finger}Distal":
                return f"{side}{finger}Intermediate"
    raise KeyError(name)


PARENT: dict[str, str | None] = {name: _parent(name) for name in BONES}
# Index of each bone's parent; the root (Hips) points at itself. BONES is topologically ordered.
PARENT_INDEX: npt.NDArray[np.intp] = np.array(
    [BONE_INDEX[p] if p else i for i, p in enumerate(PARENT.values())], dtype=np.intp
)


def _swap(name: str) -> str:
    if name.startswith("Left"):
        return "Right" + name[4:]
    if name.startswith("Right"):
        return "Left" + name[5:]
    if name.endswith("_L"):
        return name[:-2] + "_R"
    if name.endswith("_R"):
        return name[:-2] + "_L"
    if name in ("LookLeft", "LookRight"):
        return "LookRight" if name == "LookLeft" else "LookLeft"
    if name.startswith("left_"):
        return "right_" + name[5:]
    if name.startswith("right_"):
        return "left_" + name[6:]
    return name


# Permutations that swap left and right (used by the mirror option).
MIRROR_BONES = np.array([BONE_INDEX[_swap(n)] for n in BONES], dtype=np.intp)
MIRROR_EXPRESSIONS = np.array([EXPRESSION_INDEX[_swap(n)] for n in EXPRESSIONS], dtype=np.intp)
MIRROR_PARTS = np.array([PART_INDEX[_swap(n)] for n in PARTS], dtype=np.intp)


def _rest_frames() -> tuple[F64, F64]:
    """Each bone's rest direction (primary) and a second rest axis fixing its roll (secondary).

    The solver measures the same two directions on the landmarks; the bone's world rotation is the
    one taking the rest pair onto the measured pair.
    """
    x, y, z = np.eye(3)
    prim = np.zeros((len(BONES), 3))
    sec = np.zeros((len(BONES), 3))
    for i, name in enumerate(BONES):
        s = -1.0 if name.startswith("Left") else 1.0  # the avatar's left is -X
        if name in ("Hips", "Spine", "Chest", "Neck"):
            prim[i], sec[i] = x, y  # right axis, up axis
        elif name == "Head":
            prim[i], sec[i] = x, z  # ear-to-ear, face forward
        elif name.endswith(("UpperArm", "LowerArm")):
            # bone axis, elbow hinge = bone axis x bend direction (+Z): +Y left, -Y right
            prim[i], sec[i] = s * x, -s * y
        elif name.endswith("Hand") and "Thumb" not in name:
            prim[i], sec[i] = s * x, z  # hand axis, toward the thumb side
        elif name.endswith(("UpperLeg", "LowerLeg")):
            prim[i], sec[i] = -y, x  # bone axis, knee hinge (shin bends toward -Z)
        elif name.endswith("Foot"):
            prim[i], sec[i] = z, x  # heel to toe, knee hinge
        elif "Thumb" in name:
            prim[i] = (s * x + z) / np.sqrt(2.0)  # 45° forward in the palm plane
            sec[i] = -s * y  # hand axis x thumb side (+Z): back of the hand left, palm right
        else:
            prim[i], sec[i] = s * x, z  # fingers along the arm, hinge toward the thumb side
    return prim, sec


REST_PRIMARY, REST_SECONDARY = _rest_frames()


@dataclass(slots=True)
class Rig:
    """One frame's avatar pose, in the conventions of this module's docstring.

    bones: (len(BONES), 4) local unit quaternions (x, y, z, w) in BONES order.
    hips_position: (3,) metres, avatar frame; see solver.py for its origin.
    expressions: (len(EXPRESSIONS),) in [0, 1], VRM 0.x preset names in EXPRESSIONS order.
    head: (yaw, pitch, roll) degrees of the head relative to the camera, Unity Euler order:
        yaw > 0 turns toward the person's right, pitch > 0 looks down, roll > 0 tilts the head
        toward the person's left shoulder.
    confidence: (len(PARTS),) in [0, 1]: how much to trust each part; a consumer may hold a limb
        whose confidence is low instead of following it.
    """

    bones: F64
    hips_position: F64
    expressions: F64
    head: F64
    confidence: F64

    @classmethod
    def rest(cls) -> Rig:
        """T-pose, neutral face, nothing tracked."""
        bones = np.zeros((len(BONES), 4))
        bones[:, 3] = 1.0
        return cls(
            bones, np.zeros(3), np.zeros(len(EXPRESSIONS)), np.zeros(3), np.zeros(len(PARTS))
        )

    def copy(self) -> Rig:
        return Rig(
            self.bones.copy(),
            self.hips_position.copy(),
            self.expressions.copy(),
            self.head.copy(),
            self.confidence.copy(),
        )

    def bone(self, name: str) -> F64:
        return self.bones[BONE_INDEX[name]]

    def expression(self, name: str) -> float:
        return float(self.expressions[EXPRESSION_INDEX[name]])

    def part_confidence(self, name: str) -> float:
        return float(self.confidence[PART_INDEX[name]])

    def bones_dict(self) -> dict[str, F64]:
        return dict(zip(BONES, self.bones, strict=True))

    def expressions_dict(self) -> dict[str, float]:
        return dict(zip(EXPRESSIONS, self.expressions.tolist(), strict=True))

    def confidence_dict(self) -> dict[str, float]:
        return dict(zip(PARTS, self.confidence.tolist(), strict=True))

    def to_json(self) -> dict[str, Any]:
        """Compact JSON-ready dict: quaternions to 5 decimals, expressions/confidence to 3."""
        return {
            "bones": dict(zip(BONES, np.round(self.bones, 5).tolist(), strict=True)),
            "hips": np.round(self.hips_position, 4).tolist(),
            "expressions": dict(
                zip(EXPRESSIONS, np.round(self.expressions, 3).tolist(), strict=True)
            ),
            "head": np.round(self.head, 2).tolist(),
            "confidence": dict(zip(PARTS, np.round(self.confidence, 3).tolist(), strict=True)),
        }

    def to_arrays(self) -> RigArrays:
        """The wire form (holistream.protocol.RigArrays): float32, BONES/EXPRESSIONS/PARTS order."""
        return RigArrays(
            bones=self.bones.astype(np.float32),
            hips=self.hips_position.astype(np.float32),
            head=self.head.astype(np.float32),
            expressions=self.expressions.astype(np.float32),
            confidence=self.confidence.astype(np.float32),
        )

    @classmethod
    def from_arrays(
        cls,
        bones: npt.ArrayLike,
        expressions: npt.ArrayLike,
        confidence: npt.ArrayLike,
        hips: npt.ArrayLike,
        head: npt.ArrayLike,
    ) -> Rig:
        """Inverse of to_arrays, field by field; checks shapes, renormalises."""
        shapes = {
            "bones": (np.asarray(bones), (len(BONES), 4)),
            "expressions": (np.asarray(expressions), (len(EXPRESSIONS),)),
            "confidence": (np.asarray(confidence), (len(PARTS),)),
            "hips": (np.asarray(hips), (3,)),
            "head": (np.asarray(head), (3,)),
        }
        for key, (arr, shape) in shapes.items():
            if arr.shape != shape:
                raise ValueError(f"{key}: expected shape {shape}, got {arr.shape}")
        return cls(
            quat.normalize(shapes["bones"][0]),
            np.nan_to_num(shapes["hips"][0].astype(np.float64)),
            np.clip(np.nan_to_num(shapes["expressions"][0].astype(np.float64)), 0.0, 1.0),
            np.nan_to_num(shapes["head"][0].astype(np.float64)),
            np.clip(np.nan_to_num(shapes["confidence"][0].astype(np.float64)), 0.0, 1.0),
        )


def mirror_rig(rig: Rig) -> Rig:
    """The rig of the user's mirror image: sides swapped, reflected across the sagittal plane."""
    hips = rig.hips_position * (-1.0, 1.0, 1.0)
    head = rig.head * (-1.0, 1.0, -1.0)
    return Rig(
        quat.mirror_x(rig.bones[MIRROR_BONES]),
        hips,
        rig.expressions[MIRROR_EXPRESSIONS].copy(),
        head,
        rig.confidence[MIRROR_PARTS].copy(),
    )
