"""Fetch an official MediaPipe bundle over HTTP(S), bounded and verified, into the cache.

Only ``urllib`` is used. A download is bounded by a socket timeout, an overall deadline and a
size limit, streamed into a temp file beside the destination, checked against Content-Length
and the expected SHA-256 (where one is known), optionally verified further (the self-check),
and only then moved into place with its ``.sha256``.

Published checksums: Google publishes none next to the model URLs. For Holistic we pin the
SHA-256 that MediaPipe's own build (``third_party/external_files.bzl``) records for
``holistic_landmarker.task``, which a third-party project also reports for the documented
download. For face, pose and hands no checksum could be found, so those downloads are
trusted only after the self-check passes on them.
"""

from __future__ import annotations

import hashlib
import http.client
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .cache import install, staging
from .errors import ModelError

_BASE = "https://storage.googleapis.com/mediapipe-models"
_MIB = 1 << 20
DEFAULT_TIMEOUT_S = 5.0
_CHUNK = 1 << 16


@dataclass(frozen=True)
class Official:
    """Where MediaPipe publishes a bundle and what we know to check it against."""

    url: str
    sha256: str | None  # None: no published digest; the self-check is the verification
    max_bytes: int = 64 * _MIB


OFFICIAL: dict[str, Official] = {
    "holistic": Official(
        f"{_BASE}/holistic_landmarker/holistic_landmarker/float16/latest/holistic_landmarker.task",
        "e2dab61191e2dcd0a15f943d8e3ed1dce13c82dfa597b9dd39f562975a50c3f8",
    ),
    "face": Official(
        f"{_BASE}/face_landmarker/face_landmarker/float16/latest/face_landmarker.task", None
    ),
    "pose": Official(
        f"{_BASE}/pose_landmarker/pose_landmarker_full/float16/latest/pose_landmarker_full.task",
        None,
    ),
    "hands": Official(
        f"{_BASE}/hand_landmarker/hand_landmarker/float16/latest/hand_landmarker.task", None
    ),
}


def _stream(url: str, dest: Path, *, timeout: float, deadline: float, max_bytes: int) -> str:
    """Write the body of ``url`` to ``dest``; return its SHA-256. Raises ModelError."""
    if not url.startswith(("https://", "http://")):
        raise ModelError(f"refusing to download from non-HTTP URL {url}")
    request = urllib.request.Request(url, headers={"User-Agent": "holistream-model-fetch"})
    digest = hashlib.sha256()
    received = 0
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp, dest.open("wb") as out:
            header = resp.headers.get("Content-Length")
            length = int(header) if header is not None and header.isdigit() else None
            if length is not None and length > max_bytes:
                raise ModelError(f"{url}: {length} bytes exceeds the {max_bytes}-byte limit")
            while chunk := resp.read(_CHUNK):
                received += len(chunk)
                if received > max_bytes:
                    raise ModelError(f"{url}: body exceeds the {max_bytes}-byte limit")
                if time.monotonic() > deadline:
                    raise ModelError(f"{url}: download did not finish in time")
                digest.update(chunk)
                out.write(chunk)
    except urllib.error.HTTPError as e:
        raise ModelError(f"{url}: HTTP {e.code} {e.reason}") from e
    except urllib.error.URLError as e:
        raise ModelError(f"{url}: {e.reason}") from e
    except http.client.IncompleteRead as e:
        raise ModelError(f"{url}: truncated after {received + len(e.partial)} bytes") from e
    except (http.client.HTTPException, OSError) as e:  # TimeoutError, resets, bad status
        raise ModelError(f"{url}: {type(e).__name__}: {e or 'timed out'}") from e
    if length is not None and received != length:
        raise ModelError(f"{url}: truncated, got {received} of {length} bytes")
    return digest.hexdigest()


def fetch(
    url: str,
    dest: Path,
    *,
    sha256: str | None,
    timeout: float = DEFAULT_TIMEOUT_S,
    total_timeout: float = 300.0,
    max_bytes: int = 64 * _MIB,
    verify: Callable[[Path], object] | None = None,
) -> str:
    """Download ``url`` to ``dest`` atomically with its ``.sha256``; return the digest.

    ``verify(staged_path)`` runs on the complete temp file before it is installed and should
    raise ModelError to reject it. On any failure nothing is left in ``dest``'s directory.
    """
    deadline = time.monotonic() + total_timeout
    with staging(dest) as tmp:
        digest = _stream(url, tmp, timeout=timeout, deadline=deadline, max_bytes=max_bytes)
        if sha256 is not None and digest != sha256.lower():
            raise ModelError(f"{url}: SHA-256 mismatch, got {digest}, expected {sha256}")
        if verify is not None:
            verify(tmp)
        install(tmp, dest, digest)
    return digest


def fetch_official(
    name: str,
    dest: Path,
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
    verify: Callable[[Path], object] | None = None,
) -> str:
    """Download the official bundle ``name`` (see ``OFFICIAL``) to ``dest``."""
    if name not in OFFICIAL:
        raise ModelError(f"no official download for bundle {name!r}")
    src = OFFICIAL[name]
    return fetch(
        src.url, dest, sha256=src.sha256, timeout=timeout, max_bytes=src.max_bytes, verify=verify
    )
