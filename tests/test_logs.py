"""Logs an operator can read: no native MediaPipe/LiteRT chatter from `holistream model`, and
`--log-format json` gives one parseable JSON object per line, from the server and its workers."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from server import logs

HOLISTREAM = Path(sys.executable).parent / "holistream"


def _model_output(**env: str) -> list[str]:
    """`holistream model` on one bundle (each self-check loads MediaPipe and LiteRT)."""
    proc = subprocess.run([str(HOLISTREAM), "model", "--only", "face"], capture_output=True,
                          timeout=120,
                          env={**os.environ, **env}, check=True)
    return (proc.stdout + proc.stderr).decode(errors="replace").splitlines()


@pytest.mark.server
def test_model_command_prints_no_native_noise() -> None:
    lines = _model_output()
    noise = [ln for ln in lines if logs.is_native_noise(ln.encode())]
    assert not noise, noise[:5]
    assert [ln.split()[0] for ln in lines] == ["face"]  # the result line, nothing else
    # The filter is what removes them: with it off, the same command prints them.
    raw = _model_output(HOLISTREAM_NATIVE_LOGS="1")
    assert any(logs.is_native_noise(ln.encode()) for ln in raw)


def test_json_formatter() -> None:
    stream = io.StringIO()
    logger = logging.getLogger("holistream.test-json")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    logger.addHandler(handler)
    try:
        logger.warning("session %s refused", "abc", extra={"session": "abc"})
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["level"] == "WARNING" and first["message"] == "session abc refused"
    assert first["session"] == "abc" and first["logger"] == "holistream.test-json"
    assert first["ts"].endswith("Z")
    assert second["level"] == "ERROR" and "RuntimeError: boom" in second["exc"]


@pytest.mark.slow
def test_server_json_logs(server_factory) -> None:
    srv = server_factory("--workers", "1", "--no-calibrate", "--log-format", "json",
                         name="json-logs")
    srv.stop()
    lines = [ln for ln in srv.log().splitlines() if ln.strip()]
    records = [json.loads(ln) for ln in lines]  # every line is one JSON object
    messages = [r["message"] for r in records]
    assert any(m.startswith("ready:") for m in messages), messages
    assert any(m == "stopped" for m in messages)
    assert all({"ts", "level", "logger", "message"} <= r.keys() for r in records)


def test_filter_restores_at_once_without_losing_lines(capfd) -> None:
    """Restored right away (before the pump thread ran): the kept line still comes out and
    fd 2 works again."""
    for _ in range(20):
        restore = logs.filter_native_logs()
        os.write(2, b"INFO: [cpu_registry.cc:75] XNNPACK CPU accelerator registered.\n")
        os.write(2, b"kept line\n")
        restore()
    os.write(2, b"after\n")
    err = capfd.readouterr().err
    assert err.count("kept line") == 20 and "after" in err and "XNNPACK" not in err
