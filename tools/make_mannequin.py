#!/usr/bin/env python3
"""Write the browser demo's built-in avatar: a small wooden-mannequin VRM, made from code.

    python tools/make_mannequin.py                         # web/assets/mannequin.vrm (VRM 1.0)
    python tools/make_mannequin.py --spec 0 -o /tmp/m0.vrm # the same figure as VRM 0.x

A VRM is a glTF 2.0 binary (.glb) whose JSON carries the avatar's extension: ``VRMC_vrm`` for
VRM 1.0, ``VRM`` for 0.x. This script needs numpy only and writes the same bytes every run.

The figure. 1.72 m tall, standing in the VRM T-pose with every bone's rest rotation the
identity: arms straight out, palms down, fingers along the arm, thumbs 45° forward. Every body
part is a rigid piece hung under its bone (scaled spheres and boxes sharing two unit meshes, a
sphere at each joint, like an artist's mannequin), so there is no skinning. The hands have the
browser demo's hand colours (the person's left pink, right yellow, as in the skeleton view). The
face is one mesh with morph targets for the expressions three-vrm drives: blink, blinkLeft,
blinkRight, aa, ih, ou, ee, oh and lookLeft / lookRight / lookUp / lookDown (expression-type
look-at). Humanoid bones: hips, spine, chest, neck, head, shoulders, arms, hands, legs, feet and
all fingers (VRM 1.0 thumbs: metacarpal / proximal / distal; 0.x: proximal / intermediate /
distal).

Frames. VRM 1.0 models face +Z in glTF's right-handed frame, so the avatar's left is +X. VRM 0.x
models face -Z: the 0.x file is the 1.0 figure turned 180° about +Y (x and z negated), which
three-vrm undoes with VRMUtils.rotateVRM0.
"""

from __future__ import annotations

import argparse
import json
import math
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
Vec = tuple[float, float, float]
Spec = Literal["1.0", "0.x"]

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "web" / "assets" / "mannequin.vrm"

TITLE = "holistream mannequin"
AUTHOR = "holistream"
VERSION = "1.0"

# --- the skeleton (VRM 1.0 frame: +Y up, the avatar faces +Z, its left is +X) --------------------

# (VRM 1.0 bone name, parent, world position at rest in metres), parents first.
_CORE: list[tuple[str, str | None, Vec]] = [
    ("hips", None, (0.0, 0.92, 0.0)),
    ("spine", "hips", (0.0, 1.02, 0.0)),
    ("chest", "spine", (0.0, 1.17, 0.0)),
    ("neck", "chest", (0.0, 1.42, 0.0)),
    ("head", "neck", (0.0, 1.50, 0.0)),
]
HAND_Y = 1.37
# Finger roots relative to the hand (left side), segment lengths, segment radius.
_FINGERS: dict[str, tuple[Vec, tuple[float, float, float, float], float]] = {
    "Index": ((0.085, 0.0, 0.027), (0.040, 0.025, 0.020, 0.0), 0.0095),
    "Middle": ((0.090, 0.0, 0.009), (0.045, 0.028, 0.022, 0.0), 0.0100),
    "Ring": ((0.085, 0.0, -0.009), (0.040, 0.026, 0.020, 0.0), 0.0095),
    "Little": ((0.075, 0.0, -0.026), (0.032, 0.020, 0.018, 0.0), 0.0085),
}
_THUMB_ROOT: Vec = (0.025, -0.008, 0.022)
_THUMB_LENGTHS = (0.035, 0.030, 0.025)
_THUMB_RADIUS = 0.0115
VRM1_THUMB = ("ThumbMetacarpal", "ThumbProximal", "ThumbDistal")
VRM0_THUMB = ("ThumbProximal", "ThumbIntermediate", "ThumbDistal")
FINGER_SEGMENTS = ("Proximal", "Intermediate", "Distal")


def _vec(values: Any) -> Vec:
    x, y, z = (float(v) for v in values)
    return (x, y, z)


def _add(a: Vec, b: Vec, scale: float = 1.0) -> Vec:
    return (a[0] + scale * b[0], a[1] + scale * b[1], a[2] + scale * b[2])


def _skeleton() -> list[tuple[str, str | None, Vec]]:
    """Every bone with its parent and rest position, parents first (VRM 1.0 names)."""
    bones = list(_CORE)
    for side, s in (("left", 1.0), ("right", -1.0)):
        hand: Vec = (s * 0.69, HAND_Y, 0.0)
        bones += [
            (f"{side}Shoulder", "chest", (s * 0.03, HAND_Y, 0.0)),
            (f"{side}UpperArm", f"{side}Shoulder", (s * 0.17, HAND_Y, 0.0)),
            (f"{side}LowerArm", f"{side}UpperArm", (s * 0.44, HAND_Y, 0.0)),
            (f"{side}Hand", f"{side}LowerArm", hand),
        ]
        thumb_dir: Vec = (s / math.sqrt(2.0), 0.0, 1.0 / math.sqrt(2.0))
        at = _add(hand, (s * _THUMB_ROOT[0], _THUMB_ROOT[1], _THUMB_ROOT[2]))
        parent = f"{side}Hand"
        for seg, length in zip(VRM1_THUMB, _THUMB_LENGTHS, strict=True):
            bones.append((f"{side}{seg}", parent, at))
            parent, at = f"{side}{seg}", _add(at, thumb_dir, length)
        for finger, (root, lengths, _) in _FINGERS.items():
            at = _add(hand, (s * root[0], root[1], root[2]))
            parent = f"{side}Hand"
            for seg, length in zip(FINGER_SEGMENTS, lengths, strict=False):
                bones.append((f"{side}{finger}{seg}", parent, at))
                parent, at = f"{side}{finger}{seg}", _add(at, (s, 0.0, 0.0), length)
        bones += [
            (f"{side}UpperLeg", "hips", (s * 0.09, 0.88, 0.0)),
            (f"{side}LowerLeg", f"{side}UpperLeg", (s * 0.09, 0.48, 0.0)),
            (f"{side}Foot", f"{side}LowerLeg", (s * 0.09, 0.08, 0.0)),
        ]
    return bones


# --- colours (sRGB hex as in web/css/app.css; glTF wants linear factors) -------------------------

MATERIALS: dict[str, str] = {
    "body": "#d6c6ab",  # light wood
    "joint": "#8b7355",
    "head": "#e3d5bd",
    "left_hand": "#f472b6",  # --c-left-hand: the person's left hand in the skeleton view
    "right_hand": "#facc15",  # --c-right-hand
    "eyes": "#1e293b",
    "mouth": "#9f1239",
}


def _linear(hex_colour: str) -> list[float]:
    out = []
    for i in (1, 3, 5):
        c = int(hex_colour[i : i + 2], 16) / 255.0
        out.append(round(c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4, 5))
    return [*out, 1.0]


# --- unit shapes ---------------------------------------------------------------------------------


def _unit_sphere(segments: int = 20, rings: int = 14) -> tuple[F32, F32, npt.NDArray[np.uint16]]:
    theta = np.linspace(0.0, math.pi, rings + 1)  # from the top
    phi = np.linspace(0.0, 2.0 * math.pi, segments + 1)
    t, p = np.meshgrid(theta, phi, indexing="ij")
    pos = np.stack([np.sin(t) * np.sin(p), np.cos(t), np.sin(t) * np.cos(p)], -1).reshape(-1, 3)
    idx = []
    row = segments + 1
    for r in range(rings):
        for s in range(segments):
            a, b = r * row + s, (r + 1) * row + s
            idx += [a, b, a + 1, a + 1, b, b + 1]  # counter-clockwise seen from outside
    pos = np.round(pos, 6).astype(np.float32)
    return pos, pos.copy(), np.array(idx, dtype=np.uint16)


def _unit_box() -> tuple[F32, F32, npt.NDArray[np.uint16]]:
    pos, nrm, idx = [], [], []
    for axis in range(3):
        for sign in (1.0, -1.0):
            n = np.zeros(3)
            n[axis] = sign
            u = np.zeros(3)
            u[(axis + 1) % 3] = 1.0
            v = np.cross(n, u)
            base = len(pos)
            for du, dv in ((-1, -1), (1, -1), (1, 1), (-1, 1)):
                pos.append(n + du * u + dv * v)
                nrm.append(n)
            idx += [base, base + 1, base + 2, base, base + 2, base + 3]
    return (
        np.array(pos, dtype=np.float32),
        np.array(nrm, dtype=np.float32),
        np.array(idx, dtype=np.uint16),
    )


def _quat_from_y(direction: Vec) -> list[float]:
    """The rotation taking +Y onto `direction` (unit), as glTF (x, y, z, w)."""
    d = np.asarray(direction, dtype=np.float64)
    d /= np.linalg.norm(d)
    y = np.array([0.0, 1.0, 0.0])
    c = float(np.dot(y, d))
    if c > 1.0 - 1e-9:
        return [0.0, 0.0, 0.0, 1.0]
    if c < -1.0 + 1e-9:
        return [1.0, 0.0, 0.0, 0.0]
    axis = np.cross(y, d)
    axis /= np.linalg.norm(axis)
    half = math.acos(c) / 2.0
    return [*(axis * math.sin(half)).tolist(), math.cos(half)]


# --- the body: rigid pieces under their bones ----------------------------------------------------


@dataclass
class Piece:
    bone: str
    shape: Literal["sphere", "box"]
    material: str
    centre: Vec  # world, rest pose
    scale: Vec
    rotation: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0, 1.0])


def _segment(
    bone: str, a: Vec, b: Vec, radius: float, material: str, overlap: float = 1.0
) -> Piece:
    """An ellipsoid from joint a to joint b."""
    d = _vec(np.subtract(b, a))
    length = math.hypot(*d)
    centre = _vec(np.add(a, b) / 2.0)
    scale = (radius, overlap * length / 2.0, radius)
    return Piece(bone, "sphere", material, centre, scale, _quat_from_y(d))


def _pieces(pos: dict[str, Vec]) -> list[Piece]:
    out = [
        Piece("hips", "sphere", "body", _add(pos["hips"], (0, 0.0, 0)), (0.155, 0.10, 0.10)),
        Piece("spine", "sphere", "body", _add(pos["spine"], (0, 0.075, 0)), (0.125, 0.11, 0.085)),
        Piece("chest", "sphere", "body", _add(pos["chest"], (0, 0.12, 0)), (0.175, 0.15, 0.105)),
        Piece("neck", "sphere", "body", _add(pos["neck"], (0, 0.04, 0)), (0.042, 0.065, 0.042)),
        Piece("head", "sphere", "head", _add(pos["head"], HEAD_CENTRE), HEAD_RADII),
    ]
    for side in ("left", "right"):
        hand_mat = f"{side}_hand"
        chain = [f"{side}{b}" for b in ("UpperArm", "LowerArm", "Hand")]
        out.append(Piece(f"{side}Shoulder", "sphere", "joint", pos[chain[0]], (0.05,) * 3))
        out.append(_segment(chain[0], pos[chain[0]], pos[chain[1]], 0.046, "body", 0.86))
        out.append(Piece(chain[1], "sphere", "joint", pos[chain[1]], (0.038,) * 3))
        out.append(_segment(chain[1], pos[chain[1]], pos[chain[2]], 0.038, "body", 0.86))
        out.append(Piece(chain[2], "sphere", "joint", pos[chain[2]], (0.03,) * 3))
        s = 1.0 if side == "left" else -1.0
        palm = _add(pos[chain[2]], (s * 0.05, 0.0, 0.0))
        out.append(Piece(chain[2], "box", hand_mat, palm, (0.042, 0.013, 0.038)))
        thumb = [f"{side}{b}" for b in VRM1_THUMB]
        tip = _add(pos[thumb[2]], (s / math.sqrt(2), 0.0, 1 / math.sqrt(2)), _THUMB_LENGTHS[2])
        for a, b, bone in zip(thumb, [*thumb[1:], None], thumb, strict=True):
            end = pos[b] if b else tip
            out.append(_segment(bone, pos[a], end, _THUMB_RADIUS, hand_mat, 1.15))
        for finger, (_, lengths, radius) in _FINGERS.items():
            names = [f"{side}{finger}{seg}" for seg in FINGER_SEGMENTS]
            tip = _add(pos[names[2]], (s, 0.0, 0.0), lengths[2])
            for a, b in zip(names, [*names[1:], None], strict=True):
                end = pos[b] if b else tip
                out.append(_segment(a, pos[a], end, radius, hand_mat, 1.15))
        legs = [f"{side}{b}" for b in ("UpperLeg", "LowerLeg", "Foot")]
        out.append(Piece(legs[0], "sphere", "joint", pos[legs[0]], (0.07,) * 3))
        out.append(_segment(legs[0], pos[legs[0]], pos[legs[1]], 0.068, "body", 0.9))
        out.append(Piece(legs[1], "sphere", "joint", pos[legs[1]], (0.052,) * 3))
        out.append(_segment(legs[1], pos[legs[1]], pos[legs[2]], 0.052, "body", 0.9))
        out.append(Piece(legs[2], "sphere", "joint", pos[legs[2]], (0.042,) * 3))
        foot = _add(pos[legs[2]], (0.0, -0.045, 0.06))
        out.append(Piece(legs[2], "box", "body", foot, (0.045, 0.032, 0.11)))
    return out


# --- the face: eyes and mouth with morph targets -------------------------------------------------

HEAD_CENTRE: Vec = (0.0, 0.10, 0.0)  # relative to the head bone
HEAD_RADII: Vec = (0.085, 0.11, 0.095)
EYE_X, EYE_Y = 0.034, 0.115  # relative to the head bone
EYE_RADII = (0.011, 0.014)
MOUTH_Y = 0.05
MOUTH_RADII = (0.022, 0.0045)
MORPHS = (
    "blinkLeft", "blinkRight", "aa", "ih", "ou", "ee", "oh",
    "lookLeft", "lookRight", "lookUp", "lookDown",
)  # fmt: skip
# Mouth shapes: (width factor, height factor) of the mouth ellipse.
MOUTH_SHAPES = {
    "aa": (0.9, 4.6), "ih": (1.3, 1.8), "ou": (0.55, 2.4), "ee": (1.3, 2.8), "oh": (0.8, 3.8),
}  # fmt: skip
LOOK_SHIFT = {"lookLeft": (0.007, 0.0), "lookRight": (-0.007, 0.0), "lookUp": (0.0, 0.006),
              "lookDown": (0.0, -0.006)}  # fmt: skip


def _surface_z(x: float, y: float) -> float:
    """z of the head ellipsoid's front at (x, y) relative to the head bone, plus a hair."""
    cx, cy, cz = HEAD_CENTRE
    rx, ry, rz = HEAD_RADII
    inside = 1.0 - ((x - cx) / rx) ** 2 - ((y - cy) / ry) ** 2
    return cz + rz * math.sqrt(max(inside, 0.0)) + 0.0015


def _disc(cx: float, cy: float, rx: float, ry: float, n: int = 20) -> tuple[F32, list[int]]:
    """A flat elliptical fan facing +Z, standing on the head's surface at its centre."""
    z = _surface_z(cx, cy)
    pts = [(cx, cy, z)]
    for k in range(n):
        a = 2.0 * math.pi * k / n
        x, y = cx + rx * math.cos(a), cy + ry * math.sin(a)
        pts.append((x, y, _surface_z(x, y)))
    tris = []
    for k in range(n):
        tris += [0, 1 + k, 1 + (k + 1) % n]
    return np.array(pts, dtype=np.float32), tris


@dataclass
class FaceMesh:
    eyes: F32
    eye_index: npt.NDArray[np.uint16]
    mouth: F32
    mouth_index: npt.NDArray[np.uint16]
    eye_targets: list[F32]  # POSITION deltas per morph, MORPHS order
    mouth_targets: list[F32]


def _face() -> FaceMesh:
    left, tri = _disc(EYE_X, EYE_Y, *EYE_RADII)
    right, _ = _disc(-EYE_X, EYE_Y, *EYE_RADII)
    eyes = np.concatenate([left, right])
    eye_index = np.array(tri + [i + len(left) for i in tri], dtype=np.uint16)
    mouth, mouth_tri = _disc(0.0, MOUTH_Y, *MOUTH_RADII)
    is_left = np.arange(len(eyes)) < len(left)

    def moved(points: F32, dx: F32, dy: F32) -> F32:
        out = points.copy()
        out[:, 0] += dx
        out[:, 1] += dy
        out[:, 2] = [_surface_z(float(x), float(y)) for x, y in out[:, :2]]
        return (out - points).astype(np.float32)

    zeros_eyes = np.zeros_like(eyes)
    zeros_mouth = np.zeros_like(mouth)
    eye_targets, mouth_targets = [], []
    for name in MORPHS:
        eye_delta, mouth_delta = zeros_eyes, zeros_mouth
        if name in ("blinkLeft", "blinkRight"):
            side = is_left if name == "blinkLeft" else ~is_left
            # Lids close toward a line a little below the eye's centre.
            squash = np.where(side, (EYE_Y - 0.004) + (eyes[:, 1] - EYE_Y) * 0.12 - eyes[:, 1], 0)
            eye_delta = moved(eyes, np.zeros(len(eyes), np.float32), squash.astype(np.float32))
        elif name in MOUTH_SHAPES:
            wx, wy = MOUTH_SHAPES[name]
            dx = (mouth[:, 0] - 0.0) * (wx - 1.0)
            dy = (mouth[:, 1] - MOUTH_Y) * (wy - 1.0) - 0.004 * (wy - 1.0) / 3.6
            mouth_delta = moved(mouth, dx.astype(np.float32), dy.astype(np.float32))
        else:
            sx, sy = LOOK_SHIFT[name]
            n = len(eyes)
            eye_delta = moved(eyes, np.full(n, sx, np.float32), np.full(n, sy, np.float32))
        eye_targets.append(np.round(eye_delta, 6).astype(np.float32))
        mouth_targets.append(np.round(mouth_delta, 6).astype(np.float32))
    return FaceMesh(
        np.round(eyes, 6).astype(np.float32), eye_index,
        np.round(mouth, 6).astype(np.float32), np.array(mouth_tri, dtype=np.uint16),
        eye_targets, mouth_targets,
    )  # fmt: skip


# --- glTF binary writer --------------------------------------------------------------------------

FLOAT, USHORT = 5126, 5123
ARRAY_BUFFER, ELEMENT_ARRAY_BUFFER = 34962, 34963


class GltfBuilder:
    """Buffer views and accessors in one binary chunk, JSON alongside."""

    def __init__(self) -> None:
        self.bin = bytearray()
        self.json: dict[str, Any] = {"bufferViews": [], "accessors": []}

    def _view(self, data: bytes, target: int) -> int:
        while len(self.bin) % 4:
            self.bin.append(0)
        views = self.json["bufferViews"]
        views.append(
            {"buffer": 0, "byteOffset": len(self.bin), "byteLength": len(data), "target": target}
        )
        self.bin += data
        return len(views) - 1

    def vec3(self, values: F32, *, bounds: bool = True) -> int:
        arr = np.ascontiguousarray(values, dtype="<f4")
        accessor: dict[str, Any] = {
            "bufferView": self._view(arr.tobytes(), ARRAY_BUFFER),
            "componentType": FLOAT,
            "count": len(arr),
            "type": "VEC3",
        }
        if bounds:
            accessor["min"] = [float(v) for v in arr.min(0)]
            accessor["max"] = [float(v) for v in arr.max(0)]
        self.json["accessors"].append(accessor)
        return len(self.json["accessors"]) - 1

    def indices(self, values: npt.NDArray[np.uint16]) -> int:
        arr = np.ascontiguousarray(values, dtype="<u2")
        self.json["accessors"].append(
            {
                "bufferView": self._view(arr.tobytes(), ELEMENT_ARRAY_BUFFER),
                "componentType": USHORT,
                "count": len(arr),
                "type": "SCALAR",
            }
        )
        return len(self.json["accessors"]) - 1

    def glb(self) -> bytes:
        while len(self.bin) % 4:
            self.bin.append(0)
        self.json["buffers"] = [{"byteLength": len(self.bin)}]
        text = json.dumps(self.json, separators=(",", ":"), ensure_ascii=False).encode()
        text += b" " * (-len(text) % 4)
        total = 12 + 8 + len(text) + 8 + len(self.bin)
        return b"".join(
            [
                struct.pack("<4sII", b"glTF", 2, total),
                struct.pack("<I4s", len(text), b"JSON"),
                text,
                struct.pack("<I4s", len(self.bin), b"BIN\x00"),
                bytes(self.bin),
            ]
        )


def _turn(v: Vec | list[float], spec: Spec) -> list[float]:
    """A position or direction of the 1.0 figure in the file's frame (0.x: turned 180° about Y)."""
    x, y, z = v
    return _r([-x, y, -z] if spec == "0.x" else [x, y, z])


def _turn_quat(q: list[float], spec: Spec) -> list[float]:
    x, y, z, w = q
    return _r([-x, y, -z, w] if spec == "0.x" else [x, y, z, w])


def _r(values: list[float]) -> list[float]:
    return [round(float(v), 6) + 0.0 for v in values]  # + 0.0: no "-0.0" in the JSON


def _turned(arr: F32, spec: Spec) -> F32:
    return (arr * np.array([-1.0, 1.0, -1.0], np.float32)) if spec == "0.x" else arr


def vrm0_bone_name(name: str) -> str:
    """VRM 1.0 humanoid bone name -> VRM 0.x (only the thumbs differ)."""
    for side in ("left", "right"):
        for new, old in zip(VRM1_THUMB, VRM0_THUMB, strict=True):
            if name == side + new:
                return side + old
    return name


def build_vrm(spec: Spec = "1.0") -> bytes:
    """The mannequin as a VRM file (glb bytes)."""
    skeleton = _skeleton()
    pos = {name: p for name, _, p in skeleton}
    g = GltfBuilder()
    nodes: list[dict[str, Any]] = [{"name": "Mannequin", "children": []}]
    bone_node: dict[str, int] = {}
    for name, parent, p in skeleton:
        local = p if parent is None else _vec(np.subtract(p, pos[parent]))
        bone_node[name] = len(nodes)
        nodes.append({"name": name, "translation": _turn(local, spec)})
        owner = nodes[bone_node[parent]] if parent else nodes[0]
        owner.setdefault("children", []).append(bone_node[name])

    materials = [
        {
            "name": name,
            "pbrMetallicRoughness": {
                "baseColorFactor": _linear(colour),
                "metallicFactor": 0.0,
                "roughnessFactor": 0.55 if name in ("eyes", "mouth") else 0.7,
            },
        }
        for name, colour in MATERIALS.items()
    ]
    material_index = {m["name"]: i for i, m in enumerate(materials)}

    # Two unit shapes; a mesh per (shape, material) pair shares their accessors.
    shapes = {}
    for shape, (p, n, i) in (("sphere", _unit_sphere()), ("box", _unit_box())):
        shapes[shape] = {"POSITION": g.vec3(p), "NORMAL": g.vec3(n, bounds=False)}, g.indices(i)
    meshes: list[dict[str, Any]] = []
    mesh_of: dict[tuple[str, str], int] = {}
    for piece in _pieces(pos):
        key = (piece.shape, piece.material)
        if key not in mesh_of:
            attributes, indices = shapes[piece.shape]
            mesh_of[key] = len(meshes)
            primitive = {
                "attributes": attributes,
                "indices": indices,
                "material": material_index[piece.material],
            }
            meshes.append({"name": f"{piece.material}_{piece.shape}", "primitives": [primitive]})
        node = {
            "name": f"{piece.bone}_{piece.material}_{piece.shape}",
            "mesh": mesh_of[key],
            "translation": _turn(_vec(np.subtract(piece.centre, pos[piece.bone])), spec),
            "rotation": _turn_quat(piece.rotation, spec),
            "scale": _r(list(piece.scale)),
        }
        if node["rotation"] == [0.0, 0.0, 0.0, 1.0]:
            del node["rotation"]
        nodes.append(node)
        nodes[bone_node[piece.bone]].setdefault("children", []).append(len(nodes) - 1)

    face = _face()
    prims = []
    for verts, index, targets, material in (
        (face.eyes, face.eye_index, face.eye_targets, "eyes"),
        (face.mouth, face.mouth_index, face.mouth_targets, "mouth"),
    ):
        normals = np.tile(np.array([0.0, 0.0, 1.0], np.float32), (len(verts), 1))
        prims.append(
            {
                "attributes": {
                    "POSITION": g.vec3(_turned(verts, spec)),
                    "NORMAL": g.vec3(_turned(normals, spec), bounds=False),
                },
                "indices": g.indices(index),
                "material": material_index[material],
                "targets": [{"POSITION": g.vec3(_turned(t, spec))} for t in targets],
            }
        )
    face_mesh = len(meshes)
    meshes.append(
        {
            "name": "face",
            "primitives": prims,
            "weights": [0.0] * len(MORPHS),
            "extras": {"targetNames": list(MORPHS)},
        }
    )
    face_node = len(nodes)
    nodes.append({"name": "face", "mesh": face_mesh})
    nodes[bone_node["head"]].setdefault("children", []).append(face_node)

    g.json.update(
        {
            "asset": {"version": "2.0", "generator": "holistream tools/make_mannequin.py"},
            "scene": 0,
            "scenes": [{"name": "Scene", "nodes": [0]}],
            "nodes": nodes,
            "meshes": meshes,
            "materials": materials,
        }
    )
    if spec == "1.0":
        g.json["extensionsUsed"] = ["VRMC_vrm"]
        g.json["extensions"] = {"VRMC_vrm": _vrm1(bone_node, face_node)}
    else:
        g.json["extensionsUsed"] = ["VRM"]
        g.json["extensions"] = {"VRM": _vrm0(bone_node, face_mesh, [m["name"] for m in materials])}
    return g.glb()


def _vrm1(bone_node: dict[str, int], face_node: int) -> dict[str, Any]:
    def binds(*morphs: str) -> dict[str, Any]:
        return {
            "morphTargetBinds": [
                {"node": face_node, "index": MORPHS.index(m), "weight": 1.0} for m in morphs
            ],
            "isBinary": False,
            "overrideBlink": "none",
            "overrideLookAt": "none",
            "overrideMouth": "none",
        }

    preset = {"blink": binds("blinkLeft", "blinkRight")}
    preset |= {name: binds(name) for name in MORPHS}
    look_range = {"inputMaxValue": 90.0, "outputScale": 1.0}
    return {
        "specVersion": "1.0",
        "meta": {
            "name": TITLE,
            "version": VERSION,
            "authors": [AUTHOR],
            "copyrightInformation": "Generated by holistream's tools/make_mannequin.py",
            "licenseUrl": "https://vrm.dev/licenses/1.0/",
            "avatarPermission": "everyone",
            "allowExcessivelyViolentUsage": False,
            "allowExcessivelySexualUsage": False,
            "commercialUsage": "corporation",
            "allowPoliticalOrReligiousUsage": True,
            "allowAntisocialOrHateUsage": False,
            "creditNotation": "unnecessary",
            "allowRedistribution": True,
            "modification": "allowModificationRedistribution",
        },
        "humanoid": {"humanBones": {name: {"node": node} for name, node in bone_node.items()}},
        "lookAt": {
            "type": "expression",
            "offsetFromHeadBone": [0.0, EYE_Y, 0.08],
            "rangeMapHorizontalInner": look_range,
            "rangeMapHorizontalOuter": look_range,
            "rangeMapVerticalDown": look_range,
            "rangeMapVerticalUp": look_range,
        },
        "expressions": {"preset": preset},
    }


# VRM 0.x blend shape presets for the morphs (three-vrm maps them to the 1.0 names).
_V0_PRESETS = {
    "blinkLeft": "blink_l", "blinkRight": "blink_r", "aa": "a", "ih": "i", "ou": "u", "ee": "e",
    "oh": "o", "lookLeft": "lookleft", "lookRight": "lookright", "lookUp": "lookup",
    "lookDown": "lookdown",
}  # fmt: skip


def _vrm0(bone_node: dict[str, int], face_mesh: int, material_names: list[str]) -> dict[str, Any]:
    def group(name: str, preset: str, *morphs: str) -> dict[str, Any]:
        binds = [{"mesh": face_mesh, "index": MORPHS.index(m), "weight": 100} for m in morphs]
        return {"name": name, "presetName": preset, "binds": binds, "materialValues": [],
                "isBinary": False}  # fmt: skip

    groups = [group("Blink", "blink", "blinkLeft", "blinkRight")]
    groups += [group(m, _V0_PRESETS[m], m) for m in MORPHS]
    curve = {"curve": [0, 0, 0, 1, 1, 1, 1, 0], "xRange": 90, "yRange": 1}
    return {
        "exporterVersion": "holistream-make_mannequin-1.0",
        "specVersion": "0.0",
        "meta": {
            "title": TITLE,
            "version": VERSION,
            "author": AUTHOR,
            "contactInformation": "",
            "reference": "",
            "texture": -1,
            "allowedUserName": "Everyone",
            "violentUssageName": "Disallow",
            "sexualUssageName": "Disallow",
            "commercialUssageName": "Allow",
            "otherPermissionUrl": "",
            "licenseName": "CC0",
            "otherLicenseUrl": "",
        },
        "humanoid": {
            "humanBones": [
                {"bone": vrm0_bone_name(name), "node": node, "useDefaultValues": True}
                for name, node in bone_node.items()
            ],
            "armStretch": 0.05,
            "legStretch": 0.05,
            "upperArmTwist": 0.5,
            "lowerArmTwist": 0.5,
            "upperLegTwist": 0.5,
            "lowerLegTwist": 0.5,
            "feetSpacing": 0,
            "hasTranslationDoF": False,
        },
        "firstPerson": {
            "firstPersonBone": bone_node["head"],
            "firstPersonBoneOffset": {"x": 0, "y": EYE_Y, "z": -0.08},
            "meshAnnotations": [],
            "lookAtTypeName": "BlendShape",
            "lookAtHorizontalInner": curve,
            "lookAtHorizontalOuter": curve,
            "lookAtVerticalDown": curve,
            "lookAtVerticalUp": curve,
        },
        "blendShapeMaster": {"blendShapeGroups": groups},
        "secondaryAnimation": {"boneGroups": [], "colliderGroups": []},
        "materialProperties": [
            {
                "name": name,
                "shader": "VRM_USE_GLTFSHADER",
                "renderQueue": 2000,
                "floatProperties": {},
                "vectorProperties": {},
                "textureProperties": {},
                "keywordMap": {},
                "tagMap": {},
            }
            for name in material_names
        ],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--out", type=Path, default=DEFAULT_OUT, help="where to write")
    parser.add_argument(
        "--spec", choices=("1", "1.0", "0", "0.x"), default="1.0", help="VRM version (1.0 or 0.x)"
    )
    args = parser.parse_args(argv)
    spec: Spec = "1.0" if args.spec.startswith("1") else "0.x"
    data = build_vrm(spec)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(data)
    print(f"wrote {args.out} (VRM {spec}, {len(data) / 1024:.1f} KiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
