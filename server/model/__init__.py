"""Model provisioning: find, download or build the MediaPipe bundles holistream runs on.

mediapipe 1.2.x ships no model files. For each bundle the order is: an explicit path; a
cached file whose recorded SHA-256 matches; the official download (short timeout, checksum
and self-check); else an offline build from the legacy ``mediapipe==0.10.21`` wheel on PyPI
(self-checked). Nothing is trusted into the cache before it is verified, and a failed or
interrupted attempt leaves no partial file behind (see ``cache``).

Importing this package is cheap and has no side effects: mediapipe is imported only when a
bundle is built or checked.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

from .cache import install, locked, sha256_file, staging, trusted_sha256
from .errors import ModelError

if TYPE_CHECKING:
    from .build import BundleBuilder

__all__ = [
    "BUNDLES",
    "ModelError",
    "Provisioned",
    "default_cache_dir",
    "provision_all",
    "resolve_model",
]

# Bundle name -> file name in the cache (the official names).
BUNDLES: Mapping[str, str] = MappingProxyType(
    {
        "holistic": "holistic_landmarker.task",
        "holistic_lite": "holistic_landmarker_lite.task",  # lite hand model (not official)
        "face": "face_landmarker.task",
        "pose": "pose_landmarker.task",
        "hands": "hand_landmarker.task",
    }
)

Log = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class Provisioned:
    """One resolved bundle and how it was obtained."""

    name: str
    path: Path
    sha256: str
    source: str  # "explicit" | "cache" | "download" | "built"
    counts: dict[str, int] | None = None  # self-check result, if it ran


def default_cache_dir() -> Path:
    """``$HOLISTREAM_CACHE_DIR``, else ``$XDG_CACHE_HOME/holistream/models``, else under ~/.cache.

    One well-known place, so the server, the CLI and the tests of every checkout share bundles.
    """
    if env := os.environ.get("HOLISTREAM_CACHE_DIR"):
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "holistream" / "models"


class _Legacy:
    """Fetches and reads the legacy wheel at most once, and only if a build is needed."""

    def __init__(self, wheel_dir: Path | None, log: Log) -> None:
        self._wheel_dir = wheel_dir
        self._log = log
        self._builder: BundleBuilder | None = None

    def write(self, name: str, dest: Path) -> None:
        from .build import BundleBuilder
        from .wheel import default_wheel_dir, fetch_wheel, load_legacy

        if self._builder is None:
            wheel = fetch_wheel(self._wheel_dir or default_wheel_dir(), log=self._log)
            self._builder = BundleBuilder(load_legacy(wheel))
        self._builder.write(name, dest)


def _provision(
    name: str,
    *,
    explicit: Path | None,
    cache_dir: Path | None,
    allow_download: bool,
    allow_build: bool,
    force: bool,
    legacy: _Legacy,
    log: Log,
) -> Provisioned:
    if name not in BUNDLES:
        raise ModelError(f"unknown model bundle {name!r}; known: {', '.join(BUNDLES)}")
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise ModelError(f"model file {path} does not exist (given for the {name} bundle)")
        try:
            return Provisioned(name, path, sha256_file(path), "explicit")
        except OSError as e:
            raise ModelError(f"cannot read model file {path}: {e}") from e
    dest = (cache_dir or default_cache_dir()) / BUNDLES[name]
    # A verified bundle needs no lock (installs are atomic): a read-only cache (a container
    # image, a read-only root file system) serves as it is.
    if not force and (digest := trusted_sha256(dest)):
        return Provisioned(name, dest, digest, "cache")
    with locked(dest):
        if not force:
            if digest := trusted_sha256(dest):
                return Provisioned(name, dest, digest, "cache")
            if dest.exists():
                log(f"{name}: ignoring cached {dest} (checksum missing or wrong)")
        counts: dict[str, int] = {}

        def verify(staged: Path) -> None:
            from .selfcheck import self_check  # imports mediapipe: only when needed

            counts.update(self_check(name, staged))

        from .download import OFFICIAL, fetch_official

        if allow_download and name in OFFICIAL:  # holistic_lite exists only as a local build

            try:
                digest = fetch_official(name, dest, verify=verify)
                return Provisioned(name, dest, digest, "download", dict(counts))
            except ModelError as e:
                log(f"{name}: official download failed ({e}); will build offline")
        if not allow_build:
            raise ModelError(
                f"no verified {BUNDLES[name]} in {dest.parent}, and building is disabled"
            )
        log(f"{name}: building {dest.name} from the mediapipe 0.10.21 wheel")
        with staging(dest) as tmp:
            legacy.write(name, tmp)
            verify(tmp)
            digest = sha256_file(tmp)
            install(tmp, dest, digest)
        return Provisioned(name, dest, digest, "built", dict(counts))


def resolve_model(
    name: str = "holistic",
    *,
    explicit: Path | None = None,
    cache_dir: Path | None = None,
    allow_download: bool = True,
    allow_build: bool = True,
    force: bool = False,
    wheel_dir: Path | None = None,
    log: Log = print,
) -> Path:
    """Path of a verified bundle ``name`` (see module doc for the order). Raises ModelError."""
    return _provision(
        name,
        explicit=explicit,
        cache_dir=cache_dir,
        allow_download=allow_download,
        allow_build=allow_build,
        force=force,
        legacy=_Legacy(wheel_dir, log),
        log=log,
    ).path


def provision_all(
    *,
    explicit: Path | None = None,
    cache_dir: Path | None = None,
    allow_download: bool = True,
    allow_build: bool = True,
    force: bool = False,
    only: Iterable[str] | None = None,
    wheel_dir: Path | None = None,
    log: Log = print,
) -> list[Provisioned]:
    """Resolve every bundle (``only`` narrows it) and self-check each one.

    ``explicit`` overrides the holistic bundle only. Builds share one read of the wheel.
    """
    from .selfcheck import self_check

    names = list(BUNDLES) if only is None else list(only)
    legacy = _Legacy(wheel_dir, log)
    results = []
    for name in names:
        got = _provision(
            name,
            explicit=explicit if name == "holistic" else None,
            cache_dir=cache_dir,
            allow_download=allow_download,
            allow_build=allow_build,
            force=force,
            legacy=legacy,
            log=log,
        )
        if got.counts is None:
            got = dataclasses.replace(got, counts=self_check(name, got.path))
        results.append(got)
    return results
