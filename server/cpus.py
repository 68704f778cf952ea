"""How many CPUs this instance may really use: the minimum of its CPU affinity, its cgroup's
CPU quota (a container's or pod's `--cpus` / `resources.limits.cpu`) and an explicit setting.

Without this, N instances or pods on one box each budget for the whole box and together promise
N times what it has. The parsers are pure functions over file contents; `cgroup_cpu_limit` reads
the files under a root directory (``/`` in production, a temporary tree in tests).

- cgroup v2: ``cpu.max`` holds ``"$MAX $PERIOD"`` (``max`` = no limit).
- cgroup v1: ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (quota -1 = no limit).

A limit set on any ancestor of the process's cgroup applies too, so every level from the
process's cgroup up to the hierarchy's mount root is read and the smallest quota wins.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath


@dataclass(frozen=True, slots=True)
class CgroupMount:
    version: int  # 1 or 2
    root: str  # the path inside the hierarchy that is mounted (mountinfo field 4)
    mountpoint: str


def parse_cpu_max(text: str) -> float | None:
    """cgroup v2 ``cpu.max`` → CPUs, or None when unlimited or unreadable."""
    fields = text.split()
    if not fields or fields[0] == "max":
        return None
    try:
        quota = int(fields[0])
        period = int(fields[1]) if len(fields) > 1 else 100_000
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def parse_cfs(quota_text: str, period_text: str) -> float | None:
    """cgroup v1 ``cpu.cfs_quota_us`` and ``cpu.cfs_period_us`` → CPUs, or None."""
    try:
        quota, period = int(quota_text.strip()), int(period_text.strip())
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def parse_mountinfo(text: str, controller: str = "cpu") -> list[CgroupMount]:
    """The cgroup2 mounts and the v1 mounts that carry `controller`."""
    mounts = []
    for line in text.splitlines():
        pre, sep, post = line.partition(" - ")
        fields, tail = pre.split(), post.split()
        if not sep or len(fields) < 5 or len(tail) < 3:
            continue
        if tail[0] == "cgroup2":
            mounts.append(CgroupMount(2, fields[3], fields[4]))
        elif tail[0] == "cgroup" and controller in tail[2].split(","):
            mounts.append(CgroupMount(1, fields[3], fields[4]))
    return mounts


def parse_proc_cgroup(text: str, controller: str = "cpu") -> dict[int, str]:
    """``/proc/self/cgroup`` → {2: unified path, 1: path in the v1 `controller` hierarchy}."""
    paths: dict[int, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hid, controllers, path = parts
        if hid == "0" and controllers == "":
            paths[2] = path
        elif controller in controllers.split(","):
            paths[1] = path
    return paths


def _levels(mount: CgroupMount, path: str, root: Path) -> list[Path]:
    """Directories from the process's cgroup up to the mount point, deepest first."""
    base = root / mount.mountpoint.lstrip("/")
    inner = PurePosixPath(path)
    mounted = PurePosixPath(mount.root)
    try:
        rel = inner.relative_to(mounted)
    except ValueError:  # not below the mounted root (a cgroup namespace): the mount is ours
        rel = PurePosixPath(".")
    levels = [base / rel]
    while rel != PurePosixPath(".") and rel != rel.parent:
        rel = rel.parent
        levels.append(base / rel)
    return levels


def cgroup_levels(controller: str, root: Path = Path("/")) -> list[tuple[int, Path]]:
    """(version, directory) of every cgroup level of this process for `controller`, from its
    own cgroup up to each hierarchy's mount point."""
    mountinfo = read_or_none(root / "proc/self/mountinfo")
    own = read_or_none(root / "proc/self/cgroup")
    if mountinfo is None or own is None:
        return []
    paths = parse_proc_cgroup(own, controller)
    return [
        (mount.version, level)
        for mount in parse_mountinfo(mountinfo, controller)
        if (path := paths.get(mount.version)) is not None
        for level in _levels(mount, path, root)
    ]


def read_or_none(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def cgroup_cpu_limit(root: Path = Path("/")) -> float | None:
    """The smallest CPU quota over the process's cgroups (v1 and v2), or None if unlimited."""
    limits: list[float] = []
    for version, level in cgroup_levels("cpu", root):
        if version == 2:
            text = read_or_none(level / "cpu.max")
            limit = parse_cpu_max(text) if text is not None else None
        else:
            quota = read_or_none(level / "cpu.cfs_quota_us")
            period = read_or_none(level / "cpu.cfs_period_us")
            limit = parse_cfs(quota, period) if quota and period else None
        if limit is not None:
            limits.append(limit)
    return min(limits) if limits else None


def usable_cpus(
    explicit: float | None = None,
    *,
    affinity: int | None = None,
    quota: float | None = None,
    root: Path = Path("/"),
) -> float:
    """CPUs this instance may use: the minimum of the explicit setting, the affinity mask and
    the cgroup quota (each read when not given). Never below 0.1."""
    if affinity is None:
        affinity = len(os.sched_getaffinity(0))
    if quota is None:
        quota = cgroup_cpu_limit(root)
    candidates = [float(affinity)]
    if quota is not None:
        candidates.append(quota)
    if explicit is not None and explicit > 0:
        candidates.append(float(explicit))
    return max(min(candidates), 0.1)


def default_workers(cpus: float) -> int:
    """Inference workers for this many CPUs: one more than whole cores from two cores up
    (sessions are pinned to a worker, and with one per core a whole session would not fit
    beside another in a worker's share); a single worker below two cores, where one more
    would split one core into bins too small for a holistic session."""
    cores = max(1, math.floor(cpus + 0.01))
    return cores + 1 if cores >= 2 else 1
