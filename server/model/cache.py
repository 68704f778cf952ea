"""The on-disk cache: checksummed files, atomic installs and a per-file lock.

A cached bundle is trusted only when ``<file>.sha256`` (``sha256sum`` format) exists beside it
and matches its content. A file is installed by writing a temp file in the same directory,
verifying it, ``os.replace``-ing it into place and only then writing the checksum, so a crash
at any point leaves either the old state or an untrusted file, never a trusted partial one.
The checksum guards against truncation and corruption, not against someone who can write to
the cache directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import ModelError

PART_SUFFIX = ".part"
_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, streamed so big bundles do not sit in memory twice."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sidecar(path: Path) -> Path:
    """Where the checksum of ``path`` is recorded."""
    return path.with_name(path.name + ".sha256")


def recorded_sha256(path: Path) -> str | None:
    """The digest recorded beside ``path``, or None if missing or malformed."""
    try:
        text = sidecar(path).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError):
        return None
    fields = text.split()
    if not fields or len(fields[0]) != 64:
        return None
    try:
        int(fields[0], 16)
    except ValueError:
        return None
    return fields[0].lower()


def trusted_sha256(path: Path) -> str | None:
    """The file's digest if it exists and matches its recorded checksum, else None."""
    expected = recorded_sha256(path)
    if expected is None or not path.is_file():
        return None
    try:
        actual = sha256_file(path)
    except OSError:
        return None
    return actual if actual == expected else None


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=PART_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o644)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def install(staged: Path, dest: Path, digest: str) -> None:
    """Move a verified staged file into place, then record its checksum (in that order)."""
    try:
        os.chmod(staged, 0o644)  # mkstemp makes 0600; the cache is shared by the user's processes
        os.replace(staged, dest)
        _write_atomic(sidecar(dest), f"{digest}  {dest.name}\n".encode("ascii"))
    except OSError as e:
        raise ModelError(f"cannot install {dest}: {e}") from e


@contextlib.contextmanager
def staging(dest: Path) -> Iterator[Path]:
    """A fresh temp path beside ``dest``; removed on exit unless it was installed."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=PART_SUFFIX, dir=dest.parent)
    except OSError as e:
        raise ModelError(f"cannot write to model cache {dest.parent}: {e}") from e
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


@contextlib.contextmanager
def locked(dest: Path) -> Iterator[None]:
    """Serialise provisioning of one cache file across processes sharing the cache.

    Without it two servers starting together would both build the same bundle; with it the
    second waits and then finds the first one's result in the cache.
    """
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(dest.parent / f".{dest.name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise ModelError(f"cannot write to model cache {dest.parent}: {e}") from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
