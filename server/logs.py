"""Logs an operator can read: Python logging as text or JSON lines, and the native chatter of
MediaPipe/LiteRT (a screenful of INFO/WARNING lines per landmarker, written straight to fd 2)
filtered out of every process that loads a model.

`HOLISTREAM_NATIVE_LOGS=1` keeps the native lines. With the JSON format, whatever still reaches
fd 2 from native code (errors, Python tracebacks of a worker) is wrapped into JSON lines too, so a
log collector never sees a line it cannot parse.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import IO, Any

# INFO: [accelerator_registry.cc:54] ..., W0000 00:00:17... inference_runner_litert.cc ...,
# "WARNING: Logging before InitGoogleLogging()", I/W glog lines ("Sparsity tensors...",
# "Feedback manager requires a model with a single signature...").
NATIVE_NOISE = re.compile(rb"^(INFO: |WARNING: \[|WARNING: Logging before|[IW]\d{4} )")

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


def is_native_noise(line: bytes) -> bool:
    return NATIVE_NOISE.match(line) is not None


def json_line(level: str, logger: str, message: str, **extra: Any) -> str:
    """One log record as a JSON object on one line (UTC timestamp, ISO 8601)."""
    now = time.time()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"
    record = {"ts": stamp, "level": level, "logger": logger, "message": message, **extra}
    return json.dumps(record, ensure_ascii=False, default=str)


class JsonFormatter(logging.Formatter):
    """`{"ts", "level", "logger", "message"}`, plus `exc` for tracebacks and any `extra=` keys."""

    def format(self, record: logging.LogRecord) -> str:
        extra = {k: v for k, v in record.__dict__.items() if k not in _STANDARD}
        if record.exc_info:
            extra["exc"] = self.formatException(record.exc_info)
        return json_line(record.levelname, record.name, record.getMessage(), **extra)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure(level: str = "info", fmt: str = "text", stream: IO[str] | None = None) -> None:
    """Root logging for a command: `fmt` is "text" or "json". Also names the format in the
    environment, so spawned workers wrap their own stderr lines the same way."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    os.environ["HOLISTREAM_LOG_FORMAT"] = fmt


def filter_native_logs(logger: str = "native") -> Callable[[], None]:
    """Route fd 2 through a thread that drops the native chatter and keeps everything else.

    Returns a function that puts fd 2 back and waits for the last lines to be written (a
    process that exits without calling it may lose lines still in the pipe)."""
    if os.environ.get("HOLISTREAM_NATIVE_LOGS") == "1":
        return lambda: None
    as_json = os.environ.get("HOLISTREAM_LOG_FORMAT") == "json"
    sys.stderr.flush()
    read_fd, write_fd = os.pipe()
    original = os.dup(2)
    out_fd = os.dup(original)  # the pump's own copy: `restore` may close `original` any time
    os.dup2(write_fd, 2)
    os.close(write_fd)

    def pump() -> None:
        with os.fdopen(read_fd, "rb") as src, os.fdopen(out_fd, "wb", 0) as dst:
            for line in src:
                if is_native_noise(line):
                    continue
                if as_json and not line.startswith(b"{"):
                    text = line.decode(errors="replace").rstrip("\n")
                    line = (json_line("ERROR", logger, text) + "\n").encode()
                dst.write(line)

    thread = threading.Thread(target=pump, name="native-log-filter", daemon=True)
    thread.start()

    def restore() -> None:
        sys.stderr.flush()
        os.dup2(original, 2)  # closes the pipe's last write end: the pump sees EOF
        os.close(original)
        thread.join(timeout=5)

    return restore


@contextlib.contextmanager
def native_logs_filtered(logger: str = "native") -> Iterator[None]:
    """`filter_native_logs` for the length of a block."""
    restore = filter_native_logs(logger)
    try:
        yield
    finally:
        restore()
