"""What the machine is and how busy it is: recorded next to every figure."""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass
from typing import Any

import psutil


@dataclass(frozen=True, slots=True)
class Machine:
    nproc: int
    cpu_model: str
    memory_gib: float
    available_gib: float
    kernel: str
    python: str

    def describe(self) -> str:
        return (
            f"{self.nproc} CPUs ({self.cpu_model}), {self.memory_gib:.1f} GiB RAM "
            f"({self.available_gib:.1f} GiB available at start), Linux {self.kernel}, "
            f"Python {self.python}"
        )


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (first processor)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> Machine:
    vm = psutil.virtual_memory()
    return Machine(
        nproc=len(os.sched_getaffinity(0)),
        cpu_model=cpu_model(),
        memory_gib=vm.total / 2**30,
        available_gib=vm.available / 2**30,
        kernel=platform.release(),
        python=platform.python_version(),
    )


def load() -> tuple[float, float, float]:
    """1, 5 and 15 minute load averages (as `uptime` prints them)."""
    return os.getloadavg()


def uptime_line() -> str:
    one, five, fifteen = load()
    return f"load average: {one:.2f}, {five:.2f}, {fifteen:.2f}"


def wait_for_quiet(threshold: float, max_wait_s: float, poll_s: float = 30.0) -> dict[str, Any]:
    """Wait (bounded) until the 1-minute load average drops below `threshold`."""
    t0 = time.monotonic()
    while True:
        one = load()[0]
        waited = time.monotonic() - t0
        if one < threshold:
            return {"quiet": True, "load1": one, "waited_s": round(waited)}
        if waited + poll_s > max_wait_s:
            return {"quiet": False, "load1": one, "waited_s": round(waited)}
        print(f"bench: load average {one:.2f} >= {threshold}; waiting ({waited:.0f} s so far)")
        time.sleep(poll_s)
