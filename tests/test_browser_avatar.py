"""The avatar view in real headless Chromium (software WebGL 2) against the real server.

The page streams the fake camera (tests/fixtures/messi_pan_640x480.avi as Y4M) with the avatar
view on, so its hello asks for the rig; an independent subscriber on the same named stream
records the rig of every frame. The avatar's normalized bone rotations must be the server's rig
for the page's last frame, mapped to three-vrm by the conventions written out again here
(holistream/rig/skeleton.py: Unity frame; three-vrm VRM 1.0: x negated, so [x, y, z, w] -> [x, -y,
-z, w]; VRM 0.x models additionally turned 180° about Y: -> [-x, -y, z, w]; mirror: sides
swapped and reflected across the sagittal plane), within what interpolation allows while
streaming and exactly once it has settled.

VRM 1.0 and 0.x mannequins made by tools/make_mannequin.py, given one rig pose, must put their
hands at the same places on screen, on the side the skeleton view would show them. A file that is
not a VRM is refused in words while the page goes on streaming.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import pytest

from holistream import client
from holistream.protocol import Result
from tests.browser import CHROMIUM, camera_y4m, chromium, page_of
from tests.conftest import media
from tests.wsclient import connect

if TYPE_CHECKING:
    from tests.conftest import ServerProcess

playwright_sync = pytest.importorskip("playwright.sync_api")
Browser = playwright_sync.Browser
Page = playwright_sync.Page
expect = playwright_sync.expect

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
MAKE_MANNEQUIN = ROOT / "tools" / "make_mannequin.py"
MANNEQUIN = ROOT / "web" / "assets" / "mannequin.vrm"
ARTIFACTS = ROOT / "test-artifacts"
STREAM_S = 30.0  # page load → three.js → camera → hello → results, on a busy 2-core machine

if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is not installed (scripts/setup --test)", allow_module_level=True)
if not (ROOT / "web" / "node_modules" / "@pixiv" / "three-vrm").is_dir():
    pytest.skip("web/node_modules is not installed (scripts/setup)", allow_module_level=True)


# --- the conventions, written out independently of web/js/avatar-rig.js ------------------------

Quat = tuple[float, float, float, float]


def _bone_names() -> dict[str, str]:
    names = {n: n[0].lower() + n[1:] for n in ("Hips", "Spine", "Chest", "Neck", "Head")}
    for side in ("Left", "Right"):
        low = side.lower()
        for bone in ("UpperArm", "LowerArm", "Hand", "UpperLeg", "LowerLeg", "Foot"):
            names[side + bone] = low + bone
        for unity, vrm in zip(
            ("Proximal", "Intermediate", "Distal"),
            ("Metacarpal", "Proximal", "Distal"),
            strict=True,
        ):
            names[f"{side}Thumb{unity}"] = f"{low}Thumb{vrm}"
        for finger in ("Index", "Middle", "Ring", "Little"):
            for seg in ("Proximal", "Intermediate", "Distal"):
                names[side + finger + seg] = low + finger + seg
    return names


UNITY_TO_VRM = _bone_names()
HAND_PARTS = {"left_hand": "Left", "right_hand": "Right"}


def unit(q: Any) -> Quat:
    arr = np.asarray(q, dtype=np.float64)
    x, y, z, w = (arr / np.linalg.norm(arr)).tolist()
    return x, y, z, w


def swap_side(name: str) -> str:
    if name.startswith("Left"):
        return "Right" + name[4:]
    if name.startswith("Right"):
        return "Left" + name[5:]
    return name


def expected_bones(
    rig_bones: dict[str, Any], *, mirror: bool, version: str, held: tuple[str, ...] = ()
) -> dict[str, Quat]:
    """three-vrm normalized rotations for a rig (Unity frame), by three-vrm bone name.

    `held`: hands (left_hand, right_hand) the page keeps in an earlier pose; left out.
    """
    sides = tuple(HAND_PARTS[part] for part in held)
    out = {}
    for name, value in rig_bones.items():
        if name.startswith(sides) and is_hand_bone(name):
            continue
        x, y, z, w = unit(value)
        if mirror:
            name, (x, y, z, w) = swap_side(name), (x, -y, -z, w)
        x, y, z, w = (x, -y, -z, w)  # Unity (left-handed) -> glTF, the avatar facing +Z
        if version == "0.x":
            x, y, z, w = (-x, y, -z, w)  # VRM 0.x normalized bones face -Z
        out[UNITY_TO_VRM[name]] = (x, y, z, w)
    return out


def is_hand_bone(name: str) -> bool:
    return any(k in name for k in ("Hand", "Thumb", "Index", "Middle", "Ring", "Little"))


def angle_deg(a: Any, b: Any) -> float:
    dot = abs(float(np.dot(unit(a), unit(b))))
    return math.degrees(2.0 * math.acos(min(1.0, dot)))


# --- the browser -------------------------------------------------------------------------------


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


def avatar(page: Page, expression: str = "") -> Any:
    return page.evaluate(f"window.holistream.avatar{expression}")


def wait_until(page: Page, predicate: str, arg: object = None, timeout_s: float = STREAM_S) -> None:
    try:
        page.wait_for_function(predicate, arg=arg, timeout=timeout_s * 1000)
    except playwright_sync.TimeoutError:
        state = page.evaluate(
            "(() => { const h = window.holistream; const a = h?.avatar;"
            " return {state: h?.state, results: h?.results, notices: h?.notices, hud: h?.hud,"
            " avatar: a && {ready: a.ready, model: a.model, message: a.message,"
            " rigResults: a.rigResults, webgl2: a.webgl2},"
            " status: document.getElementById('avatar-status')?.textContent}; })()"
        )
        pytest.fail(f"timed out waiting for {predicate} ({arg}); page: {state}")


def wait_avatar_ready(page: Page) -> None:
    wait_until(page, "window.holistream?.avatar?.ready === true")


# --- an independent subscriber -----------------------------------------------------------------


class RigRecorder:
    """Subscribes to a named stream with the rig and keeps every result's rig by frame id."""

    def __init__(self, base_url: str, stream: str) -> None:
        self.base_url, self.stream = base_url, stream
        self.rigs: dict[int, dict[str, Any]] = {}
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rig-recorder", daemon=True)

    def __enter__(self) -> RigRecorder:
        self._thread.start()
        if not self.ready.wait(20):
            raise TimeoutError(f"subscriber not ready: {self.error}")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by the test
            self.error = exc
            self.ready.set()

    async def _main(self) -> None:
        async with client.subscribe(self.base_url, self.stream, rig=True) as sub:
            self.ready.set()
            while not self._stop.is_set():
                try:
                    msg = await asyncio.wait_for(sub.recv(), 0.25)
                except TimeoutError:
                    continue
                if isinstance(msg, Result) and msg.rig is not None:
                    self.rigs[msg.frame] = msg.rig

    def rig(self, frame: int, timeout_s: float = 5.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while frame not in self.rigs and time.monotonic() < deadline:
            time.sleep(0.05)
        assert frame in self.rigs, f"the subscriber never got frame {frame}: {sorted(self.rigs)}"
        return self.rigs[frame]


# --- helpers for VRM files -----------------------------------------------------------------------


def glb_json(data: bytes) -> dict[str, Any]:
    """The JSON chunk of a glTF binary."""
    magic, _, _ = struct.unpack_from("<4sII", data)
    length, kind = struct.unpack_from("<I4s", data, 12)
    assert (magic, kind) == (b"glTF", b"JSON")
    return json.loads(data[20 : 20 + length])


def make_mannequin(spec: str, out: Path) -> Path:
    subprocess.run(
        [sys.executable, str(MAKE_MANNEQUIN), "--spec", spec, "-o", str(out)],
        check=True,
        capture_output=True,
    )
    return out


def glb_without_vrm(source: Path, out: Path) -> Path:
    """The same glTF binary with its VRM extension removed: a 3D model, but no avatar."""
    data = source.read_bytes()
    json_len = struct.unpack_from("<I", data, 12)[0]
    doc = glb_json(data)
    doc.pop("extensions", None)
    doc.pop("extensionsUsed", None)
    text = json.dumps(doc).encode()
    text += b" " * (-len(text) % 4)
    rest = data[20 + json_len :]
    header = struct.pack("<4sII", b"glTF", 2, 12 + 8 + len(text) + len(rest))
    out.write_bytes(header + struct.pack("<I4s", len(text), b"JSON") + text + rest)
    return out


DROP_FILE_JS = """
([name, bytes]) => {
  const file = new File([new Uint8Array(bytes)], name, {type: "application/octet-stream"});
  const data = new DataTransfer();
  data.items.add(file);
  const target = document.getElementById("avatar-viewport");
  for (const type of ["dragenter", "dragover", "drop"]) {
    const event = new DragEvent(type, {dataTransfer: data, bubbles: true, cancelable: true});
    target.dispatchEvent(event);
  }
}
"""


# --- tests ---------------------------------------------------------------------------------------


def test_mannequin_is_committed_as_the_tool_makes_it(tmp_path: Path) -> None:
    fresh = make_mannequin("1.0", tmp_path / "mannequin.vrm").read_bytes()
    assert fresh == MANNEQUIN.read_bytes(), "run tools/make_mannequin.py and commit the result"
    assert len(fresh) < 300_000
    vrm = glb_json(fresh)["extensions"]["VRMC_vrm"]
    assert vrm["meta"]["licenseUrl"] == "https://vrm.dev/licenses/1.0/"
    bones = set(vrm["humanoid"]["humanBones"])
    assert {"hips", "spine", "chest", "neck", "head", "leftThumbMetacarpal"} <= bones
    fingers = ("Thumb", "Index", "Middle", "Ring", "Little")
    assert {f"{side}{finger}Distal" for side in ("left", "right") for finger in fingers} <= bones
    vrm0 = glb_json(make_mannequin("0", tmp_path / "m0.vrm").read_bytes())
    assert vrm0["extensionsUsed"] == ["VRM"]
    bones0 = {b["bone"] for b in vrm0["extensions"]["VRM"]["humanoid"]["humanBones"]}
    assert {"leftThumbProximal", "leftThumbIntermediate", "leftThumbDistal"} <= bones0


def test_the_avatar_follows_the_servers_rig(page: Page, server: ServerProcess) -> None:
    name = f"avatar-{os.getpid()}-{time.monotonic_ns() % 10**6}"
    with RigRecorder(f"ws://127.0.0.1:{server.port}", name) as recorder:
        page.goto(f"{server.url}/?view=both&framing=full&stream={name}")
        wait_avatar_ready(page)
        assert avatar(page, ".webgl2") is True, "no WebGL 2 context"
        assert avatar(page, ".model") == {
            "title": "holistream mannequin",
            "vrmVersion": "1.0",
            "source": "mannequin",
            "fileName": "mannequin.vrm",
        }
        wait_until(page, "n => window.holistream.avatar.rigResults >= n", 6)
        assert recorder.error is None, recorder.error

        # While streaming: the target is the last rig, mapped; the pose on screen is on its way
        # from where it was when that rig came to the target, never further away than that.
        snap = page.evaluate("window.holistream.avatar.snapshot()")
        assert snap["mirror"] is True  # the page's default, like the skeleton view
        assert snap["rig"] == recorder.rig(snap["frame"])
        want = expected_bones(snap["rig"]["bones"], mirror=True, version="1.0", held=snap["held"])
        assert len(want) >= 17
        for bone, q in want.items():
            assert angle_deg(snap["target"]["bones"][bone], q) < 0.01, bone
            start = snap["from"]["bones"].get(bone, (0, 0, 0, 1))
            assert angle_deg(snap["bones"][bone], q) <= angle_deg(start, q) + 0.01, bone

        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=ARTIFACTS / "avatar.png")  # the skeleton and the avatar, live

        # The HUD shows what drives the avatar.
        expect(page.locator("#hud [data-hud=rigSolve]")).to_have_text(re.compile(r"^\d+\.\d\d ms$"))
        hud = page.evaluate("window.holistream.hud")
        assert hud["rig"] is True and hud["rigFps"] > 0 and hud["rigSolveMs"] > 0

        # A file that is not a VRM: refused in words; the avatar and the stream carry on.
        before = avatar(page, ".rigResults")
        page.evaluate(DROP_FILE_JS, ["holiday.vrm", list(b"GIF89a not an avatar at all" * 4)])
        message = page.locator("#avatar-message")
        expect(message).to_be_visible()
        expect(message).to_contain_text("holiday.vrm is not a VRM")
        expect(message).to_contain_text("Still showing holistream mannequin")
        wait_until(page, "n => window.holistream.avatar.rigResults >= n + 3", before)
        assert avatar(page, ".model")["source"] == "mannequin"
        assert page.evaluate("window.holistream.state") == "connected"

        # The footballer's arms are not in a T-pose, and so neither are the mannequin's.
        snap = page.evaluate("window.holistream.avatar.snapshot()")
        arms = {b: angle_deg(snap["target"]["bones"][b], (0, 0, 0, 1))
                for b in ("leftUpperArm", "rightUpperArm")}
        assert max(arms.values()) > 30 and min(arms.values()) > 10, arms

        # Live expressions: the mouth drawn follows the server's mouth value (A) frame by frame,
        # with no easing of its own (frames drawn while streaming, read from the mesh's morph).
        avatar(page, ".startMouthLog()")
        page.wait_for_timeout(4000)
        log = avatar(page, ".stopMouthLog()")
        rendered = np.array([e["rendered"] for e in log])
        server_a = np.array([e["server"] for e in log])
        assert len(log) >= 20 and server_a.std() > 0.005, (len(log), server_a.std())
        corr = float(np.corrcoef(rendered, server_a)[0, 1])
        gaps = [(e["rendered"], e["lipGap"]) for e in log if e["lipGap"] is not None]
        lip = float(np.corrcoef(*np.array(gaps).T)[0, 1]) if len(gaps) > 2 else float("nan")
        print(f"mouth drawn vs server A: r = {corr:.3f} over {len(log)} frames; "
              f"vs the lip gap: r = {lip:.3f}")
        assert corr >= 0.9

        # Stopped: the avatar eases to the rig's neutral pose (arms down beside the body, face
        # neutral, the legs as they were) and says so.
        page.get_by_role("button", name="Stop").click()
        expect(page.locator("#avatar-tracking")).to_contain_text("stream stopped")
        assert avatar(page, ".tracking")["state"] == "lost"
        wait_until(page, "window.holistream.avatar.snapshot().settled", timeout_s=5)
        snap = page.evaluate("window.holistream.avatar.snapshot()")
        rig = recorder.rig(snap["frame"])
        want = expected_bones(neutral_rig_json(rig), mirror=True, version="1.0")
        for bone, q in want.items():
            assert angle_deg(snap["bones"][bone], q) < 0.05, (bone, snap["bones"][bone], q)
        for bone in ("spine", "head", "leftLowerArm", "rightHand", "leftIndexProximal"):
            assert angle_deg(snap["bones"].get(bone, (0, 0, 0, 1)), (0, 0, 0, 1)) < 0.05, bone
        assert max(avatar(page, ".expressions").values(), default=0.0) < 1e-6


def neutral_rig_json(rig: dict[str, Any]) -> dict[str, Any]:
    """The neutral pose (docs/rig.md, Confidence-aware motion) as rig bones: upper arms 65°
    below the T-pose about the avatar's Z axis (Unity frame), the legs as the rig had them."""
    half = math.radians(65.0) / 2.0
    bones = {
        "LeftUpperArm": [0.0, 0.0, math.sin(half), math.cos(half)],
        "RightUpperArm": [0.0, 0.0, -math.sin(half), math.cos(half)],
    }
    for side in ("Left", "Right"):
        for part in ("UpperLeg", "LowerLeg", "Foot"):
            bones[side + part] = rig["bones"][side + part]
    return bones


POSE = {  # the person's right arm raised 45° sideways, left arm down (Unity frame)
    "bones": {
        "LeftUpperArm": [0.0, 0.0, math.sin(math.pi / 4), math.cos(math.pi / 4)],
        "RightUpperArm": [0.0, 0.0, math.sin(math.pi / 8), math.cos(math.pi / 8)],
    },
    "expressions": {"Blink_L": 1.0, "A": 0.7},
    "confidence": {},
}

READ_POSE_JS = """
() => {
  const a = window.holistream.avatar;
  const at = (name) => a.bonePosition(name);
  const box = document.getElementById("avatar-canvas").getBoundingClientRect();
  return {model: a.model, bones: a.bones, expressions: a.expressions, size: [box.width, box.height],
          leftHand: at("leftHand"), rightHand: at("rightHand"), head: at("head"),
          hips: at("hips"), leftFoot: at("leftFoot")};
}
"""


def test_vrm0_and_vrm1_pose_alike_and_bad_files_are_refused(
    page: Page, server: ServerProcess, tmp_path: Path
) -> None:
    vrm1 = make_mannequin("1.0", tmp_path / "figure-1.vrm")
    vrm0 = make_mannequin("0", tmp_path / "figure-0.vrm")
    page.goto(f"{server.url}/?autostart=0&view=avatar&framing=full")
    wait_avatar_ready(page)
    assert avatar(page, ".webgl2") is True
    page.get_by_role("switch", name="Mirror").uncheck()  # the avatar faces us, unmirrored

    poses = {}
    for path, version in ((vrm1, "1.0"), (vrm0, "0.x")):
        page.set_input_files("#avatar-file", str(path))
        wait_until(page, "name => window.holistream.avatar.model?.fileName === name", path.name)
        page.evaluate("rig => window.holistream.avatar.applyRig(rig)", POSE)
        got = poses[version] = page.evaluate(READ_POSE_JS)
        assert got["model"]["vrmVersion"] == version
        for bone, q in expected_bones(POSE["bones"], mirror=False, version=version).items():
            assert angle_deg(got["bones"][bone], q) < 0.01, (version, bone)
        assert got["expressions"]["blinkLeft"] == 1.0 and got["expressions"]["aa"] == 0.7
        page.locator("#avatar-viewport").screenshot(path=tmp_path / f"vrm{version}.png")

        # Facing us, unmirrored: the avatar's right hand is on our left, raised above its
        # head; its left hand hangs on our right, below the hips.
        hx, hy = got["head"]["screen"]
        assert got["rightHand"]["screen"][0] < hx - 50 and got["rightHand"]["screen"][1] < hy
        assert got["leftHand"]["screen"][0] > hx + 20
        assert got["leftHand"]["screen"][1] > got["hips"]["screen"][1]
        assert got["leftHand"]["world"][1] < 1.0 < 1.6 < got["rightHand"]["world"][1]

    # Both versions put every hand at the same place (the 0.x frame is turned back right).
    for bone in ("leftHand", "rightHand", "head", "leftFoot"):
        a, b = poses["1.0"][bone], poses["0.x"][bone]
        assert np.allclose(a["world"], b["world"], atol=1e-3), bone
        assert np.allclose(a["screen"], b["screen"], atol=1.5), bone

    # Mirrored, the same person's raised right hand shows on our right, as in the skeleton view.
    page.get_by_role("switch", name="Mirror").check()
    page.evaluate("rig => window.holistream.avatar.applyRig(rig)", POSE)
    mirrored = page.evaluate(READ_POSE_JS)
    hx, hy = mirrored["head"]["screen"]
    assert mirrored["leftHand"]["screen"][0] > hx + 50 and mirrored["leftHand"]["screen"][1] < hy
    assert mirrored["expressions"]["blinkRight"] == 1.0

    # Framing: the face fills the view (no feet); full body shows the feet.
    page.get_by_role("radio", name="Face").check()
    face = page.evaluate(READ_POSE_JS)
    assert face["leftFoot"]["screen"][1] > face["size"][1]
    assert 0 < face["head"]["screen"][1] < face["size"][1]
    page.get_by_role("radio", name="Full body").check()
    full = page.evaluate(READ_POSE_JS)
    assert 0 < full["leftFoot"]["screen"][1] < full["size"][1]

    # Green screen: the background is exactly chroma green for a keyer.
    page.get_by_label("Background", exact=True).select_option("green")
    page.wait_for_timeout(200)
    shot = cv2.imdecode(np.frombuffer(page.locator("#avatar-viewport").screenshot(), np.uint8), 1)
    corner = tuple(int(v) for v in shot[20, -20][::-1])  # RGB near the top-right corner
    assert corner == (0, 255, 0), corner

    # Not VRMs: words, and the current avatar stays.
    model_before = avatar(page, ".model")
    plain_gltf = glb_without_vrm(vrm1, tmp_path / "scene.glb").read_bytes()
    for name, data, words in (
        ("broken.vrm", vrm1.read_bytes()[:5000], "could not be read as a VRM"),
        ("scene.glb", plain_gltf, "without VRM avatar data"),
    ):
        page.evaluate(DROP_FILE_JS, [name, list(data)])
        expect(page.locator("#avatar-message")).to_contain_text(f"{name} ")
        expect(page.locator("#avatar-message")).to_contain_text(words)
        assert avatar(page, ".model") == model_before
    page.set_input_files("#avatar-file", str(vrm1))
    wait_until(page, "() => window.holistream.avatar.model?.vrmVersion === '1.0'")
    expect(page.locator("#avatar-message")).to_be_hidden()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "avatar-green.png")


def test_obs_view_shows_a_named_streams_avatar_on_transparent_ground(
    page: Page, server: ServerProcess
) -> None:
    """/obs?stream=NAME: the avatar alone (no page chrome) on a transparent background, moved by
    the named stream's rig; when the producer stops it eases to neutral."""
    name = unique_name("obs")
    page.goto(f"{server.url}/obs?stream={name}")
    wait_until(page, "window.holistreamObs?.state.ready === true")
    stop = threading.Event()
    producer = threading.Thread(target=produce_until, args=(server, name, stop), daemon=True)
    producer.start()
    try:
        wait_until(page, "window.holistreamObs.state.results >= 8")
        state = page.evaluate("window.holistreamObs.state")
        assert state["connection"] == "connected" and state["tracking"] == "tracking"
        assert state["model"]["fileName"] == "mannequin.vrm"
        assert state["background"] == "transparent"
        page.wait_for_timeout(300)
        png = page.screenshot(omit_background=True)
    finally:
        stop.set()
        producer.join(30)
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "obs.png").write_bytes(png)
    shot = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
    assert shot.shape[2] == 4, "no alpha channel"
    alpha = shot[:, :, 3]
    height, width = alpha.shape
    for y, x in ((5, 5), (5, width - 6), (height - 6, 5), (height - 6, width - 6)):
        assert alpha[y, x] == 0, (y, x)  # the corners show what is behind (OBS's scene)
    opaque = alpha > 250
    assert 0.02 < opaque.mean() < 0.6, opaque.mean()  # an avatar, not a filled page
    xs = np.nonzero(opaque)[1]
    assert abs(xs.mean() - width / 2) < width * 0.15  # framed in the middle
    # No chrome: the canvas is the only thing on the page that shows.
    shown = page.evaluate(
        "[...document.body.querySelectorAll('*')].filter(e => e.checkVisibility())"
        ".map(e => e.tagName)"
    )
    assert shown == ["CANVAS"], shown
    # The producer left: the avatar eases to its neutral pose (arms down).
    wait_until(page, "window.holistreamObs.state.tracking === 'lost'", timeout_s=10)
    page.wait_for_timeout(800)
    arm = page.evaluate("window.holistreamObs.bones.leftUpperArm")
    half = math.radians(65.0) / 2.0  # mirrored: the person's right arm is the avatar's left
    want = expected_bones({"RightUpperArm": [0.0, 0.0, -math.sin(half), math.cos(half)]},
                          mirror=True, version="1.0")["leftUpperArm"]
    assert angle_deg(arm, want) < 0.5


def produce_until(server: ServerProcess, name: str, stop: threading.Event) -> None:
    """A producer on `name` sending the footballer at ~15 fps until told to stop."""
    frames = [media("messi5.jpg").read_bytes()]

    async def run() -> None:
        conn = await connect(server.ws_url + f"?stream={name}", hello={"fps": 15})
        try:
            i = 0
            while not stop.is_set() and i < 600:
                await conn.send_frame(i, frames[0], ts=1000.0 + i * 1000 / 15)
                await conn.result(60)
                i += 1
                await asyncio.sleep(1 / 15)
        finally:
            await conn.close()

    asyncio.run(run())


def unique_name(prefix: str) -> str:
    return f"{prefix}-{os.getpid()}-{time.monotonic_ns() % 10**6}"


def test_page_fits_a_laptop_and_a_phone_and_face_framing_follows_the_head(
    page: Page, server: ServerProcess
) -> None:
    page.goto(f"{server.url}/?autostart=0&view=both&framing=upper")
    wait_avatar_ready(page)
    # 1280 x 800: the avatar's controls are on screen without scrolling.
    for locator in (page.get_by_role("radio", name="Avatar"),
                    page.get_by_role("radio", name="Face"),
                    page.get_by_role("button", name="Re-centre"),
                    page.get_by_label("Background", exact=True)):
        box = locator.bounding_box()
        assert box is not None and box["y"] + box["height"] <= 800, box
    # Side by side, Upper body frames head to hips: the feet are out of the picture.
    page.evaluate("rig => window.holistream.avatar.applyRig(rig)", {"bones": {}})
    upper = page.evaluate(READ_POSE_JS)
    assert upper["leftFoot"]["screen"][1] > upper["size"][1]
    assert 0 < upper["head"]["screen"][1] < upper["size"][1] * 0.4
    # Face framing follows the head: a body leaning 35° to the side keeps the head in view.
    page.get_by_role("radio", name="Face").check()
    half = [0.0, 0.0, math.sin(math.radians(17.5)), math.cos(math.radians(17.5))]
    lean = {"bones": {"Spine": half, "Chest": half}}
    page.evaluate("rig => window.holistream.avatar.applyRig(rig)", lean)
    page.wait_for_timeout(1500)  # the framing glides after the head
    face = page.evaluate(READ_POSE_JS)
    x, y = face["head"]["screen"]
    width, height = face["size"]
    assert 0.3 * width < x < 0.7 * width and 0.2 * height < y < 0.8 * height, (x, y, width, height)

    # A phone: the avatar's view switch is on the first screen.
    phone = page.context.browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    try:
        small = phone.new_page()
        small.goto(f"{server.url}/?autostart=0&view=avatar")
        box = small.get_by_role("radio", name="Side by side").bounding_box()
        assert box is not None and box["y"] + box["height"] <= 844, box
    finally:
        phone.close()
