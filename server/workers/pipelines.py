"""The four MediaPipe pipelines behind one interface: RGB frame in, wire parts out.

Imported only inside worker processes (and by tests that run MediaPipe directly): the server's
event loop process never loads MediaPipe. Whatever pipeline runs, the output has the holistic
schema of holistream.landmarks, so clients cannot tell them apart except by `pipeline`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol

# Quiet the native logging before mediapipe loads (it also tries a logging host name).
os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import mediapipe as mp
import numpy as np
from mediapipe.tasks.python import BaseOptions
from mediapipe.tasks.python import vision as mpv

from holistream.landmarks import Array
from holistream.protocol import round_landmarks

Parts = dict[str, Array | None]


class Detector(Protocol):
    def detect(self, rgb: np.ndarray, timestamp_ms: int | None) -> Parts: ...

    def close(self) -> None: ...


def _norm(landmarks: Sequence[Any], stride: int = 3) -> Array | None:
    if not landmarks:
        return None
    if stride == 5:
        rows: Iterable[tuple[float, ...]] = (
            (p.x, p.y, p.z, p.visibility or 0.0, p.presence or 0.0) for p in landmarks
        )
    else:
        rows = ((p.x, p.y, p.z) for p in landmarks)
    return round_landmarks(np.array(list(rows), dtype=np.float32))


def _running_mode(video: bool) -> Any:
    return mpv.RunningMode.VIDEO if video else mpv.RunningMode.IMAGE


class _Base:
    def __init__(self, landmarker: Any, video: bool, wanted: Sequence[str]) -> None:
        self._landmarker = landmarker
        self._video = video
        self.wanted = tuple(wanted)

    def _run(self, rgb: np.ndarray, timestamp_ms: int | None) -> Any:
        image = mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb)
        if self._video:
            assert timestamp_ms is not None
            return self._landmarker.detect_for_video(image, timestamp_ms)
        return self._landmarker.detect(image)

    def _select(self, parts: Parts) -> Parts:
        """Everything this pipeline found; the caller keeps what the session asked for."""
        return parts

    def close(self) -> None:
        self._landmarker.close()


class HolisticDetector(_Base):
    def detect(self, rgb: np.ndarray, timestamp_ms: int | None) -> Parts:
        r = self._run(rgb, timestamp_ms)
        return self._select(
            {
                "pose": _norm(r.pose_landmarks, 5),
                "pose_world": _norm(r.pose_world_landmarks),
                "face": _norm(r.face_landmarks),
                "left_hand": _norm(r.left_hand_landmarks),
                "right_hand": _norm(r.right_hand_landmarks),
                "left_hand_world": _norm(r.left_hand_world_landmarks),
                "right_hand_world": _norm(r.right_hand_world_landmarks),
            }
        )


class FaceDetector(_Base):
    def detect(self, rgb: np.ndarray, timestamp_ms: int | None) -> Parts:
        r = self._run(rgb, timestamp_ms)
        return self._select({"face": _norm(r.face_landmarks[0]) if r.face_landmarks else None})


class PoseDetector(_Base):
    def detect(self, rgb: np.ndarray, timestamp_ms: int | None) -> Parts:
        r = self._run(rgb, timestamp_ms)
        found = bool(r.pose_landmarks)
        return self._select(
            {
                "pose": _norm(r.pose_landmarks[0], 5) if found else None,
                "pose_world": _norm(r.pose_world_landmarks[0]) if found else None,
            }
        )


class HandsDetector(_Base):
    """HandLandmarker labels handedness as seen in a mirrored (selfie) image; Holistic reports
    the person's own side. On a camera image that is not mirrored, the label "Left" is the
    person's right hand, so the labels are swapped here to match Holistic."""

    SWAP: ClassVar[dict[str, str]] = {"Left": "right", "Right": "left"}

    def detect(self, rgb: np.ndarray, timestamp_ms: int | None) -> Parts:
        r = self._run(rgb, timestamp_ms)
        parts: Parts = {}
        scored = sorted(
            zip(r.handedness, r.hand_landmarks, r.hand_world_landmarks, strict=True),
            key=lambda h: -h[0][0].score,
        )
        for handedness, norm, world in scored:
            side = self.SWAP.get(handedness[0].category_name)
            if side is None or f"{side}_hand" in parts:
                continue
            parts[f"{side}_hand"] = _norm(norm)
            parts[f"{side}_hand_world"] = _norm(world)
        return self._select(parts)


def create(pipeline: str, model: Path, wanted: Sequence[str], *, video: bool = True) -> Detector:
    """A fresh landmarker for one session (VIDEO) or one independent image (IMAGE)."""
    base = BaseOptions(model_asset_path=str(model))
    mode = _running_mode(video)
    if pipeline in ("holistic", "holistic_lite"):  # lite: the same graph, lite hand model
        holistic_opts = mpv.HolisticLandmarkerOptions(base_options=base, running_mode=mode)
        return HolisticDetector(
            mpv.HolisticLandmarker.create_from_options(holistic_opts), video, wanted
        )
    if pipeline == "face":
        face_opts = mpv.FaceLandmarkerOptions(base_options=base, running_mode=mode, num_faces=1)
        return FaceDetector(mpv.FaceLandmarker.create_from_options(face_opts), video, wanted)
    if pipeline == "pose":
        pose_opts = mpv.PoseLandmarkerOptions(base_options=base, running_mode=mode, num_poses=1)
        return PoseDetector(mpv.PoseLandmarker.create_from_options(pose_opts), video, wanted)
    if pipeline == "hands":
        hand_opts = mpv.HandLandmarkerOptions(base_options=base, running_mode=mode, num_hands=2)
        return HandsDetector(mpv.HandLandmarker.create_from_options(hand_opts), video, wanted)
    raise ValueError(f"unknown pipeline {pipeline!r}")
