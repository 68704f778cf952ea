"""How much memory this instance may take: what the machine has free, capped by its cgroup's
memory limit (a container's `--memory`, a pod's `resources.limits.memory`) minus what the cgroup
already uses. Without the cap, an instance in a 2 GiB container on a 64 GiB node would budget
for the node and be killed by the kernel long before admission refused anything.

- cgroup v2: ``memory.max`` (``max`` = no limit), ``memory.current``.
- cgroup v1: ``memory.limit_in_bytes`` (a huge number = no limit), ``memory.usage_in_bytes``.
"""

from __future__ import annotations

from pathlib import Path

from server.cpus import cgroup_levels, read_or_none

_UNLIMITED = 1 << 60  # v1 reports "no limit" as a page-rounded LONG_MAX


def parse_limit(text: str) -> int | None:
    """A memory limit file's content → bytes, or None when unlimited or unreadable."""
    value = text.strip()
    if value in ("", "max"):
        return None
    try:
        limit = int(value)
    except ValueError:
        return None
    return limit if 0 < limit < _UNLIMITED else None


def cgroup_memory_room(root: Path = Path("/")) -> int | None:
    """Bytes left under the tightest cgroup memory limit (limit − usage at that level), or None
    when no level has a limit."""
    rooms: list[int] = []
    for version, level in cgroup_levels("memory", root):
        names = ("memory.max", "memory.current") if version == 2 else (
            "memory.limit_in_bytes", "memory.usage_in_bytes")
        text = read_or_none(level / names[0])
        limit = parse_limit(text) if text is not None else None
        if limit is None:
            continue
        used = read_or_none(level / names[1])
        try:
            usage = int(used.strip()) if used else 0
        except ValueError:
            usage = 0
        rooms.append(max(limit - usage, 0))
    return min(rooms) if rooms else None


def usable_memory_bytes(available: int, *, room: int | None = None,
                        root: Path = Path("/")) -> int:
    """`available` (the machine's free memory) capped by the cgroup's room (read if not given)."""
    if room is None:
        room = cgroup_memory_room(root)
    return available if room is None else min(available, room)
