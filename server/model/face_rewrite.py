"""Rewrite ``face_landmark_with_attention.tflite`` into the face model the Tasks API expects.

The Tasks face pipeline reads one [1,1,1,1434] landmark tensor (478 x, y, z) and the face
flag. The legacy model has 7 outputs that its old graph merged outside the model. We append
RESHAPE / GATHER / MEAN / CONCATENATION ops that do that merge (see ``face_spec``) inside the
model, make the merged tensor and the face flag the only outputs and drop the stale metadata
(it describes the 7 old outputs); the caller adds fresh image metadata afterwards.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flatbuffers
import numpy as np
from mediapipe.tasks.metadata import schema_py_generated as fb

from .errors import ModelError
from .face_spec import FACE_LANDMARKS, Refinement, plan_gather

# Model outputs in the order the legacy graph split them (= refinement order), then the flag.
SOURCE_OUTPUTS = (
    "output_mesh_identity",
    "output_lips",
    "output_left_eye",
    "output_right_eye",
    "output_left_iris",
    "output_right_iris",
)
FLAG_OUTPUT = "conv_faceflag"
LANDMARKS_OUTPUT = "face_landmarks_478"
_METADATA_NAME = b"TFLITE_METADATA"
_OP, _OPT = fb.BuiltinOperator, fb.BuiltinOptions


class _Editor:
    """Appends tensors and builtin ops to subgraph 0 of a ``ModelT``."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.graph = model.subgraphs[0]

    def _buffer(self, data: bytes | None) -> int:
        buf = fb.BufferT()
        if data is not None:
            buf.data = np.frombuffer(data, dtype=np.uint8)
        self.model.buffers.append(buf)
        return len(self.model.buffers) - 1

    def tensor(self, name: str, shape: Sequence[int], *, const: np.ndarray | None = None) -> int:
        t = fb.TensorT()
        t.name = name.encode()
        t.shape = np.asarray(shape, dtype=np.int32)
        if const is None:
            t.type = fb.TensorType.FLOAT32
            t.buffer = self._buffer(None)
        else:
            t.type = fb.TensorType.INT32
            t.buffer = self._buffer(const.astype("<i4").tobytes())
        self.graph.tensors.append(t)
        return len(self.graph.tensors) - 1

    def const(self, name: str, values: Sequence[int]) -> int:
        return self.tensor(name, [len(values)], const=np.asarray(values, dtype=np.int32))

    def _opcode(self, code: int) -> int:
        for i, oc in enumerate(self.model.operatorCodes):
            if max(oc.builtinCode, oc.deprecatedBuiltinCode) == code and not oc.customCode:
                return i
        oc = fb.OperatorCodeT()
        oc.builtinCode = code
        oc.deprecatedBuiltinCode = min(code, 127)
        oc.version = 1
        self.model.operatorCodes.append(oc)
        return len(self.model.operatorCodes) - 1

    def op(self, code: int, inputs: list[int], output: int, opt_type: int, opt: Any) -> int:
        o = fb.OperatorT()
        o.opcodeIndex = self._opcode(code)
        o.inputs = np.asarray(inputs, dtype=np.int32)
        o.outputs = np.asarray([output], dtype=np.int32)
        o.builtinOptionsType = opt_type
        o.builtinOptions = opt
        self.graph.operators.append(o)
        return output

    def reshape(self, name: str, src: int, shape: Sequence[int]) -> int:
        opt = fb.ReshapeOptionsT()
        opt.newShape = list(shape)
        out = self.tensor(name, shape)
        shape_t = self.const(name + "/shape", shape)
        return self.op(_OP.RESHAPE, [src, shape_t], out, _OPT.ReshapeOptions, opt)

    def gather(
        self, name: str, src: int, rows: Sequence[int], axis: int, shape: Sequence[int]
    ) -> int:
        opt = fb.GatherOptionsT()
        opt.axis, opt.batchDims = axis, 0
        idx = self.const(name + "/indices", rows)
        out = self.tensor(name, shape)
        return self.op(_OP.GATHER, [src, idx], out, _OPT.GatherOptions, opt)

    def concat(self, name: str, srcs: list[int], axis: int, shape: Sequence[int]) -> int:
        opt = fb.ConcatenationOptionsT()
        opt.axis, opt.fusedActivationFunction = axis, fb.ActivationFunctionType.NONE
        out = self.tensor(name, shape)
        return self.op(_OP.CONCATENATION, srcs, out, _OPT.ConcatenationOptions, opt)

    def mean_rows(self, name: str, src: int, cols: int) -> int:
        opt = fb.ReducerOptionsT()
        opt.keepDims = True
        axes = self.const(name + "/axes", [0])
        out = self.tensor(name, [1, cols])
        return self.op(_OP.MEAN, [src, axes], out, _OPT.ReducerOptions, opt)


def _outputs_by_name(model: Any) -> dict[str, int]:
    graph = model.subgraphs[0]
    return {graph.tensors[i].name.decode(): int(i) for i in graph.outputs}


def rewrite_face_model(model_bytes: bytes, refs: Sequence[Refinement]) -> bytes:
    """Return a copy of the attention face model with one 478-landmark output + face flag."""
    model = fb.ModelT.InitFromObj(fb.Model.GetRootAsModel(model_bytes, 0))
    if len(model.subgraphs) != 1:
        raise ModelError("face model: expected exactly one subgraph")
    outputs = _outputs_by_name(model)
    order = [model.subgraphs[0].tensors[i].name.decode() for i in model.subgraphs[0].outputs]
    if order != [*SOURCE_OUTPUTS, FLAG_OUTPUT]:
        raise ModelError(f"face model: unexpected outputs {order}")
    ed = _Editor(model)
    dims = [3] + [2] * (len(SOURCE_OUTPUTS) - 1)
    plan = plan_gather(refs, dims)
    sources = []
    for name, ref, dim in zip(SOURCE_OUTPUTS, refs, dims, strict=True):
        size = int(np.prod(ed.graph.tensors[outputs[name]].shape))
        if size != len(ref.indexes) * dim:
            want = len(ref.indexes) * dim
            raise ModelError(f"face model: {name} has {size} values, expected {want}")
        sources.append(ed.reshape(f"{name}/points", outputs[name], [len(ref.indexes), dim]))
    n_mesh = len(refs[0].indexes)
    mesh_xy = ed.gather("mesh/xy", sources[0], [0, 1], axis=1, shape=[n_mesh, 2])
    mesh_z = ed.gather("mesh/z", sources[0], [2], axis=1, shape=[n_mesh, 1])
    n_rows = sum(len(r.indexes) for r in refs)
    xy_table = ed.concat("refine/xy_table", [mesh_xy, *sources[1:]], axis=0, shape=[n_rows, 2])
    xy = ed.gather("refine/xy", xy_table, plan.xy_rows, axis=0, shape=[FACE_LANDMARKS, 2])
    means = []
    for k, rows in enumerate(plan.z_means):
        picked = ed.gather(f"refine/z_pick_{k}", mesh_z, rows, axis=0, shape=[len(rows), 1])
        means.append(ed.mean_rows(f"refine/z_mean_{k}", picked, 1))
    z_table = ed.concat("refine/z_table", [mesh_z, *means], axis=0, shape=[n_mesh + len(means), 1])
    z = ed.gather("refine/z", z_table, plan.z_rows, axis=0, shape=[FACE_LANDMARKS, 1])
    xyz = ed.concat("refine/xyz", [xy, z], axis=1, shape=[FACE_LANDMARKS, 3])
    final = ed.reshape(LANDMARKS_OUTPUT, xyz, [1, 1, 1, FACE_LANDMARKS * 3])
    ed.graph.outputs = np.asarray([final, outputs[FLAG_OUTPUT]], dtype=np.int32)
    model.signatureDefs = None
    for meta in list(model.metadata or []):
        if meta.name == _METADATA_NAME:
            model.buffers[meta.buffer] = fb.BufferT()
            model.metadata.remove(meta)
    builder = flatbuffers.Builder(len(model_bytes) + (1 << 16))
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())
