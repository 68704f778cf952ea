"""Download and cache behaviour of ``server.model`` against a real HTTP server on 127.0.0.1.

Every failure must end in a clear ``ModelError`` and leave no partial or temp file in the
cache directory; a trusted cache hit must not touch the network or mediapipe.
"""

from __future__ import annotations

import hashlib
import http.server
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import server.model
from server.model import ModelError, download, resolve_model
from server.model.cache import sidecar, trusted_sha256
from server.model.download import Official, fetch

BODY = bytes(range(256)) * 4096  # 1 MiB, several read chunks
BODY_SHA = hashlib.sha256(BODY).hexdigest()
RELEASE = threading.Event()


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass

    def _head(self, length: int) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        self.end_headers()

    def do_GET(self) -> None:
        if self.path == "/good.task":
            self._head(len(BODY))
            self.wfile.write(BODY)
        elif self.path == "/truncated.task":
            self._head(len(BODY))
            self.wfile.write(BODY[: len(BODY) // 3])
            self.close_connection = True
        elif self.path == "/nolength.task":  # close-delimited body: no length to check
            self.send_response(200)
            self.end_headers()
            self.wfile.write(BODY)
            self.close_connection = True
        elif self.path == "/big.task":
            self._head(10 * len(BODY))
        elif self.path == "/hang.task":
            RELEASE.wait(10)
        else:
            self.send_error(404, "Not Found")


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    RELEASE.clear()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    RELEASE.set()
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _names(d: Path) -> set[str]:
    return {p.name for p in d.iterdir()} if d.exists() else set()


def test_good_download_is_cached_with_its_checksum(base_url: str, tmp_path: Path) -> None:
    dest = tmp_path / "x.task"
    assert fetch(f"{base_url}/good.task", dest, sha256=BODY_SHA) == BODY_SHA
    assert dest.read_bytes() == BODY
    assert sidecar(dest).read_text() == f"{BODY_SHA}  x.task\n"
    assert trusted_sha256(dest) == BODY_SHA
    assert _names(tmp_path) == {"x.task", "x.task.sha256"}


@pytest.mark.parametrize(
    ("path", "sha256", "max_bytes", "message"),
    [
        ("/good.task", "0" * 64, len(BODY), "SHA-256 mismatch"),
        ("/truncated.task", None, len(BODY), "truncated"),
        ("/missing.task", None, len(BODY), "HTTP 404"),
        ("/big.task", None, len(BODY), "limit"),  # announced too big
        ("/nolength.task", None, len(BODY) // 2, "limit"),  # grows too big
    ],
)
def test_failed_download_leaves_nothing(
    base_url: str, tmp_path: Path, path: str, sha256: str | None, max_bytes: int, message: str
) -> None:
    with pytest.raises(ModelError, match=message):
        fetch(f"{base_url}{path}", tmp_path / "x.task", sha256=sha256, max_bytes=max_bytes)
    assert _names(tmp_path) == set()


def test_rejected_by_verify_leaves_nothing(base_url: str, tmp_path: Path) -> None:
    def verify(staged: Path) -> None:
        assert staged.read_bytes() == BODY  # verification sees the complete file
        raise ModelError("self-check says no")

    with pytest.raises(ModelError, match="self-check says no"):
        fetch(f"{base_url}/good.task", tmp_path / "x.task", sha256=BODY_SHA, verify=verify)
    assert _names(tmp_path) == set()


def test_connection_refused_is_quick(tmp_path: Path) -> None:
    start = time.monotonic()
    with pytest.raises(ModelError, match="refused"):
        fetch(f"http://127.0.0.1:{_closed_port()}/x.task", tmp_path / "x.task", sha256=None)
    assert time.monotonic() - start < 2
    assert _names(tmp_path) == set()


def test_unresponsive_server_times_out_quickly(base_url: str, tmp_path: Path) -> None:
    start = time.monotonic()
    with pytest.raises(ModelError, match="timed out"):
        fetch(f"{base_url}/hang.task", tmp_path / "x.task", sha256=None, timeout=0.3)
    assert time.monotonic() - start < 3
    assert _names(tmp_path) == set()


def test_failed_download_keeps_the_previous_good_file(base_url: str, tmp_path: Path) -> None:
    dest = tmp_path / "x.task"
    fetch(f"{base_url}/good.task", dest, sha256=BODY_SHA)
    with pytest.raises(ModelError):
        fetch(f"{base_url}/truncated.task", dest, sha256=None)
    assert trusted_sha256(dest) == BODY_SHA
    assert _names(tmp_path) == {"x.task", "x.task.sha256"}


def test_non_http_urls_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="non-HTTP"):
        fetch(f"file://{tmp_path}/x", tmp_path / "x.task", sha256=None)


def _cache(tmp_path: Path, sha_line: str | None) -> Path:
    dest = tmp_path / server.model.BUNDLES["holistic"]
    dest.write_bytes(BODY)
    if sha_line is not None:
        sidecar(dest).write_text(sha_line)
    return dest


def test_trusted_cache_is_reused_without_network_or_build(tmp_path: Path) -> None:
    dest = _cache(tmp_path, f"{BODY_SHA}  holistic_landmarker.task\n")
    logs: list[str] = []
    start = time.monotonic()
    got = resolve_model(
        "holistic", cache_dir=tmp_path, allow_download=False, allow_build=False, log=logs.append
    )
    assert got == dest
    assert logs == []
    assert time.monotonic() - start < 1


def test_read_only_cache_is_served(tmp_path: Path) -> None:
    """A cache in a read-only place (a container image, a read-only root file system): a
    verified bundle is used as it is, with no lock file to write."""
    dest = _cache(tmp_path, f"{BODY_SHA}  holistic_landmarker.task\n")
    tmp_path.chmod(0o555)
    try:
        if os.access(tmp_path, os.W_OK):  # root writes anyway: take the lock's place away
            (tmp_path / f".{dest.name}.lock").mkdir()
        got = resolve_model("holistic", cache_dir=tmp_path, allow_download=False,
                            allow_build=False, log=lambda _: None)
    finally:
        tmp_path.chmod(0o755)
    assert got == dest


@pytest.mark.parametrize("sha_line", [None, "0" * 64 + "  x\n", "not a checksum\n", ""])
def test_cache_with_bad_or_missing_checksum_is_not_trusted(
    tmp_path: Path, sha_line: str | None
) -> None:
    _cache(tmp_path, sha_line)
    logs: list[str] = []
    with pytest.raises(ModelError, match="building is disabled"):
        resolve_model(
            "holistic", cache_dir=tmp_path, allow_download=False, allow_build=False, log=logs.append
        )
    assert any("ignoring cached" in line for line in logs)


def test_official_download_failure_is_one_quiet_line(
    base_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(download.OFFICIAL, "holistic", Official(f"{base_url}/gone.task", None))
    logs: list[str] = []
    start = time.monotonic()
    with pytest.raises(ModelError, match="building is disabled"):
        resolve_model("holistic", cache_dir=tmp_path, allow_build=False, log=logs.append)
    assert time.monotonic() - start < 2
    assert len(logs) == 1 and "HTTP 404" in logs[0]
    assert {n for n in _names(tmp_path) if not n.endswith(".lock")} == set()


def test_explicit_model_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        resolve_model("holistic", explicit=tmp_path / "nope.task")
    real = tmp_path / "mine.task"
    real.write_bytes(b"x")
    assert resolve_model("holistic", explicit=real, cache_dir=tmp_path / "c") == real


def test_unknown_bundle_is_a_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="unknown model bundle"):
        resolve_model("feet", cache_dir=tmp_path)


def test_default_cache_dir_follows_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOLISTREAM_CACHE_DIR", str(tmp_path / "a"))
    assert server.model.default_cache_dir() == tmp_path / "a"
    monkeypatch.delenv("HOLISTREAM_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert server.model.default_cache_dir() == tmp_path / "x" / "holistream" / "models"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "h"))
    assert server.model.default_cache_dir() == tmp_path / "h" / ".cache/holistream/models"
