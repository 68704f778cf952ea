"""Image sniffing and decoding with the limits checked before any pixel is decoded.

Runs in the worker processes. Pillow reads the header lazily, so a decompression bomb is refused
from its declared size; a truncated or corrupt file fails loudly instead of decoding to grey.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps

# MPO (phones' multi-picture JPEG: the photo, then depth or preview images) is a JPEG whose
# first image is the photo; Pillow opens it on that first frame, which is all we decode.
FORMATS = {"JPEG": "jpeg", "MPO": "jpeg", "PNG": "png", "WEBP": "webp"}
RGB = npt.NDArray[np.uint8]


class ImageError(Exception):
    """A frame that cannot become pixels; `code` is the protocol's error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def sniff(data: bytes) -> str:
    """The image format from its magic bytes (cheap; before Pillow sees the data)."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    raise ImageError("unsupported_image", "the image is not JPEG, PNG or WebP")


def decode_rgb(
    data: bytes, *, max_pixels: int, max_side: int, exif_orientation: bool = True
) -> RGB:
    """Decode to a contiguous H×W×3 uint8 RGB array, upright (the EXIF Orientation a phone
    writes instead of rotating pixels is applied), or raise ImageError."""
    sniff(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image: Image.Image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels or max(width, height) > max_side:
                raise ImageError(
                    "image_too_large",
                    f"{width}×{height} exceeds the limit ({max_pixels} pixels, {max_side} a side)",
                )
            if image.format not in FORMATS:
                raise ImageError("unsupported_image", "the image is not JPEG, PNG or WebP")
            image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError("image_too_large", str(exc)) from None
    except ImageError:
        raise
    except (OSError, ValueError, SyntaxError):
        raise ImageError("undecodable", "cannot decode the image (corrupt or truncated)") from None
    if exif_orientation:
        image = _upright(image)
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.ascontiguousarray(np.asarray(image, dtype=np.uint8))


def _upright(image: Image.Image) -> Image.Image:
    """The image as displayed; a broken EXIF block leaves it as stored rather than refusing an
    image whose pixels are fine."""
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # Pillow's EXIF parsing raises many kinds on junk tags
        return image
