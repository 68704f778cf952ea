"""How the legacy face model's 7 outputs become 478 landmarks, and the gather plan for it.

The legacy graph merged ``face_landmark_with_attention.tflite``'s outputs with a
``LandmarksRefinementCalculator`` (subgraph ``TensorsToFaceLandmarksWithAttention``). Its index
lists are not shipped as text in the 0.10.21 wheel, but the subgraph is compiled into
``_framework_bindings.so`` as a serialized ``CalculatorGraphConfig``. We find the calculator's
options there by their protobuf extension tag and decode them with a tiny wire-format reader
(no protobuf dependency), then check them against the structure we rely on.

Semantics (mirrors landmarks_refinement_calculator.cc): refinements apply in order; each
overwrites x,y of its mapped output indices (later wins); z is copied (3-D sources only), left
alone, or set to the mean of the current z of listed output indices.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from .errors import ModelError

# Field number of the `ext` extension of mediapipe.LandmarksRefinementCalculatorOptions.
_OPTIONS_EXT_FIELD = 381914658
# Expected shape of the face refinement: (points, z mode) per model output, in output order.
FACE_LAYOUT: tuple[tuple[int, str], ...] = (
    (468, "copy"),  # mesh (x, y, z)
    (80, "none"),  # lips
    (71, "none"),  # left eye
    (71, "none"),  # right eye
    (5, "average"),  # left iris
    (5, "average"),  # right iris
)
FACE_LANDMARKS = 478


@dataclass(frozen=True)
class Refinement:
    """One input landmark list: where its points go and what happens to their z."""

    indexes: tuple[int, ...]
    z: str  # "none" | "copy" | "average"
    z_average_of: tuple[int, ...] = ()


@dataclass(frozen=True)
class GatherPlan:
    """Rows to gather so one tensor op sequence reproduces the refinement.

    ``xy_rows[i]`` indexes the row-wise concatenation of all sources' (x, y);
    ``z_rows[i]`` indexes the concatenation of the 3-D source's z column and one mean per
    entry of ``z_means`` (each a tuple of rows of that z column).
    """

    xy_rows: tuple[int, ...]
    z_rows: tuple[int, ...]
    z_means: tuple[tuple[int, ...], ...]


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= len(buf) or shift > 63:
            raise ValueError("truncated varint")
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, i


def _fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) of one protobuf message, top level only."""
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        field, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 2:
            n, i = _varint(buf, i)
            if i + n > len(buf):
                raise ValueError("truncated field")
            value, i = buf[i : i + n], i + n
        elif wire in (1, 5):
            n = 8 if wire == 1 else 4
            value, i = buf[i : i + n], i + n
        else:
            raise ValueError(f"unsupported wire type {wire}")
        yield field, wire, value


def _ints(values: Sequence[int | bytes]) -> tuple[int, ...]:
    """Repeated int32, packed or not."""
    out: list[int] = []
    for v in values:
        if isinstance(v, int):
            out.append(v)
            continue
        i = 0
        while i < len(v):
            x, i = _varint(v, i)
            out.append(x)
    return tuple(out)


def parse_refinements(options: bytes) -> tuple[Refinement, ...]:
    """Decode a serialized ``LandmarksRefinementCalculatorOptions``."""
    result = []
    for field, _, value in _fields(options):
        if field != 1 or not isinstance(value, bytes):
            continue
        mapping: list[int | bytes] = []
        z = "none"
        z_avg: tuple[int, ...] = ()
        for f, _, v in _fields(value):
            if f == 1:
                mapping.append(v)
            elif f == 2 and isinstance(v, bytes):
                for zf, _, zv in _fields(v):
                    if zf == 2:
                        z = "copy"
                    elif zf == 3 and isinstance(zv, bytes):
                        z = "average"
                        z_avg = _ints([a for af, _, a in _fields(zv) if af == 1])
        result.append(Refinement(_ints(mapping), z, z_avg))
    return tuple(result)


def check_face_refinements(refs: Sequence[Refinement]) -> None:
    """Raise ModelError unless ``refs`` has the face layout the rewrite is written for."""
    layout = tuple((len(r.indexes), r.z) for r in refs)
    if layout != FACE_LAYOUT:
        raise ModelError(f"unexpected face refinement layout {layout}, expected {FACE_LAYOUT}")
    if refs[0].indexes != tuple(range(468)):
        raise ModelError("face refinement: the mesh must map onto landmarks 0-467 in order")
    covered = {i for r in refs for i in r.indexes}
    if covered != set(range(FACE_LANDMARKS)):
        raise ModelError(f"face refinement does not cover exactly 0-{FACE_LANDMARKS - 1}")
    for r in refs[4:]:
        if len(r.z_average_of) != 16 or not set(r.z_average_of) <= set(range(468)):
            raise ModelError("face refinement: iris z must average 16 mesh points")


def find_face_refinements(binary: bytes) -> tuple[Refinement, ...]:
    """Find and check the face refinement options inside the legacy native library."""
    key = (_OPTIONS_EXT_FIELD << 3) | 2
    tag = bytearray()
    while True:
        tag.append((key & 0x7F) | (0x80 if key > 0x7F else 0))
        key >>= 7
        if not key:
            break
    found: set[tuple[Refinement, ...]] = set()
    start = binary.find(tag)
    while start >= 0:
        try:
            n, i = _varint(binary, start + len(tag))
            refs = parse_refinements(binary[i : i + n])
            check_face_refinements(refs)
            found.add(refs)
        except (ValueError, ModelError):
            pass
        start = binary.find(tag, start + 1)
    if len(found) != 1:
        raise ModelError(
            f"expected one face landmark refinement in the legacy mediapipe library, found "
            f"{len(found)}: is the wheel really mediapipe 0.10.21?"
        )
    return found.pop()


def plan_gather(refs: Sequence[Refinement], dims: Sequence[int]) -> GatherPlan:
    """Compile the refinement into gather rows; ``dims[k]`` is 3 for (x,y,z) sources, else 2."""
    n_out = 1 + max(i for r in refs for i in r.indexes)
    xy: list[int | None] = [None] * n_out
    z: list[int | None] = [None] * n_out
    means: list[tuple[int, ...]] = []
    z_rows_of_source = [0] * len(refs)
    rows = 0
    for k, (r, dim) in enumerate(zip(refs, dims, strict=True)):
        for j, i in enumerate(r.indexes):
            xy[i] = rows + j
        rows += len(r.indexes)
        if r.z == "copy":
            if dim != 3 or k != 0:
                raise ModelError("z copy is supported only from the first, 3-D source")
            for j, i in enumerate(r.indexes):
                z[i] = z_rows_of_source[k] + j
        elif r.z == "average":
            src = [z[i] for i in r.z_average_of]
            if any(s is None or s >= len(refs[0].indexes) for s in src):
                raise ModelError("z average must read copied mesh z values only")
            means.append(tuple(s for s in src if s is not None))
            for i in r.indexes:
                z[i] = len(refs[0].indexes) + len(means) - 1
    if any(v is None for v in xy) or any(v is None for v in z):
        raise ModelError("refinement leaves some landmarks without x, y or z")
    return GatherPlan(
        tuple(v for v in xy if v is not None), tuple(v for v in z if v is not None), tuple(means)
    )
