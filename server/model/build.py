"""Offline build of the ``.task`` bundles from the legacy 0.10.21 tflite files.

A ``.task`` is a zip (stored, 4-byte aligned) of tflite files named as the Tasks graphs look
them up. Three legacy models lack the image metadata (input normalisation) that the Tasks
preprocessor needs, and the face model needs a graph rewrite (``face_rewrite``). Builds are
deterministic: fixed member order and zip timestamps, so the same wheel gives the same bytes.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from .errors import ModelError
from .face_rewrite import rewrite_face_model
from .wheel import LegacyModels

# (legacy file, rewrite the face graph?, add image metadata (mean, std)?) per bundle member.
_Member = tuple[str, bool, tuple[float, float] | None]
_MEMBERS: dict[str, _Member] = {
    "face_detector.tflite": ("face_detection/face_detection_short_range.tflite", False, None),
    "face_landmarks_detector.tflite": (
        "face_landmark/face_landmark_with_attention.tflite", True, (0.0, 255.0)),
    "pose_detector.tflite": ("pose_detection/pose_detection.tflite", False, None),
    "pose_landmarks_detector.tflite": (
        "pose_landmark/pose_landmark_full.tflite", False, (0.0, 255.0)),
    "hand_detector.tflite": ("palm_detection/palm_detection_full.tflite", False, None),
    "hand_landmarks_detector.tflite": ("hand_landmark/hand_landmark_full.tflite", False, None),
    "hand_landmarks_detector.tflite@lite": (
        "hand_landmark/hand_landmark_lite.tflite", False, None),
    "hand_roi_refinement.tflite": ("holistic_landmark/hand_recrop.tflite", False, (0.0, 255.0)),
}  # fmt: skip
# Members of each bundle, in the order they are written; "NAME@variant" is written as NAME.
BUNDLE_MEMBERS: dict[str, tuple[str, ...]] = {
    "holistic": (
        "face_detector.tflite",
        "face_landmarks_detector.tflite",
        "pose_detector.tflite",
        "pose_landmarks_detector.tflite",
        "hand_landmarks_detector.tflite",
        "hand_roi_refinement.tflite",
    ),
    # The same graph with the lite hand landmark model (~22 % less CPU per frame, the same
    # detections on the fixture clips; docs/profiles.md). The wheel holds no lite pose landmark
    # model (only pose_landmark_full), so pose stays full.
    "holistic_lite": (
        "face_detector.tflite",
        "face_landmarks_detector.tflite",
        "pose_detector.tflite",
        "pose_landmarks_detector.tflite",
        "hand_landmarks_detector.tflite@lite",
        "hand_roi_refinement.tflite",
    ),
    "face": ("face_detector.tflite", "face_landmarks_detector.tflite"),
    "pose": ("pose_detector.tflite", "pose_landmarks_detector.tflite"),
    "hands": ("hand_detector.tflite", "hand_landmarks_detector.tflite"),
}
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
_ALIGNMENT = 4
_STUB_MODULES = (
    "mediapipe.tasks.cc",
    "mediapipe.tasks.cc.metadata",
    "mediapipe.tasks.cc.metadata.python",
    "mediapipe.tasks.cc.metadata.python._pywrap_metadata_version",
)


def _min_parser_version(_metadata: bytes) -> str:
    """Stand-in for the native ``GetMinimumMetadataParserVersion`` missing from 1.2.3.

    We only write image-input metadata (ImageProperties, NormalizationOptions, stats), all of
    which the metadata schema had in its first version, so "1.0.0" is exact for our use.
    """
    return "1.0.0"


@contextlib.contextmanager
def _metadata_writer() -> Iterator[ModuleType]:
    """Import mediapipe's metadata writer with the stand-in installed only for the import.

    mediapipe 1.2.3's ``metadata.py`` imports ``mediapipe.tasks.cc.metadata.python.
    _pywrap_metadata_version``, which its wheel lacks. The already-imported module keeps its
    reference to the stand-in; ``sys.modules`` is restored afterwards.
    """
    added: list[str] = []
    if importlib.util.find_spec("mediapipe.tasks.cc") is None:
        parent: ModuleType | None = None
        for name in _STUB_MODULES:
            mod = ModuleType(name)
            if name != _STUB_MODULES[-1]:
                mod.__path__ = []
            if parent is not None:
                setattr(parent, name.rsplit(".", 1)[1], mod)
            sys.modules[name] = mod
            added.append(name)
            parent = mod
        stub: Any = sys.modules[_STUB_MODULES[-1]]
        stub.GetMinimumMetadataParserVersion = _min_parser_version
    try:
        yield importlib.import_module(
            "mediapipe.tasks.python.metadata.metadata_writers.metadata_writer"
        )
    finally:
        for name in added:
            sys.modules.pop(name, None)


def add_image_metadata(model: bytes, mean: float, std: float) -> bytes:
    """Attach RGB image-input metadata so the Tasks preprocessor normalises (x-mean)/std."""
    with _metadata_writer() as mw:
        writer = mw.MetadataWriter.create(bytearray(model))
        writer.add_image_input(norm_mean=[mean], norm_std=[std])
        out, _ = writer.populate()
    return bytes(out)


class BundleBuilder:
    """Builds bundles from one ``LegacyModels``; shared members are prepared once."""

    def __init__(self, legacy: LegacyModels) -> None:
        self._legacy = legacy
        self._done: dict[str, bytes] = {}

    def member(self, name: str) -> bytes:
        """The bytes of one bundle member, after rewrite and metadata as needed."""
        if name not in self._done:
            source, rewrite, norm = _MEMBERS[name]
            data = self._legacy.files[source]
            try:
                if rewrite:
                    data = rewrite_face_model(data, self._legacy.face_refinements)
                if norm is not None:
                    data = add_image_metadata(data, *norm)
            except ModelError:
                raise
            except Exception as e:  # mediapipe/flatbuffers raise all kinds of errors
                raise ModelError(f"preparing {name} from {source} failed: {e!r}") from e
            self._done[name] = data
        return self._done[name]

    def write(self, bundle: str, dest: Path) -> None:
        """Write bundle ``bundle`` (a key of ``BUNDLE_MEMBERS``) to ``dest``."""
        if bundle not in BUNDLE_MEMBERS:
            raise ModelError(f"unknown bundle {bundle!r}; known: {', '.join(BUNDLE_MEMBERS)}")
        members = {name.split("@")[0]: self.member(name) for name in BUNDLE_MEMBERS[bundle]}
        write_bundle(members, dest)


def write_bundle(members: dict[str, bytes], dest: Path) -> None:
    """Write a stored, aligned, reproducible zip the Tasks API reads as a model bundle."""
    from mediapipe.tasks.python.metadata.metadata_writers.model_asset_bundle_utils import (
        AlignZipFile,
    )

    try:
        with AlignZipFile(dest, mode="w", alignment=_ALIGNMENT) as zf:
            for name, data in members.items():
                info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
                info.compress_type = zipfile.ZIP_STORED
                zf.writestr(info, data)
    except OSError as e:
        raise ModelError(f"cannot write bundle {dest}: {e}") from e
