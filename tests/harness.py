"""The server-process harness shared by tests/ and bench/: `holistream serve` on 127.0.0.1.

Each server binds port 0 (unless told otherwise) and reports the port it got in its log;
`wait_ready` waits for /readyz. A ServerProcess is also a context manager that stops the server
on exit (SIGTERM, then SIGKILL), so no run can leave one behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
HOLISTREAM = Path(sys.executable).parent / "holistream"
if not HOLISTREAM.exists() and (found := shutil.which("holistream")):
    HOLISTREAM = Path(found)
_LISTENING = re.compile(r"listening on http://\S+:(\d+)")


class Loopback:
    """A process serving HTTP on 127.0.0.1:`port` and logging to `log_path`."""

    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@dataclass
class ServerProcess(Loopback):
    proc: subprocess.Popen[bytes]
    log_path: Path
    port: int = 0
    args: list[str] = field(default_factory=list)
    started_at: float = 0.0  # monotonic time it became ready

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=timeout) as resp:
                return int(resp.status), bytes(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def readyz(self) -> dict[str, Any]:
        body: dict[str, Any] = json.loads(self.get("/readyz")[1])
        return body

    def worker_pids(self) -> list[int]:
        return [w["pid"] for w in self.readyz()["workers"] if w["alive"]]

    def metric(self, name: str, labels: str = "") -> float:
        """Sum of a Prometheus sample, optionally only where labels contain `labels`."""
        text = self.get("/metrics")[1].decode()
        total = 0.0
        for line in text.splitlines():
            if line.startswith("#"):
                continue
            key, _, value = line.rpartition(" ")
            base, _, lab = key.partition("{")
            if base == name and (not labels or labels in lab):
                total += float(value)
        return total

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            if not self.port:
                match = _LISTENING.search(self.log())
                if match:
                    self.port = int(match.group(1))
            if self.port:
                with contextlib.suppress(OSError):
                    if self.get("/readyz", timeout=2)[0] == 200:
                        self.started_at = time.monotonic()
                        return
            time.sleep(0.1)
        raise TimeoutError(f"server not ready after {timeout}s:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        return stop_process(self.proc, sig, timeout)


def stop_process(
    proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 20.0
) -> int:
    """Send `sig` to a running `proc`, wait up to `timeout` s, then SIGKILL; its return code."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


P = TypeVar("P", bound=ServerProcess)


def start_server(*flags: str, port: int = 0, env: dict[str, str] | None = None,
                 name: str = "server", ready: bool = True,
                 preexec: Callable[[], object] | None = None, log_path: Path | None = None,
                 ready_timeout: float = 90.0, cls: type[P] = ServerProcess) -> P:  # type: ignore[assignment]
    """Start `holistream serve FLAGS`; wait until it is ready unless `ready` is False. The log
    goes to `log_path`, else to test-artifacts/NAME-PID-NS.log."""
    if log_path is None:
        ARTIFACTS.mkdir(exist_ok=True)
        log_path = ARTIFACTS / f"{name}-{os.getpid()}-{time.monotonic_ns()}.log"
    args = [str(HOLISTREAM), "serve", "--host", "127.0.0.1", "--port", str(port), *flags]
    full_env = {**os.environ, **(env or {})}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=full_env,
                                preexec_fn=preexec)
    server = cls(proc, log_path, port if port else 0, args)
    if ready:
        try:
            server.wait_ready(ready_timeout)
        except BaseException:
            server.stop(signal.SIGKILL)
            raise
    return server
