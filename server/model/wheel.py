"""The legacy ``mediapipe==0.10.21`` wheel: the only offline source of the model weights.

mediapipe 1.2.x ships no models, but the 0.10.21 wheel on PyPI carries the legacy tflite
files of the old ``solutions`` API. We fetch it with pip (so the package index, proxies and
pip's own hash checks apply), cache it, and read what we need straight from the zip.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .errors import ModelError
from .face_spec import Refinement, find_face_refinements

WHEEL_SPEC = "mediapipe==0.10.21"
_WHEEL_GLOB = "mediapipe-0.10.21-*.whl"
_MODULES = "mediapipe/modules/"
# The legacy files the bundles are made of, by their path under mediapipe/modules/.
LEGACY_FILES = (
    "pose_detection/pose_detection.tflite",
    "pose_landmark/pose_landmark_full.tflite",
    "face_detection/face_detection_short_range.tflite",
    "face_landmark/face_landmark_with_attention.tflite",
    "hand_landmark/hand_landmark_full.tflite",
    "hand_landmark/hand_landmark_lite.tflite",
    "holistic_landmark/hand_recrop.tflite",
    "palm_detection/palm_detection_full.tflite",
)
_NATIVE_LIB_PREFIX = "mediapipe/python/_framework_bindings"
_PIP_TIMEOUT_S = 600


@dataclass(frozen=True)
class LegacyModels:
    """What the build needs from the wheel, read once and shared by all bundles."""

    wheel: Path
    files: dict[str, bytes]
    face_refinements: tuple[Refinement, ...]


def default_wheel_dir() -> Path:
    """``$HOLISTREAM_WHEEL_DIR``, else ``<XDG cache>/holistream/wheels``.

    Kept apart from the model cache so a test's throw-away model cache still reuses the
    36 MB wheel.
    """
    if env := os.environ.get("HOLISTREAM_WHEEL_DIR"):
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "holistream" / "wheels"


def fetch_wheel(wheel_dir: Path, *, log: Callable[[str], None] = print) -> Path:
    """Return a cached 0.10.21 wheel, downloading it with pip only if none is there."""
    found = sorted(wheel_dir.glob(_WHEEL_GLOB))
    if found:
        return found[-1]
    wheel_dir.mkdir(parents=True, exist_ok=True)
    log(f"fetching {WHEEL_SPEC} (legacy model weights, ~36 MB) into {wheel_dir}")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", WHEEL_SPEC, "-d", str(wheel_dir)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=_PIP_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ModelError(f"could not run pip to fetch {WHEEL_SPEC}: {e}") from e
    found = sorted(wheel_dir.glob(_WHEEL_GLOB))
    if proc.returncode != 0 or not found:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        raise ModelError(f"pip could not download {WHEEL_SPEC} (exit {proc.returncode}): {tail}")
    return found[-1]


def load_legacy(wheel: Path) -> LegacyModels:
    """Read the legacy model files and the face refinement table out of the wheel."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            names = set(zf.namelist())
            missing = [f for f in LEGACY_FILES if _MODULES + f not in names]
            if missing:
                raise ModelError(f"{wheel.name} lacks {', '.join(missing)}")
            files = {f: zf.read(_MODULES + f) for f in LEGACY_FILES}
            libs = [n for n in names if n.startswith(_NATIVE_LIB_PREFIX)]
            if len(libs) != 1:
                raise ModelError(f"{wheel.name}: native library {_NATIVE_LIB_PREFIX}* not found")
            refinements = find_face_refinements(zf.read(libs[0]))
    except (OSError, zipfile.BadZipFile) as e:
        raise ModelError(f"cannot read {wheel}: {e} (delete it to fetch it again)") from e
    return LegacyModels(wheel, files, refinements)
