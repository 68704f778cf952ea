"""The browser demo in real headless Chromium against the real server.

Chromium's fake camera plays a Y4M made from tests/fixtures/messi_pan_640x480.avi (a footballer
with face, both hands and pose in every frame). The page must connect, stream, draw the skeleton
where the server found the landmarks (mirrored or not), stop when told, and come back by itself
after the server restarts.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from holistream import protocol
from tests.browser import CHROMIUM, camera_y4m, chromium, page_of

if TYPE_CHECKING:
    from tests.conftest import ServerProcess

playwright_sync = pytest.importorskip("playwright.sync_api")
Browser = playwright_sync.Browser
Page = playwright_sync.Page
expect = playwright_sync.expect

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
STREAM_S = 20.0  # page load → camera → hello → first results, on a busy 2-core machine

if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is not installed (scripts/setup --test)", allow_module_level=True)


# --- the browser -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def camera_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return camera_y4m(tmp_path_factory)


@pytest.fixture(scope="module")
def browser(camera_clip: Path) -> Iterator[Browser]:
    with chromium(camera_clip) as launched:
        yield launched


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    with page_of(browser, STREAM_S) as opened:
        yield opened


def hook(page: Page, expression: str = "") -> Any:
    """Reads window.holistream (or an expression on it, e.g. '.results')."""
    return page.evaluate(f"window.holistream{expression}")


def page_state(page: Page) -> dict[str, Any]:
    """What the page knows, for a failure message."""
    return page.evaluate(
        "(({state, stateLog, framesSent, results, creditsExpired, notices, hud}) =>"
        " ({state, stateLog, framesSent, results, creditsExpired, notices, hud}))"
        "(window.holistream ?? {})"
    )


def wait_until(page: Page, predicate: str, arg: object = None, timeout_s: float = STREAM_S) -> None:
    """Polls a JS predicate (of `arg`) until true; on timeout fails with the page's state."""
    try:
        page.wait_for_function(predicate, arg=arg, timeout=timeout_s * 1000)
    except playwright_sync.TimeoutError:
        pytest.fail(f"timed out waiting for {predicate} ({arg}); page: {page_state(page)}")


def wait_streaming(page: Page, results: int = 5, timeout_s: float = STREAM_S) -> None:
    wait_until(
        page,
        "n => window.holistream?.state === 'connected' && window.holistream.results >= n",
        results,
        timeout_s,
    )


# --- the overlay, sampled where the server put the landmarks -----------------------------------

# Reads the last result and the overlay's pixels in one task, so they belong together (the page
# draws each result as it arrives). Positions are computed here from the video's own geometry,
# independently of js/overlay.js: letterboxed like `object-fit: contain`, x flipped when mirrored.
SAMPLE_OVERLAY_JS = """
({points, radius}) => {
  const hs = window.holistream;
  const canvas = document.getElementById(hs.overlayId);
  const video = document.getElementById("video");
  const result = hs.lastResult;
  const ctx = canvas.getContext("2d");
  const scale = Math.min(canvas.width / video.videoWidth, canvas.height / video.videoHeight);
  const w = video.videoWidth * scale, h = video.videoHeight * scale;
  const ox = (canvas.width - w) / 2, oy = (canvas.height - h) / 2;
  const strides = {pose: 5, face: 3, left_hand: 3, right_hand: 3};
  const window_ = (cx, cy) => {
    const x0 = Math.round(cx) - radius, y0 = Math.round(cy) - radius, side = 2 * radius + 1;
    return Array.from(ctx.getImageData(x0, y0, side, side).data);
  };
  const samples = [];
  for (const [part, index] of points) {
    const values = result[part];
    if (!values) continue;
    const stride = strides[part];
    const x = values[index * stride], y = values[index * stride + 1];
    if (stride === 5 && values[index * stride + 3] < 0.8) continue;  // barely visible
    if (x < 0.02 || x > 0.98 || y < 0.02 || y > 0.98) continue;
    const shownX = ox + (hs.mirror ? 1 - x : x) * w, otherX = ox + (hs.mirror ? x : 1 - x) * w;
    samples.push({part, index, x, y, here: window_(shownX, oy + y * h),
                  flipped: window_(otherX, oy + y * h)});
  }
  const box = (el) => {
    const r = el.getBoundingClientRect();
    return [r.x, r.y, r.width, r.height];
  };
  return {samples, mirror: hs.mirror, frame: result.frame, canvasBox: box(canvas),
          videoBox: box(video), videoTransform: getComputedStyle(video).transform,
          objectFit: getComputedStyle(video).objectFit, palette: hs.palette};
}
"""

# (part, palette entry) → landmarks on features drawn in that colour.
SAMPLED_LANDMARKS: dict[tuple[str, str], tuple[int, ...]] = {
    ("pose", "pose"): (11, 12, 13, 14, 23, 24),  # shoulders, elbows, hips
    ("left_hand", "leftHand"): (0, 4, 8, 12, 20),  # wrist and fingertips
    ("right_hand", "rightHand"): (0, 4, 8, 12, 20),
    ("face", "faceOval"): (10, 152, 234, 454),  # top, chin, sides
    ("face", "lips"): (61, 291),  # mouth corners
}
COLOUR_OF = {
    (part, index): colour
    for (part, colour), indices in SAMPLED_LANDMARKS.items()
    for index in indices
}


def rgb(hex_colour: str) -> tuple[int, int, int]:
    value = int(hex_colour.lstrip("#"), 16)
    return (value >> 16) & 255, (value >> 8) & 255, value & 255


def has_colour(rgba: list[int], colour: tuple[int, int, int], tolerance: int = 48) -> bool:
    """True when some opaque pixel of a sampled window is close to `colour`."""
    for i in range(0, len(rgba), 4):
        *pixel, alpha = rgba[i : i + 4]
        distance = max(abs(p - c) for p, c in zip(pixel, colour, strict=True))
        if alpha >= 160 and distance <= tolerance:
            return True
    return False


def check_overlay(page: Page, *, mirror: bool) -> None:
    sample = page.evaluate(
        SAMPLE_OVERLAY_JS, {"points": [list(point) for point in COLOUR_OF], "radius": 3}
    )
    assert sample["mirror"] is mirror
    # The overlay lies exactly over the video, which is letterboxed and mirrored like it.
    assert sample["canvasBox"] == pytest.approx(sample["videoBox"], abs=0.5)
    assert sample["objectFit"] == "contain"
    assert (sample["videoTransform"] == "matrix(-1, 0, 0, 1, 0, 0)") is mirror

    palette = {name: rgb(value) for name, value in sample["palette"].items()}
    parts_seen: dict[str, list[bool]] = {}
    flipped_hits = flipped_total = 0
    for s in sample["samples"]:
        colour = palette[COLOUR_OF[(s["part"], s["index"])]]
        parts_seen.setdefault(s["part"], []).append(has_colour(s["here"], colour))
        if abs(s["x"] - 0.5) > 0.08:  # far enough from the centre line to tell the sides apart
            flipped_total += 1
            flipped_hits += has_colour(s["flipped"], colour)

    # The fixture shows all of them in every frame.
    assert set(parts_seen) == {"pose", "face", "left_hand", "right_hand"}, sample["samples"]
    for part, hits in parts_seen.items():
        assert sum(hits) >= 0.75 * len(hits), f"{part}: drawn at {sum(hits)}/{len(hits)} landmarks"
    # Drawn on the right side, not at the mirror image of the landmarks.
    assert flipped_total >= 5
    assert flipped_hits <= 0.3 * flipped_total, f"{flipped_hits}/{flipped_total} at flipped x"


# --- tests -------------------------------------------------------------------------------------


def test_frame_header_and_socket_url_match_the_protocol(page: Page, server: ServerProcess) -> None:
    page.goto(f"{server.url}/?autostart=0&token=s3cret")
    encoded = page.evaluate(
        """async () => {
          const {encodeFrame} = await import("/js/protocol.js");
          const frame = encodeFrame(4000000000, 1234.5625, new Uint8Array([255, 216, 9]));
          return Array.from(new Uint8Array(frame));
        }"""
    )
    frame = protocol.decode_frame(bytes(encoded))
    assert (frame.frame_id, frame.ts, frame.image) == (4_000_000_000, 1234.5625, b"\xff\xd8\x09")
    assert hook(page, ".url") == (
        f"ws://127.0.0.1:{server.port}/ws?parts=face%2Chands%2Cpose&token=s3cret"
    )
    assert hook(page, ".state") == "idle"


def test_streams_and_draws_the_skeleton_over_the_video(page: Page, server: ServerProcess) -> None:
    page.goto(f"{server.url}/")
    wait_streaming(page)
    expect(page.locator("#hud-latency")).to_have_text(re.compile(r"^\d+ ms$"))
    hud = hook(page, ".hud")
    assert hud["state"] == "connected"
    assert hud["latencyP50"] > 0
    assert hud["inferenceMs"] > 0
    assert hud["inFlight"] <= hud["maxInFlight"] == 2
    assert hook(page, ".session")["pipeline"] == "holistic"

    check_overlay(page, mirror=True)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "browser_demo.png")

    page.get_by_role("switch", name="Mirror").uncheck()
    before = hook(page, ".results")
    wait_until(page, "n => window.holistream.results > n + 2", before)
    check_overlay(page, mirror=False)


def test_credits_account_for_every_frame(page: Page, server: ServerProcess) -> None:
    page.goto(f"{server.url}/")
    wait_streaming(page, results=3)
    # With 4 frames in flight the server supersedes frames waiting behind the one in inference.
    page.get_by_label("Frames in flight").select_option("4")
    session = hook(page, ".session.session")
    start = hook(page, ".ledger")
    wait_until(page, "n => window.holistream.results >= n + 30", start["results"])
    end = hook(page, ".ledger")
    assert hook(page, ".session.session") == session, "the session was replaced meanwhile"

    assert end["unanswered"] <= 4
    assert end["creditsExpired"] == 0, "a credit was lost and only came back by timeout"
    assert end["frameErrors"] == 0
    # A frame the server reports dropped comes back when a later frame's result arrives: the
    # page's count of those trails the server's by at most the frames still unanswered.
    reported = end["droppedReported"] - start["droppedReported"]
    released = end["releasedUnanswered"] - start["releasedUnanswered"]
    assert -start["unanswered"] <= reported - released <= end["unanswered"], (start, end)
    sent = end["framesSent"] - start["framesSent"]
    answered = end["results"] - start["results"]
    pending = end["unanswered"] - start["unanswered"]
    assert sent == answered + released + pending, (start, end)


def test_stop_ends_the_stream_and_start_resumes_it(page: Page, server: ServerProcess) -> None:
    page.goto(f"{server.url}/")
    wait_streaming(page, results=3)
    page.get_by_role("button", name="Stop").click()
    wait_until(page, "window.holistream.state === 'idle' && !window.holistream.running")
    assert page.evaluate("document.getElementById('video').srcObject") is None
    sent = hook(page, ".framesSent")
    # An observation window long enough for several camera frames at 30 fps.
    page.wait_for_timeout(1000)
    assert hook(page, ".framesSent") == sent
    expect(page.locator("#status-text")).to_have_text("stopped")

    page.keyboard.press("s")  # the keyboard shortcut starts it again
    wait_until(page, "n => window.holistream.framesSent > n + 3", sent)
    wait_streaming(page, results=hook(page, ".results") + 3)


def test_starts_on_a_real_capacity_server_without_refusal_and_shows_the_grant(
    page: Page, server_factory: Callable[..., ServerProcess]
) -> None:
    # Default admission (calibrated, no overcommit): a lone session asking 30 fps used to be
    # refused here; now it is granted what the box can give.
    real = server_factory(name="browser-grant")
    page.goto(f"{real.url}/")
    wait_streaming(page, results=3)
    session = hook(page, ".session")
    assert session["fps_requested"] == 30 and 10 <= session["fps_granted"] <= 30, session
    # The control shows the grant in force (it follows `grant` messages as capacity moves).
    shown = page.evaluate(
        "[window.holistream.granted, document.getElementById('fps-granted').textContent]"
    )
    assert 10 <= shown[0] <= 30 and shown[1] == f"{shown[0]:g} fps", shown
    log = hook(page, ".stateLog")
    notices = hook(page, ".notices")
    assert not [n for n in notices if "capacity" in str(n)], notices
    assert "disconnected" not in log and "reconnecting" not in log, log
    # The lite model, chosen in the controls, runs on the same session.
    page.get_by_label("Tracking model").select_option("lite")
    wait_until(page, "window.holistream.lastResult?.pipeline === 'holistic_lite'")


def test_a_refusal_is_explained_and_the_token_passes_through(
    page: Page, server_factory: Callable[..., ServerProcess]
) -> None:
    guarded = server_factory(
        "--workers", "1", "--no-calibrate", "--token", "s3cret", name="browser-token"
    )
    page.goto(f"{guarded.url}/")
    notice = page.locator("#notice")
    expect(notice).to_be_visible()
    expect(notice).to_contain_text("access token")  # the 401 behind the failed upgrade
    assert hook(page, ".results") == 0

    page.goto(f"{guarded.url}/?token=s3cret")
    wait_streaming(page, results=3)


def test_shows_disconnected_and_reconnects_when_the_server_comes_back(
    page: Page, server_factory: Callable[..., ServerProcess]
) -> None:
    # A server of its own, one worker like `scripts/serve`, that this test may kill.
    first = server_factory("--workers", "1", "--no-calibrate", name="browser-demo")
    page.goto(f"{first.url}/")
    wait_streaming(page, results=3)
    first.stop(signal.SIGKILL)  # no close frame: the socket just drops
    wait_until(page, "window.holistream.stateLog.includes('disconnected')")
    expect(page.locator("#status-text")).to_contain_text("reconnecting")
    stalled = hook(page, ".results")

    server_factory("--workers", "1", "--no-calibrate", port=first.port, name="browser-demo-again")
    wait_streaming(page, results=stalled + 3)
    log = hook(page, ".stateLog")
    assert log[-3:] == ["disconnected", "reconnecting", "connected"], log
