"""CPU capacity from what an instance may really use: cgroup quota (v1 and v2, parsed from real
files in a temporary tree), CPU affinity and --cpus; two instances sharing this box never promise
more sessions than it holds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nginx import run_local
from server.config import Config
from server.cpus import (
    cgroup_cpu_limit,
    default_workers,
    parse_cfs,
    parse_cpu_max,
    parse_mountinfo,
    parse_proc_cgroup,
    usable_cpus,
)
from server.memory import cgroup_memory_room, parse_limit, usable_memory_bytes
from server.sessions.admission import DEFAULT_COSTS

V2_MOUNTINFO = "35 24 0:30 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
V1_MOUNTINFO = (
    "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
    "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct\n"
    "33 31 0:30 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset\n"
    "34 31 0:31 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n"
)


def _tree(tmp: Path, mountinfo: str, cgroup: str, files: dict[str, str]) -> Path:
    (tmp / "proc/self").mkdir(parents=True)
    (tmp / "proc/self/mountinfo").write_text(mountinfo)
    (tmp / "proc/self/cgroup").write_text(cgroup)
    for rel, text in files.items():
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / rel).write_text(text)
    return tmp


def test_parsers() -> None:
    assert parse_cpu_max("max 100000\n") is None
    assert parse_cpu_max("150000 100000\n") == 1.5
    assert parse_cpu_max("50000") == 0.5
    assert parse_cpu_max("") is None and parse_cpu_max("x y") is None
    assert parse_cfs("-1\n", "100000\n") is None
    assert parse_cfs("200000\n", "100000\n") == 2.0
    assert parse_cfs("junk", "100000") is None
    mounts = parse_mountinfo(V1_MOUNTINFO)
    assert [(m.version, m.mountpoint) for m in mounts] == [
        (1, "/sys/fs/cgroup/cpu,cpuacct"), (2, "/sys/fs/cgroup/unified")]
    assert parse_proc_cgroup("12:cpu,cpuacct:/pod/a\n3:cpuset:/\n0::/pod/a\n") == {
        1: "/pod/a", 2: "/pod/a"}


def test_cgroup_v2_pod_limit_and_ancestors(tmp_path: Path) -> None:
    # The pod's limit (2 CPUs) is on the parent; the container's own (1.5) is smaller: it wins.
    root = _tree(tmp_path, V2_MOUNTINFO, "0::/kubepods/pod1/ctr\n", {
        "sys/fs/cgroup/kubepods/cpu.max": "max 100000\n",
        "sys/fs/cgroup/kubepods/pod1/cpu.max": "200000 100000\n",
        "sys/fs/cgroup/kubepods/pod1/ctr/cpu.max": "150000 100000\n",
    })
    assert cgroup_cpu_limit(root) == 1.5
    (root / "sys/fs/cgroup/kubepods/pod1/ctr/cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_limit(root) == 2.0


def test_cgroup_v2_namespaced_container(tmp_path: Path) -> None:
    # Inside a container with its own cgroup namespace the process sees "/" and its limit
    # at the mount point itself.
    root = _tree(tmp_path, V2_MOUNTINFO, "0::/\n", {"sys/fs/cgroup/cpu.max": "100000 100000\n"})
    assert cgroup_cpu_limit(root) == 1.0


def test_cgroup_v1_quota(tmp_path: Path) -> None:
    root = _tree(tmp_path, V1_MOUNTINFO, "4:cpu,cpuacct:/docker/abc\n0::/\n", {
        "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us": "-1\n",
        "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us": "100000\n",
        "sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "50000\n",
        "sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n",
    })
    assert cgroup_cpu_limit(root) == 0.5
    # No quota anywhere, or no cgroup files at all: unlimited.
    (root / "sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpu_limit(root) is None
    assert cgroup_cpu_limit(tmp_path / "nothing") is None


def test_the_smallest_wins(tmp_path: Path) -> None:
    assert usable_cpus(None, affinity=8, quota=None, root=tmp_path) == 8
    assert usable_cpus(None, affinity=8, quota=2.5, root=tmp_path) == 2.5
    assert usable_cpus(1.0, affinity=8, quota=2.5, root=tmp_path) == 1.0
    assert usable_cpus(4.0, affinity=2, quota=None, root=tmp_path) == 2
    assert usable_cpus(0.0, affinity=2, quota=None, root=tmp_path) == 2  # 0 = not set
    assert [default_workers(c) for c in (0.5, 1, 1.5, 2, 3.9, 4)] == [1, 1, 1, 3, 4, 5]
    assert Config(cpus=1).workers == 1 and Config(cpus=1, workers=2).workers == 2
    assert Config(cpus=1000).cpus == len(os.sched_getaffinity(0))
    with pytest.raises(ValueError):
        Config(log_format="xml")


def test_run_local_shares_the_box() -> None:
    cores = len(os.sched_getaffinity(0))
    assert run_local.cpu_share(2) * 2 == pytest.approx(cores, abs=0.01)


def _promised_ms(capacity: dict[str, int]) -> dict[str, float]:
    """CPU ms per second the instance's advertised capacity stands for, per pipeline: that many
    sessions, each granted at least the floor rate."""
    floor = Config().floor_fps
    return {p: n * floor * DEFAULT_COSTS[p].ms_per_frame for p, n in capacity.items()}


@pytest.mark.slow
def test_two_instances_with_shares_never_promise_more_than_the_box(server_factory) -> None:
    """Two instances, each given half the box (--cpus, HOLISTREAM_CPUS), together advertise
    (and admit) no more than the box's cores; without their shares each would claim the whole
    box (cpus = all cores), and the two would promise twice what it has."""
    cores = len(os.sched_getaffinity(0))
    flags = ("--no-calibrate", "--max-sessions", "100")  # default costs: the box is arithmetic
    share = str(cores / 2)
    a = server_factory(*flags, "--cpus", share, name="share-a", ready=False)
    b = server_factory(*flags, name="share-b", ready=False, env={"HOLISTREAM_CPUS": share})
    for srv in (a, b):
        srv.wait_ready()
    ra, rb = a.readyz(), b.readyz()
    assert ra["cpus"] == rb["cpus"] == cores / 2
    assert a.metric("holistream_cpus") == cores / 2
    box_ms = cores * 1000.0
    for pipeline in ra["capacity"]:
        together = _promised_ms(ra["capacity"])[pipeline] + _promised_ms(rb["capacity"])[pipeline]
        assert together <= box_ms, (pipeline, ra["capacity"], rb["capacity"])
        assert ra["capacity"][pipeline] >= 1  # a share of one core still holds a session
        # The results per second the two promise together are what the whole box serves.
        box_fps = box_ms / DEFAULT_COSTS[pipeline].ms_per_frame
        assert ra["capacity_fps"][pipeline] + rb["capacity_fps"][pipeline] <= box_fps * 1.001


@pytest.mark.slow
def test_cpu_affinity_limits_capacity(server_factory) -> None:
    """An instance pinned to one core (as `taskset` or a cpuset does) budgets for one core."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two cores")
    core = min(os.sched_getaffinity(0))
    srv = server_factory("--no-calibrate", name="affinity", ready=False,
                         preexec=lambda: os.sched_setaffinity(0, {core}))
    srv.wait_ready()
    body = srv.readyz()
    assert body["cpus"] == 1 and len(body["workers"]) == 1
    assert _promised_ms(body["capacity"])["holistic"] <= 1000.0


def test_cgroup_memory_room(tmp_path: Path) -> None:
    """The default memory budget is capped by the container's memory limit (minus its use)."""
    v1 = V1_MOUNTINFO + "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
    root = _tree(tmp_path / "v1", v1, "5:memory:/docker/abc\n0::/\n", {
        "sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n",  # no limit
        "sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes": str(2 << 30),
        "sys/fs/cgroup/memory/docker/abc/memory.usage_in_bytes": str(512 << 20),
    })
    assert cgroup_memory_room(root) == (2 << 30) - (512 << 20)
    assert usable_memory_bytes(64 << 30, root=root) == (2 << 30) - (512 << 20)
    assert usable_memory_bytes(1 << 30, root=root) == 1 << 30  # less free than the room
    root2 = _tree(tmp_path / "v2", V2_MOUNTINFO, "0::/pod/ctr\n", {
        "sys/fs/cgroup/pod/memory.max": str(3 << 30),
        "sys/fs/cgroup/pod/memory.current": str(1 << 30),
        "sys/fs/cgroup/pod/ctr/memory.max": "max\n",
    })
    assert cgroup_memory_room(root2) == 2 << 30
    assert parse_limit("max") is None and parse_limit("junk") is None
    assert cgroup_memory_room(tmp_path / "nothing") is None
