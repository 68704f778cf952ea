"""Frame sources: a video, an image directory or one image, JPEG-encoded once up front.

Encoding per send would cost more CPU than the WebSocket traffic itself and make the generator
the bottleneck long before the server; every client reuses the same encoded bytes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy.typing as npt

REPO = Path(__file__).resolve().parent.parent
DEFAULT_SOURCES = (
    REPO / "tests" / "fixtures" / "messi_pan_640x480.avi",
    REPO / "server" / "fixtures" / "messi5.jpg",  # ships with the package
)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
MAX_FRAMES = 600  # a few seconds of distinct frames is plenty and bounds memory

Image = npt.NDArray[Any]  # BGR uint8, as OpenCV reads it


def default_source() -> Path | None:
    return next((p for p in DEFAULT_SOURCES if p.exists()), None)


def _video_frames(path: Path, limit: int) -> Iterator[Image]:
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ValueError(f"cannot open video {path}")
    try:
        for _ in range(limit):
            ok, frame = cap.read()
            if not ok:
                break
            yield frame
    finally:
        cap.release()


def _image(path: Path) -> Image:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"cannot read image {path}")
    return image


def _resize(image: Image, size: tuple[int, int] | None) -> Image:
    if size is None or (image.shape[1], image.shape[0]) == size:
        return image
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def encode_jpeg(image: Image, quality: int = 80) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


def load_frames(
    source: str | Path | None = None,
    *,
    size: tuple[int, int] | None = None,
    quality: int = 80,
    limit: int = MAX_FRAMES,
) -> list[bytes]:
    """JPEG bytes of every frame of `source` (up to `limit`), optionally resized to `size` (w, h).

    A directory contributes its images in name order. Raises ValueError when nothing usable.
    """
    path = Path(source) if source is not None else default_source()
    if path is None:
        raise ValueError("no --source given and no default fixture found")
    if not path.exists():
        raise ValueError(f"source {path} does not exist")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        images: Iterator[Image] = (_image(p) for p in files[:limit])
    elif path.suffix.lower() in IMAGE_SUFFIXES:
        images = iter([_image(path)])
    else:
        images = _video_frames(path, limit)
    frames = [encode_jpeg(_resize(img, size), quality) for img in images]
    if not frames:
        raise ValueError(f"no frames in {path}")
    return frames


def parse_size(text: str | None) -> tuple[int, int] | None:
    """'640x480' -> (640, 480)."""
    if not text:
        return None
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"bad size {text!r}: use WIDTHxHEIGHT, e.g. 640x480") from None
    if not (16 <= w <= 8192 and 16 <= h <= 8192):
        raise ValueError(f"bad size {text!r}: sides must be within 16..8192")
    return w, h
