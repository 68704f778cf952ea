"""Small quaternion helpers on numpy arrays: (..., 4) as (x, y, z, w), Unity's component order.

Everything broadcasts over leading axes and computes in float64. The formulas are the textbook
ones; a left-handed frame (Unity) and a right-handed one give the same numbers for the same
rotation matrix, so nothing here depends on handedness. No function returns NaN for finite
input: degenerate cases (zero vectors, zero quaternions) fall back to the identity, because a
solver running on noisy landmarks must never emit a broken rotation.

Speed: the solver works on (47, 4) arrays where numpy's per-call overhead dominates, so products
are written as two matmuls against constant tensors instead of a dozen component expressions.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
ArrayLike = npt.ArrayLike

EPS = 1e-12
IDENTITY: F64 = np.array([0.0, 0.0, 0.0, 1.0])
_CONJ = np.array([-1.0, -1.0, -1.0, 1.0])
_MIRROR = np.array([1.0, -1.0, -1.0, 1.0])


def clean(a: ArrayLike) -> F64:
    """float64 copy with NaN/inf replaced by 0 and magnitudes capped at 1e6.

    Landmark arrays go through this first, so no later arithmetic can overflow or see NaN.
    """
    out = np.minimum(np.maximum(np.asarray(a, dtype=np.float64), -1e6), 1e6)  # NaN stays NaN
    if np.isnan(out.sum()):
        out = np.where(np.isnan(out), 0.0, out)
    return out


def identity(n: int) -> F64:
    """(n, 4) identity quaternions."""
    out = np.zeros((n, 4))
    out[:, 3] = 1.0
    return out


def normalize(q: ArrayLike) -> F64:
    """Unit quaternions; zero, tiny or non-finite rows become the identity."""
    # Capped so that squaring cannot overflow (NaN passes through and is caught below).
    qa = np.minimum(np.maximum(np.asarray(q, dtype=np.float64), -1e150), 1e150)
    n2 = np.add.reduce(qa * qa, -1, keepdims=True)
    if n2.min() > 1e-18:  # fast path; False for NaN too
        return np.asarray(qa / np.sqrt(n2), dtype=np.float64)
    ok = n2 > 1e-18  # False for NaN
    return np.asarray(np.where(ok, qa / np.sqrt(np.where(ok, n2, 1.0)), IDENTITY))


def conj(q: ArrayLike) -> F64:
    """Inverse of a unit quaternion."""
    return np.asarray(q, dtype=np.float64) * _CONJ


def _product_tensor(terms: dict[int, list[tuple[int, int, int]]], n: int) -> F64:
    """T (n, n*n) with out_k = sum_ij T[i, j*n + k] a_i b_j."""
    t = np.zeros((n, n, n))
    for k, lst in terms.items():
        for i, j, sign in lst:
            t[i, j, k] = sign
    return t.reshape(n, n * n)


_X, _Y, _Z, _W = 0, 1, 2, 3
_HAMILTON = _product_tensor(
    {
        _X: [(_W, _X, 1), (_X, _W, 1), (_Y, _Z, 1), (_Z, _Y, -1)],
        _Y: [(_W, _Y, 1), (_X, _Z, -1), (_Y, _W, 1), (_Z, _X, 1)],
        _Z: [(_W, _Z, 1), (_X, _Y, 1), (_Y, _X, -1), (_Z, _W, 1)],
        _W: [(_W, _W, 1), (_X, _X, -1), (_Y, _Y, -1), (_Z, _Z, -1)],
    },
    4,
)
_LEVI_CIVITA = _product_tensor(
    {0: [(1, 2, 1), (2, 1, -1)], 1: [(2, 0, 1), (0, 2, -1)], 2: [(0, 1, 1), (1, 0, -1)]}, 3
)


def _bilinear(a: ArrayLike, b: ArrayLike, tensor: F64, n: int) -> F64:
    aa = np.asarray(a, dtype=np.float64)
    bb = np.asarray(b, dtype=np.float64)
    m = (aa @ tensor).reshape(*aa.shape[:-1], n, n)  # per-row matrix of "multiply by a"
    return np.asarray((bb[..., None, :] @ m)[..., 0, :], dtype=np.float64)


def mul(a: ArrayLike, b: ArrayLike) -> F64:
    """Hamilton product a * b (apply b first, then a); broadcasts over leading axes."""
    return _bilinear(a, b, _HAMILTON, 4)


def cross(a: ArrayLike, b: ArrayLike) -> F64:
    """Cross product on (..., 3); np.cross is several times slower on tiny arrays."""
    return _bilinear(a, b, _LEVI_CIVITA, 3)


def rotate(q: ArrayLike, v: ArrayLike) -> F64:
    """Rotate vectors v (..., 3) by unit quaternions q (..., 4)."""
    qa = np.asarray(q, dtype=np.float64)
    va = np.asarray(v, dtype=np.float64)
    u = qa[..., :3]
    t = 2.0 * cross(u, va)
    return va + qa[..., 3:4] * t + cross(u, t)


def to_matrix(q: ArrayLike) -> F64:
    """(..., 3, 3) rotation matrices (column vectors: R @ v)."""
    qn = normalize(q)
    x, y, z, w = qn[..., 0], qn[..., 1], qn[..., 2], qn[..., 3]
    m = np.empty((*qn.shape[:-1], 3, 3))
    m[..., 0, 0] = 1 - 2 * (y * y + z * z)
    m[..., 0, 1] = 2 * (x * y - z * w)
    m[..., 0, 2] = 2 * (x * z + y * w)
    m[..., 1, 0] = 2 * (x * y + z * w)
    m[..., 1, 1] = 1 - 2 * (x * x + z * z)
    m[..., 1, 2] = 2 * (y * z - x * w)
    m[..., 2, 0] = 2 * (x * z - y * w)
    m[..., 2, 1] = 2 * (y * z + x * w)
    m[..., 2, 2] = 1 - 2 * (x * x + y * y)
    return m


# from_matrix (Shepperd): t = (4w², 4x², 4y², 4z²) from the diagonal; (a, b, c) = 4w(x, y, z) and
# (d, e, f) = 4(xy, xz, yz) from the off-diagonal, all by matmul on the flattened matrix.
_DIAG = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], dtype=np.float64).T
_OFF = np.zeros((9, 6))
for _col, (_i, _j, _sign) in enumerate(
    [(7, 5, -1), (2, 6, -1), (3, 1, -1), (1, 3, 1), (2, 6, 1), (5, 7, 1)]
):
    _OFF[_i, _col] = 1.0
    _OFF[_j, _col] = _sign
# For the largest of (w, x, y, z), the entries of [a, b, c, d, e, f, 4w², 4x², 4y², 4z²] that
# form (x, y, z, w) times 4·largest: well conditioned because the largest is >= 1/2.
_GATHER = np.array([[0, 1, 2, 6], [7, 3, 4, 0], [3, 8, 5, 1], [4, 5, 9, 2]], dtype=np.intp)


def from_matrix(m: ArrayLike) -> F64:
    """Quaternions (w >= 0) from (..., 3, 3) rotation matrices; stable up to 180°."""
    mm = np.asarray(m, dtype=np.float64)
    lead = mm.shape[:-2]
    flat = mm.reshape(-1, 9)
    t = flat[:, [0, 4, 8]] @ _DIAG + 1.0
    vals = np.concatenate((flat @ _OFF, t), axis=-1)
    q = vals[np.arange(len(vals))[:, None], _GATHER[t.argmax(-1)]]
    q = np.where(q[:, 3:4] < 0.0, -q, q)
    return normalize(q).reshape(*lead, 4)


def from_axis_angle(axis: ArrayLike, angle: ArrayLike) -> F64:
    """Rotation by angle (radians) about axis (need not be unit length)."""
    ax = np.asarray(axis, dtype=np.float64)
    an = np.asarray(angle, dtype=np.float64)
    unit = ax / np.maximum(np.sqrt(np.add.reduce(ax * ax, -1, keepdims=True)), EPS)
    half = an[..., None] / 2.0
    return normalize(np.concatenate((unit * np.sin(half), np.cos(half)), axis=-1))


def angle(q: ArrayLike) -> F64:
    """Rotation angle in radians, in [0, π]."""
    qn = normalize(q)
    v = np.sqrt(np.add.reduce(qn[..., :3] ** 2, -1))
    return np.asarray(2.0 * np.arctan2(v, np.abs(qn[..., 3])), dtype=np.float64)


def power(q: ArrayLike, t: float) -> F64:
    """q^t: same axis, t times the (shortest) angle; power(q, 0.5) splits a joint in two."""
    qn = normalize(q)
    qn = np.where(qn[..., 3:4] < 0, -qn, qn)
    v = qn[..., :3]
    s = np.sqrt(np.add.reduce(v * v, -1, keepdims=True))
    half = np.arctan2(s, qn[..., 3:4]) * t
    return normalize(np.concatenate((v / np.maximum(s, EPS) * np.sin(half), np.cos(half)), -1))


def twist(q: ArrayLike, axis: ArrayLike) -> F64:
    """Twist part of q about axis (swing-twist decomposition; q = swing * twist)."""
    qn = normalize(q)
    ax = np.asarray(axis, dtype=np.float64)
    ax = ax / np.maximum(np.sqrt(np.add.reduce(ax * ax, -1, keepdims=True)), EPS)
    proj = np.add.reduce(qn[..., :3] * ax, -1, keepdims=True) * ax
    return normalize(np.concatenate((proj, qn[..., 3:4]), -1))


def mirror_x(q: ArrayLike) -> F64:
    """Mirror rotations across the YZ (sagittal) plane: (x, y, z, w) -> (x, -y, -z, w).

    A rotation's axis is a pseudovector: under x -> -x it maps to (ax, -ay, -az) with the same
    angle. The same numbers convert Unity (left-handed) rotations to glTF / three-vrm
    (right-handed, X negated) ones.
    """
    return np.asarray(q, dtype=np.float64) * _MIRROR


def to_euler_yxz(q: ArrayLike) -> F64:
    """(yaw, pitch, roll) in degrees for R = Ry(yaw) Rx(pitch) Rz(roll), Unity's Euler order."""
    m = to_matrix(q)
    pitch = np.arcsin(np.clip(-m[..., 1, 2], -1.0, 1.0))
    yaw = np.arctan2(m[..., 0, 2], m[..., 2, 2])
    roll = np.arctan2(m[..., 1, 0], m[..., 1, 1])
    return np.asarray(np.degrees(np.stack((yaw, pitch, roll), -1)), dtype=np.float64)


# Scalar versions for the handful of single quaternions a frame needs (joint splits, forearm
# twist, head angles): plain float arithmetic beats numpy's per-call overhead ~10x there.
Q = tuple[float, float, float, float]


def mul1(a: Q, b: Q) -> Q:
    """Hamilton product of two single quaternions given as (x, y, z, w) floats."""
    ax, ay, az, aw = a
    bx, by, bz, bw = b
    return (
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
        aw * bw - ax * bx - ay * by - az * bz,
    )


def normalize1(q: Q) -> Q:
    n = math.sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3])
    if not n > 1e-9 or not math.isfinite(n):
        return (0.0, 0.0, 0.0, 1.0)
    return (q[0] / n, q[1] / n, q[2] / n, q[3] / n)


def power1(q: Q, t: float) -> Q:
    """q^t for one quaternion (shortest arc), as power()."""
    x, y, z, w = normalize1(q)
    if w < 0.0:
        x, y, z, w = -x, -y, -z, -w
    s = math.sqrt(x * x + y * y + z * z)
    if s < EPS:
        return (0.0, 0.0, 0.0, 1.0)
    half = math.atan2(s, w) * t
    k = math.sin(half) / s
    return (x * k, y * k, z * k, math.cos(half))


def twist1(q: Q, axis: tuple[float, float, float]) -> Q:
    """Twist of q about a unit axis, as twist()."""
    d = q[0] * axis[0] + q[1] * axis[1] + q[2] * axis[2]
    return normalize1((d * axis[0], d * axis[1], d * axis[2], q[3]))


def euler1(q: Q) -> tuple[float, float, float]:
    """(yaw, pitch, roll) degrees of one quaternion, as to_euler_yxz()."""
    x, y, z, w = normalize1(q)
    m02 = 2 * (x * z + y * w)
    m12 = 2 * (y * z - x * w)
    m22 = 1 - 2 * (x * x + y * y)
    m10 = 2 * (x * y + z * w)
    m11 = 1 - 2 * (x * x + z * z)
    return (
        math.degrees(math.atan2(m02, m22)),
        math.degrees(math.asin(min(max(-m12, -1.0), 1.0))),
        math.degrees(math.atan2(m10, m11)),
    )


# Orthonormal frames from direction pairs: how the solver turns measured directions into
# rotations, in one batch for all bones.


def frames(prim: F64, sec: F64) -> tuple[F64, npt.NDArray[np.bool_]]:
    """Frames (n, 3, 3) with columns [prim, sec ⟂ prim, prim x sec], and which rows are valid.

    A row is invalid when prim has no length or sec is (nearly) parallel to it. Inputs must be
    finite (landmarks go through clean() first).
    """
    pn = np.sqrt(np.add.reduce(prim * prim, -1, keepdims=True))
    e1 = prim / np.maximum(pn, 1e-12)
    s = sec - np.add.reduce(sec * e1, -1, keepdims=True) * e1
    sn = np.sqrt(np.add.reduce(s * s, -1, keepdims=True))
    secn = np.sqrt(np.add.reduce(sec * sec, -1, keepdims=True))
    ok = (pn[:, 0] > 1e-9) & (sn[:, 0] > 1e-4 * secn[:, 0]) & (secn[:, 0] > 1e-9)
    e2 = s / np.maximum(sn, 1e-12)
    return np.stack((e1, e2, cross(e1, e2)), axis=-1), ok


def unit(v: F64) -> F64:
    """Unit vectors along the last axis (zero vectors stay zero)."""
    return np.asarray(v / np.maximum(np.sqrt(np.add.reduce(v * v, -1, keepdims=True)), 1e-12))


def swing_apply(a: F64, b: F64, v: F64) -> F64:
    """Apply the shortest-arc rotation taking unit a to unit b to vectors v (batched Rodrigues)."""
    c = np.add.reduce(a * b, -1, keepdims=True)
    k = cross(a, b)
    kv = np.add.reduce(k * v, -1, keepdims=True)
    return np.asarray(v * c + cross(k, v) + k * kv / np.maximum(1.0 + c, 1e-6))
