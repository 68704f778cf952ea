"""Worker processes as operating-system processes: start one and wait for its Hello, read its
CPU time, stop them all. The pool (workers/pool.py) decides when; this module knows how."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Sequence
from multiprocessing.context import SpawnContext
from multiprocessing.process import BaseProcess

import psutil

from server.workers import ipc
from server.workers import messages as m
from server.workers.process import WorkerSettings, worker_main


async def start_process(
    ctx: SpawnContext, index: int, settings: WorkerSettings
) -> tuple[BaseProcess, int, asyncio.StreamReader, asyncio.StreamWriter]:
    """A new worker process on a socketpair, once it said Hello: (process, pid, reader,
    writer)."""
    parent, child = socket.socketpair()
    proc = ctx.Process(
        target=worker_main,
        args=(child, index, settings),
        name=f"holistream-worker-{index}",
        daemon=True,
    )
    proc.start()
    child.close()
    reader, writer = await asyncio.open_unix_connection(sock=parent)
    hello = await ipc.recv_async(reader)
    if not isinstance(hello, m.Hello):
        raise ipc.ProtocolError(f"worker {index} began with {type(hello).__name__}")
    return proc, hello.pid, reader, writer


async def stop_processes(processes: Sequence[BaseProcess | None], timeout: float) -> None:
    """Wait up to `timeout` in all for processes told to stop (EOF); kill those still alive."""
    deadline = time.monotonic() + timeout
    for proc in processes:
        if proc is None:
            continue
        while proc.is_alive() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if proc.is_alive():
            proc.kill()
        proc.join(1)


def cpu_and_stopped(pid: int) -> tuple[float, bool]:
    """CPU time a worker process has used (all its threads), and whether the kernel has it
    stopped (SIGSTOP, a debugger); (0, False) if it is gone."""
    try:
        proc = psutil.Process(pid)
        with proc.oneshot():
            times, status = proc.cpu_times(), proc.status()
    except psutil.Error:
        return 0.0, False
    stopped = status in (psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP)
    return float(times.user + times.system), stopped
