"""Landmarks of one frame -> Rig (bone rotations, hips, expressions, head angles, confidence).

Conventions are skeleton.py's: Unity humanoid frame (left-handed, +Y up, avatar faces +Z, +X is its
right), VRM T-pose rest, local unit quaternions (x, y, z, w).

Input frames. MediaPipe's pose/hand world landmarks and its pixel-scaled image landmarks share the
camera's axes: x image-right, y image-down, z away from the camera (smaller z = nearer; MediaPipe
Pose docs). A person facing the camera faces -z and, in a non-mirrored image, has their own left
at +x. Negating all three axes therefore gives the avatar frame directly: up = -y, forward (toward
the camera) = -z, the person's right = -x. It is a reflection (det -1), which is exactly the switch
from right-handed camera axes to left-handed Unity axes.

Method. Every tracked bone gets a primary direction (the bone's axis: shoulder->elbow, wrist->middle
knuckle, ...) and a secondary one fixing its roll (elbow/knee hinge, hand side axis, ...); its world
rotation takes the rest pair (skeleton.REST_PRIMARY/REST_SECONDARY) onto the measured pair. All
bones of a frame go through that in one numpy batch; locals are parent^-1 * child. Then:
* Hips keep an upright secondary (world up), so leaning goes to Spine and Chest, which split the
  hips->shoulders rotation half and half; Neck and Head split chest->head the same way. Hips
  that are not visible (seated, close-up: MediaPipe guesses them; see hips_hidden) stay at
  rest, and the torso's lean measured against those guessed hips is damped to hidden_lean of
  itself (the shoulders' own tilt and turn, which are seen, stay whole).
* Nearly straight elbows/knees have no measurable hinge; the hinge then blends toward the rest
  hinge carried along by the shortest-arc swing, so the limb does not spin on noise.
* The hand's twist about the forearm axis (pronation) moves into LowerArm, where it anatomically
  happens; the hand's world rotation is unchanged.
* Head: from the face mesh when present (face.py), else from the pose's ears and eyes.
* Legs with visibility under leg_min_visibility stay at rest (seated / out-of-frame legs).
Untracked bones stay at rest (identity local rotation).

hips_position: the hip centre in metres, avatar axes, relative to the point on the camera's optical
axis ref_depth metres away; depth comes from the metric-to-pixel torso size ratio and an assumed
horizontal field of view (hfov_deg). x > 0 when the person moves to their right, y up, z toward
the camera. Zero when pose or pose_world is missing. When the hips are not visible the shoulders
are measured instead (their centre, HIDDEN_HIPS_DROP metres above the hips, and their width for
the scale): MediaPipe's guessed hips wander. A session reports it relative to its neutral
(server/rig/session.py), so the reference point only matters to the solver alone.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from holistream.landmarks import Landmarks
from holistream.rig import quat
from holistream.rig.quat import clean, cross, frames, swing_apply, unit
from holistream.rig.skeleton import (
    BONE_INDEX,
    BONES,
    EXPRESSIONS,
    PARENT_INDEX,
    PART_INDEX,
    PARTS,
    REST_PRIMARY,
    REST_SECONDARY,
    SEGMENTS,
    Rig,
)
from server.rig import face as face_mod
from server.rig import hands

F64 = npt.NDArray[np.float64]

B = BONE_INDEX
N = len(BONES)
UP = np.array([0.0, 1.0, 0.0])
# Pose landmark indices (MediaPipe Pose topology).
L_EYE, R_EYE, L_EAR, R_EAR = 2, 5, 7, 8
L_SH, R_SH, L_EL, R_EL, L_WR, R_WR = 11, 12, 13, 14, 15, 16
L_HIP, R_HIP, L_KNEE, R_KNEE, L_ANK, R_ANK = 23, 24, 25, 26, 27, 28
L_HEEL, R_HEEL, L_TOE, R_TOE = 29, 30, 31, 32
# (root, middle, end joint, upper bone, lower bone) of the 4 limbs, solved together.
LIMBS = (
    (L_SH, L_EL, L_WR, "LeftUpperArm", "LeftLowerArm"),
    (R_SH, R_EL, R_WR, "RightUpperArm", "RightLowerArm"),
    (L_HIP, L_KNEE, L_ANK, "LeftUpperLeg", "LeftLowerLeg"),
    (R_HIP, R_KNEE, R_ANK, "RightUpperLeg", "RightLowerLeg"),
)
_LIMB_PTS = np.array([limb[:3] for limb in LIMBS])
L_PINKY, R_PINKY, L_INDEX, R_INDEX = 17, 18, 19, 20


def _weights(*terms: dict[int, float]) -> F64:
    """Rows of pose-point weights: each body direction is a fixed linear combination of points."""
    out = np.zeros((len(terms), 33))
    for r, t in enumerate(terms):
        for i, wt in t.items():
            out[r, i] += wt
    return out


def _diff(a: int, b: int) -> dict[int, float]:
    return {a: 1.0, b: -1.0}


# Body rows solved from the pose, and their primary / secondary directions (secondaries of the
# hips and of the hinged bones are filled in at solve time).
_BODY_ROWS = np.array(
    [B[n] for n in ("Hips", "Chest", "Head")]
    + [B[n] for n in ("LeftUpperArm", "RightUpperArm", "LeftUpperLeg", "RightUpperLeg")]
    + [B[n] for n in ("LeftLowerArm", "RightLowerArm", "LeftLowerLeg", "RightLowerLeg")]
    + [B[n] for n in ("LeftFoot", "RightFoot", "LeftHand", "RightHand")]
)
_BODY_PRIM = _weights(
    _diff(R_HIP, L_HIP),
    _diff(R_SH, L_SH),
    _diff(R_EAR, L_EAR),
    *(_diff(b, a) for a, b, *_ in LIMBS),
    *(_diff(c, b) for _a, b, c, *_ in LIMBS),
    _diff(L_TOE, L_HEEL),
    _diff(R_TOE, R_HEEL),
    {L_INDEX: 0.5, L_PINKY: 0.5, L_WR: -1.0},
    {R_INDEX: 0.5, R_PINKY: 0.5, R_WR: -1.0},
)
_BODY_SEC = _weights(
    {},
    {L_SH: 0.5, R_SH: 0.5, L_HIP: -0.5, R_HIP: -0.5},
    {L_EYE: 0.5, R_EYE: 0.5, L_EAR: -0.5, R_EAR: -0.5},
    *({} for _ in range(10)),
    _diff(L_INDEX, L_PINKY),
    _diff(R_INDEX, R_PINKY),
)
_LIMB_UPPER = np.array([B[limb[3]] for limb in LIMBS])
# Hinge blending: sin(elbow angle) below STRAIGHT_LO uses the swing-carried rest hinge only.
STRAIGHT_LO, STRAIGHT_HI = 0.08, 0.30
HIDDEN_HIPS_DROP = 0.5  # metres from the shoulders' centre down to the hips, when those are hidden
HEAD = B["Head"]
# Per side: the Hand row, then the 15 finger rows in hands.FINGER_JOINTS order.
HAND_ROWS = {
    side: np.array(
        [B[f"{side.capitalize()}Hand"]]
        + [B[f"{side.capitalize()}{f}{s}"] for f in hands.FINGER_JOINTS for s in SEGMENTS]
    )
    for side in ("left", "right")
}
# (hand row, forearm row, forearm axis at rest) for moving pronation into the forearm.
_TWIST_ROWS = [
    (B[s + "Hand"], B[s + "LowerArm"], tuple(REST_PRIMARY[B[s + "Hand"]].tolist()))
    for s in ("Left", "Right")
]
# (first half, second half, parent of the first): Spine/Chest split Hips->Chest, Neck/Head split
# Chest->Head; the second bone's world rotation is the measured one.
_SPLITS = [(B["Spine"], B["Chest"], B["Hips"]), (B["Neck"], B["Head"], B["Chest"])]
_CONF_BODY = PART_INDEX["body"]
_CONF_LIMBS = np.array([PART_INDEX[p] for p in ("left_arm", "right_arm", "left_leg", "right_leg")])
_ARANGE = np.arange(N)


def _depth(i: int) -> int:
    return 0 if PARENT_INDEX[i] == i else 1 + _depth(int(PARENT_INDEX[i]))


_JUMPS = max(1, math.ceil(math.log2(max(_depth(i) for i in range(N)))))


REST_FRAMES, _ = frames(REST_PRIMARY, REST_SECONDARY)
REST_FRAMES_T = np.swapaxes(REST_FRAMES, -1, -2)


class RigSolver:
    """Stateless per-frame solver; one instance can serve every session.

    hfov_deg: assumed horizontal field of view of the camera, for hips depth.
    ref_depth: distance (m) in front of the camera that maps to hips z = 0.
    leg_min_visibility: legs whose hip/knee/ankle visibility is below this stay at rest.
    forearm_twist: share of the hand's twist about the forearm moved into LowerArm (0..1).
    hidden_lean: share of the measured torso lean kept when the hips are not visible (0..1).
    """

    def __init__(
        self,
        *,
        hfov_deg: float = 60.0,
        ref_depth: float = 2.0,
        leg_min_visibility: float = 0.5,
        forearm_twist: float = 1.0,
        hidden_lean: float = 0.35,
    ) -> None:
        self.focal = 0.5 / math.tan(math.radians(hfov_deg) / 2.0)  # in image widths
        self.ref_depth = ref_depth
        self.leg_min_visibility = leg_min_visibility
        self.forearm_twist = forearm_twist
        self.hidden_lean = hidden_lean

    def solve(self, lm: Landmarks) -> Rig:
        """One frame's rig."""
        return self.twist_forearms(self.solve_untwisted(lm))

    def twist_forearms(self, rig: Rig) -> Rig:
        """Moves each hand's twist about its forearm into LowerArm (in place; returns rig)."""
        self._forearm_twist(rig.bones, rig.confidence)
        return rig

    def solve_untwisted(self, lm: Landmarks) -> Rig:
        """The rig before twist_forearms: each Hand relative to an untwisted forearm (what a
        stateful stage holds or blends, so the forearm follows the hand it is shown with)."""
        prim = REST_PRIMARY.copy()
        sec = REST_SECONDARY.copy()
        have = np.zeros(N, dtype=bool)
        conf = np.zeros(len(PARTS))
        expressions = np.zeros(len(EXPRESSIONS))
        head = np.zeros(3)

        pts, vis = _pose_points(lm)
        if pts is not None:
            legs_ok = self._body(pts, vis, prim, sec, have)
            conf[_CONF_BODY] = vis[[L_SH, R_SH]].mean()
            conf[_CONF_LIMBS] = vis[_LIMB_PTS].min(-1) * np.array([1.0, 1.0, *legs_ok])

        for side in ("left", "right"):
            hp = hands.hand_points(lm, side)
            if hp is None:
                continue
            rows = HAND_ROWS[side]
            prim[rows[0]], sec[rows[0]] = hands.hand_axes(hp)
            prim[rows[1:]], sec[rows[1:]] = hands.finger_vectors(hp)
            have[rows] = True
            conf[PART_INDEX[f"{side}_hand"]] = 1.0

        world = quat.identity(N)
        idx = np.flatnonzero(have)
        if idx.size:
            cur, ok = frames(prim[idx], sec[idx])
            world[idx] = quat.from_matrix(cur @ REST_FRAMES_T[idx])
            have[idx[~ok]] = False
            for side in ("left", "right"):  # a degenerate hand is no hand
                if not have[HAND_ROWS[side][0]]:
                    conf[PART_INDEX[f"{side}_hand"]] = 0.0

        face = lm.get("face")
        fr = face_mod.solve_face(face, lm.width, lm.height) if face is not None else None
        if fr is not None:
            world[HEAD] = fr.rotation
            have[HEAD] = True
            expressions = fr.expressions
            head = fr.head
            conf[PART_INDEX["face"]] = fr.confidence
        elif have[HEAD]:
            head = np.array(quat.euler1(tuple(world[HEAD].tolist())))

        # Untracked bones take their nearest tracked ancestor's world rotation (identity local):
        # pointer jumping up the parent chain instead of a Python loop over bones.
        world[~have] = quat.IDENTITY
        src = np.where(have, _ARANGE, PARENT_INDEX)
        for _ in range(_JUMPS):
            src = src[src]
        world = world[src]
        local = quat.mul(quat.conj(world[PARENT_INDEX]), world)
        local[0] = world[0]
        # Spine and Chest share hips->chest, Neck and Head share chest->head, half each.
        w = world.tolist()
        for a, b, parent in _SPLITS:
            pa = w[parent]
            rel = quat.mul1((-pa[0], -pa[1], -pa[2], pa[3]), tuple(w[b]))
            local[a] = local[b] = quat.power1(rel, 0.5)

        return Rig(
            quat.normalize(local),
            self._hips_position(lm, pts, vis),
            expressions,
            head,  # finite: every input went through quat.clean
            np.minimum(np.maximum(conf, 0.0), 1.0),
        )

    def _body(
        self, pts: F64, vis: F64, prim: F64, sec: F64, have: npt.NDArray[np.bool_]
    ) -> npt.NDArray[np.bool_]:
        """Fill the body rows of prim/sec/have; returns which legs (left, right) were solved."""
        p = _BODY_PRIM @ pts
        s = _BODY_SEC @ pts
        s[0] = UP
        if self.hips_hidden(vis):
            # Hidden hips (seated, close-up) are guesses: the hips stay at rest, and the lean
            # measured against them is damped toward upright.
            p[0] = REST_PRIMARY[0]
            up = unit(s[1])
            s[1] = unit(UP + self.hidden_lean * (up - UP))

        torso, _ = frames(p[:2], s[:2])  # world frames of Hips and Chest
        upper, lower = p[3:7], p[7:11]  # left arm, right arm, left leg, right leg
        hinge = cross(upper, lower)
        sin_bend = np.sqrt(np.add.reduce(hinge * hinge, -1)) / np.maximum(
            np.sqrt(np.add.reduce(upper * upper, -1) * np.add.reduce(lower * lower, -1)), 1e-12
        )
        parent = torso[[1, 1, 0, 0]]  # arms hang off the chest, legs off the hips
        rest_axis = (parent @ REST_PRIMARY[_LIMB_UPPER][:, :, None])[:, :, 0]
        rest_hinge = (parent @ REST_SECONDARY[_LIMB_UPPER][:, :, None])[:, :, 0]
        carried = swing_apply(unit(rest_axis), unit(upper), rest_hinge)
        w = np.minimum(np.maximum((sin_bend - STRAIGHT_LO) / (STRAIGHT_HI - STRAIGHT_LO), 0.0), 1.0)
        w = (w * w * (3.0 - 2.0 * w))[:, None]
        h = w * unit(hinge) + (1.0 - w) * unit(carried)
        s[3:7] = h
        s[7:11] = h
        s[11:13] = h[2:]

        thr = self.leg_min_visibility
        legs_ok = vis[_LIMB_PTS[2:]].min(-1) >= thr
        feet_ok = legs_ok & (vis[[[L_HEEL, L_TOE], [R_HEEL, R_TOE]]].min(-1) >= thr)
        use = np.ones(len(_BODY_ROWS), dtype=bool)
        use[[5, 9]] = legs_ok[0]
        use[[6, 10]] = legs_ok[1]
        use[11:13] = feet_ok
        rows = _BODY_ROWS[use]
        prim[rows] = p[use]
        sec[rows] = s[use]
        have[rows] = True
        return legs_ok

    def hips_hidden(self, vis: F64) -> bool:
        """Are the hips a guess? Either hip under leg_min_visibility, or no whole leg (hip,
        knee, ankle) visible: MediaPipe rates hips just below the frame's edge as visible."""
        thr = self.leg_min_visibility
        legs = vis[_LIMB_PTS[2:]].min(-1)
        return bool(min(vis[L_HIP], vis[R_HIP]) < thr or legs.max() < thr)

    def _forearm_twist(self, local: F64, conf: F64) -> None:
        """Move the hand's twist about the forearm axis into LowerArm (hand world unchanged)."""
        if self.forearm_twist <= 0.0:
            return
        for (hand, fore, axis), arm in zip(_TWIST_ROWS, _CONF_LIMBS[:2], strict=True):
            if local[hand, 3] >= 1.0 - 1e-12 or conf[arm] <= 0.0:
                continue  # no hand rotation, or an untracked forearm: it stays at rest
            h = tuple(local[hand].tolist())
            t = quat.twist1(h, axis)
            if self.forearm_twist != 1.0:
                t = quat.power1(t, self.forearm_twist)
            local[fore] = quat.mul1(tuple(local[fore].tolist()), t)
            local[hand] = quat.mul1((-t[0], -t[1], -t[2], t[3]), h)

    def _hips_position(self, lm: Landmarks, pts: F64 | None, vis: F64) -> F64:
        pose, world = lm.get("pose"), lm.get("pose_world")
        if pts is None or pose is None or world is None or pose.shape[0] != world.shape[0]:
            return np.zeros(3)
        img = clean(pose[:, :3]) * (lm.width, lm.height, lm.width)
        met = clean(world[:, :3])
        # Torso segments: shoulders, hips, both flanks; metres over pixels at the person's depth.
        hidden = self.hips_hidden(vis)
        a = np.array([L_SH] if hidden else [L_SH, L_HIP, L_SH, R_SH])
        b = np.array([R_SH] if hidden else [R_SH, R_HIP, L_HIP, R_HIP])
        metric = np.sqrt(((met[a] - met[b]) ** 2).sum(-1)).sum()
        pixels = np.sqrt(((img[a] - img[b]) ** 2).sum(-1)).sum()
        if pixels < 1e-6 or metric < 1e-6:
            return np.zeros(3)
        m_per_px = float(metric / pixels)
        anchor = (L_SH, R_SH) if hidden else (L_HIP, R_HIP)
        cx, cy = 0.5 * (img[anchor[0], :2] + img[anchor[1], :2])
        depth = self.focal * lm.width * m_per_px
        return np.array(
            [
                -(cx - lm.width / 2) * m_per_px,
                -(cy - lm.height / 2) * m_per_px - (HIDDEN_HIPS_DROP if hidden else 0.0),
                self.ref_depth - depth,
            ]
        )


def _pose_points(lm: Landmarks) -> tuple[F64 | None, F64]:
    """Pose points in avatar-frame axes (metric if pose_world exists) and visibility (33,)."""
    pose, world = lm.get("pose"), lm.get("pose_world")
    if pose is not None and (pose.ndim != 2 or pose.shape[0] != 33):
        pose = None
    if world is not None and (world.ndim != 2 or world.shape[0] != 33):
        world = None
    vis = np.ones(33)
    if pose is not None and pose.shape[1] >= 4:
        vis = np.minimum(np.maximum(clean(pose[:, 3]), 0.0), 1.0)
    if world is not None:
        return -clean(world[:, :3]), vis
    if pose is not None:
        return -clean(pose[:, :3]) * (lm.width, lm.height, lm.width), vis
    return None, np.zeros(33)


_DEFAULT = RigSolver()


def solve(lm: Landmarks) -> Rig:
    """Solve one frame with the default RigSolver."""
    return _DEFAULT.solve(lm)
