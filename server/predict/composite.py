"""Holistic landmarks for one image without a HolisticLandmarker: stateless, and reusable.

A reused HolisticLandmarker carries state from one image to the next (docs/predict.md). This
detector computes what a *fresh* one would, from parts that keep no state:

1. PoseLandmarker (IMAGE mode, reused): pose and pose world landmarks — the same pose models
   and the same single pass (detector, then landmarks) as the Holistic graph's first image.
2. Face: the region Holistic derives from the pose's face points (server.predict.roi) is cropped
   and given to a FaceLandmarker (IMAGE mode, reused), which runs the same face detector and
   face landmark models on it; its points are mapped back to the image. (Holistic crops the
   landmark region at 2× the detected face, FaceLandmarker at 1.5×: the one difference.)
3. Hands: exactly as the Holistic graph: the region from the pose's wrist, index and pinky,
   refined by the re-crop model, then the hand landmark model, both run here with LiteRT on
   crops made as MediaPipe's CPU image-to-tensor makes them, from the holistic bundle's own
   models; world points are turned by the region's rotation and moved to the pose's wrist.

Nothing is kept between images except the models, so any order of images gives the same
answers. Accuracy against a fresh HolisticLandmarker is measured by bench/predict_accuracy.py
(docs/predict.md).
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Collection, Mapping
from pathlib import Path

os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2
import mediapipe as mp
import numpy as np
from mediapipe.tasks.python import BaseOptions
from mediapipe.tasks.python import vision as mpv

from holistream.landmarks import Array
from holistream.protocol import round_landmarks
from server.predict import roi

Parts = dict[str, Array | None]

FACE_CROP_MIN, FACE_CROP_MAX = 192, 512  # pixels a side of the face crop given to FaceLandmarker
HAND_PRESENCE = 0.5  # Holistic's min_hand_landmarks_confidence (strictly above)
HAND_Z_NORM = 0.4  # the hand landmark graph's normalize_z
SIDES = (
    ("left", roi.LEFT_WRIST, roi.LEFT_PINKY, roi.LEFT_INDEX),
    ("right", roi.RIGHT_WRIST, roi.RIGHT_PINKY, roi.RIGHT_INDEX),
)
EMPTY: Parts = {
    "pose": None, "pose_world": None, "face": None, "left_hand": None, "right_hand": None,
    "left_hand_world": None, "right_hand_world": None,
}


def crop(rgb: np.ndarray, rect: roi.Rect, size: int, border: int) -> np.ndarray:
    """The region as a size×size upright image, as MediaPipe's OpenCV image-to-tensor does it
    (corners by boxPoints, perspective warp, bilinear)."""
    height, width = rgb.shape[:2]
    src = roi.box_points(rect, width, height)
    dst = np.array([[0, size], [0, 0], [size, 0], [size, size]], dtype=np.float32)
    matrix = cv2.getPerspectiveTransform(src, dst)
    return cv2.warpPerspective(rgb, matrix, (size, size), flags=cv2.INTER_LINEAR,
                               borderMode=border)


class _Model:
    """One tflite model on LiteRT, one thread: float RGB in [0, 1], named outputs out."""

    def __init__(self, content: bytes) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self._interpreter = Interpreter(model_content=content, num_threads=1)
        self._interpreter.allocate_tensors()
        detail = self._interpreter.get_input_details()[0]
        self.size = int(detail["shape"][1])
        self._input = detail["index"]
        self._outputs = {d["name"]: d["index"] for d in self._interpreter.get_output_details()}

    def __call__(self, rgb: np.ndarray) -> dict[str, np.ndarray]:
        # Scaled straight into the input tensor (no float copy of the crop to hand over); the
        # view is gone before invoke(), as LiteRT requires. get_tensor() returns copies.
        np.multiply(rgb, np.float32(1 / 255), out=self._interpreter.tensor(self._input)()[0],
                    casting="unsafe")
        self._interpreter.invoke()
        return {name: self._interpreter.get_tensor(i).reshape(-1)
                for name, i in self._outputs.items()}


class CompositeHolistic:
    """Detector interface of server.workers.pipelines: detect(rgb, None) → wire parts."""

    def __init__(self, models: Mapping[str, Path]) -> None:
        mode = mpv.RunningMode.IMAGE
        self._pose = mpv.PoseLandmarker.create_from_options(mpv.PoseLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(models["pose"])),
            running_mode=mode, num_poses=1))
        self._face = mpv.FaceLandmarker.create_from_options(mpv.FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(models["face"])),
            running_mode=mode, num_faces=1))
        with zipfile.ZipFile(models["holistic"]) as bundle:
            self._recrop = _Model(bundle.read("hand_roi_refinement.tflite"))
            self._hand = _Model(bundle.read("hand_landmarks_detector.tflite"))

    def detect(self, rgb: np.ndarray, timestamp_ms: int | None = None,
               wanted: Collection[str] | None = None) -> Parts:
        """Every part, or those in `wanted` (the face and each hand are looked for only when
        asked for: they never change the other parts)."""
        height, width = rgb.shape[:2]
        found = self._pose.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb))
        if not found.pose_landmarks:
            return dict(EMPTY)
        pose = np.array([(p.x, p.y, p.z, p.visibility or 0.0, p.presence or 0.0)
                         for p in found.pose_landmarks[0]], dtype=np.float64)
        world = np.array([(p.x, p.y, p.z) for p in found.pose_world_landmarks[0]], np.float64)
        parts: Parts = dict(EMPTY)
        parts["pose"], parts["pose_world"] = round_landmarks(pose), round_landmarks(world)
        if wanted is None or "face" in wanted:
            parts["face"] = self._face_part(rgb, pose, width, height)
        for side, wrist, pinky, index in SIDES:
            names = (f"{side}_hand", f"{side}_hand_world")
            if wanted is None or not set(names).isdisjoint(wanted):
                hand = self._hand_part(rgb, pose, world, (wrist, pinky, index), width, height)
                parts[names[0]], parts[names[1]] = hand
        return parts

    def _face_part(self, rgb: np.ndarray, pose: np.ndarray, width: int,
                   height: int) -> Array | None:
        rect = roi.face_roi_from_pose(pose, width, height)
        if not roi.usable(rect, width, height):
            return None
        side = int(np.clip(round(rect.w * width), FACE_CROP_MIN, FACE_CROP_MAX))
        face_crop = np.ascontiguousarray(crop(rgb, rect, side, cv2.BORDER_CONSTANT))
        found = self._face.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=face_crop))
        if not found.face_landmarks:
            return None
        points = np.array([(p.x, p.y, p.z) for p in found.face_landmarks[0]], np.float64)
        return round_landmarks(roi.from_crop(points, rect, width, height))

    def _hand_part(self, rgb: np.ndarray, pose: np.ndarray, world: np.ndarray,
                   indices: tuple[int, int, int], width: int,
                   height: int) -> tuple[Array | None, Array | None]:
        wrist, pinky, index = indices
        if not pose[wrist, 3] > roi.HAND_VISIBILITY:
            return None, None
        rect = roi.hand_roi_from_pose(pose[wrist], pose[pinky], pose[index], width, height)
        if not roi.usable(rect, width, height):
            return None, None
        out = self._recrop(crop(rgb, rect, self._recrop.size, cv2.BORDER_REPLICATE))
        guide = roi.from_crop(out["output_crop"][:4].reshape(2, 2) / self._recrop.size, rect,
                              width, height)
        rect = roi.hand_roi_from_recrop(guide[0], guide[1], width, height)
        if not roi.usable(rect, width, height):
            return None, None
        out = self._hand(crop(rgb, rect, self._hand.size, cv2.BORDER_REPLICATE))
        if not float(out["Identity_1"][0]) > HAND_PRESENCE:
            return None, None
        points = out["Identity"].reshape(21, 3).astype(np.float64)
        points /= (self._hand.size, self._hand.size, self._hand.size * HAND_Z_NORM)
        image_points = roi.from_crop_normalized(points, rect)
        hand_world = roi.rotate_world(out["Identity_3"].reshape(21, 3), rect.rotation)
        hand_world = roi.align_to_wrist(hand_world, world[wrist])
        return round_landmarks(image_points), round_landmarks(hand_world)

    def close(self) -> None:
        self._pose.close()
        self._face.close()

