"""Real headless Chromium for the browser tests: Debian's binary, a fake camera, no downloads."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.protocol_schema import ContractViolation, check_server_message
from tests.y4m import avi_to_y4m

playwright_sync = pytest.importorskip("playwright.sync_api")

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CAMERA_CLIP = ROOT / "tests" / "fixtures" / "messi_pan_640x480.avi"


def camera_y4m(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fixture clip as a Y4M Chromium's fake camera plays (and loops)."""
    return avi_to_y4m(CAMERA_CLIP, tmp_path_factory.mktemp("camera") / "messi.y4m")


@contextmanager
def chromium(camera: Path) -> Iterator[Any]:
    """Chromium with the fake camera and no background networking (this machine has none)."""
    with playwright_sync.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=[
                "--no-sandbox",
                "--use-fake-device-for-media-stream",
                "--use-fake-ui-for-media-stream",
                f"--use-file-for-fake-video-capture={camera}",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--disable-quic",
            ],
        )
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def page_of(browser: Any, timeout_s: float) -> Iterator[Any]:
    """A fresh page; an uncaught error in it, or a server message it receives that breaks
    docs/protocol.schema.json, fails the test that used it."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(timeout_s * 1000)
    errors: list[str] = []
    violations: list[str] = []

    def check(payload: str | bytes) -> None:
        try:
            check_server_message(payload)
        except ContractViolation as exc:
            violations.append(str(exc))

    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("websocket", lambda ws: ws.on("framereceived", check))
    try:
        yield page
    finally:
        context.close()
    assert not errors, f"uncaught errors in the page: {errors}"
    assert not violations, "server messages break the protocol contract:\n" + "\n".join(
        violations[:5]
    )
