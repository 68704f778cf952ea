"""Turn a video file into a Y4M clip that Chromium's fake camera can play.

Chromium's ``--use-file-for-fake-video-capture`` reads uncompressed YUV4MPEG2 only, and only
4:2:0: it refuses 4:4:4 and mono, and without a frame rate (``F`` tag) it delivers no frame.
"""

from __future__ import annotations

from pathlib import Path

import cv2

__all__ = ["avi_to_y4m"]


def avi_to_y4m(
    source: Path,
    target: Path,
    *,
    size: tuple[int, int] = (640, 480),
    fps: int = 30,
    max_frames: int | None = None,
) -> Path:
    """Write ``source`` (anything OpenCV can read) as 4:2:0 Y4M to ``target``.

    Frames are resized to ``size`` (width, height; both even). Returns ``target``.
    """
    width, height = size
    if width % 2 or height % 2:
        raise ValueError(f"4:2:0 needs an even width and height, got {width}x{height}")
    capture = cv2.VideoCapture(str(source))
    if not capture.isOpened():
        raise OSError(f"OpenCV cannot open {source}")
    frames = 0
    try:
        with target.open("wb") as out:
            out.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode("ascii"))
            while max_frames is None or frames < max_frames:
                ok, bgr = capture.read()
                if not ok:
                    break
                if (bgr.shape[1], bgr.shape[0]) != (width, height):
                    bgr = cv2.resize(bgr, (width, height), interpolation=cv2.INTER_AREA)
                # I420: the full Y plane, then U and V at half resolution, as Y4M's 4:2:0 wants.
                i420 = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420)
                out.write(b"FRAME\n")
                out.write(i420.tobytes())
                frames += 1
    finally:
        capture.release()
    if frames == 0:
        target.unlink(missing_ok=True)
        raise ValueError(f"no frame could be read from {source}")
    return target
