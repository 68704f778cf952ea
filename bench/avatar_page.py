"""The avatar's mouth on the rendered demo page: how closely it follows the server's mouth value
and the person's lip gap (docs/rig.md, "Motion quality").

A real server on 127.0.0.1 and Debian's headless Chromium with the fake camera playing
`messi_pan` (looped); the page in Side by side view asks for the rig. For `--seconds` the page
logs, for every frame it draws: the mouth opening drawn (the mannequin's "aa" morph weight after
three-vrm's update), the server's `A` of the newest result, and that result's lip gap (inner lips
13-14 over the face's height 10-152, from its face landmarks). Prints the correlations.

    .venv/bin/python -m bench.avatar_page [--seconds 8]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.browser import CAMERA_CLIP, chromium  # noqa: E402
from tests.harness import start_server  # noqa: E402
from tests.y4m import avi_to_y4m  # noqa: E402


def correlation(a: list[float], b: list[float]) -> float:
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.corrcoef(x, y)[0, 1]) if len(x) > 2 and x.std() and y.std() else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.avatar_page", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args(argv)
    # CPU admission relaxed as in the tests: a shared 2-core box may not price a 30 fps session in.
    server = start_server("--workers", "2", "--cpu-overcommit", "20", name="avatar-page")
    tmp = tempfile.TemporaryDirectory()
    try:
        camera = avi_to_y4m(CAMERA_CLIP, Path(tmp.name) / "messi.y4m")
        with chromium(camera) as browser:
            page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
            page.goto(f"{server.url}/?view=both&framing=upper")
            try:
                page.wait_for_function("window.holistream?.avatar?.rigResults >= 10",
                                       timeout=60_000)
            except Exception:
                print("page:", page.evaluate("({state: window.holistream?.state, notices: "
                                             "window.holistream?.notices, results: "
                                             "window.holistream?.results})"), file=sys.stderr)
                raise
            page.evaluate("window.holistream.avatar.startMouthLog()")
            time.sleep(args.seconds)
            log = page.evaluate("window.holistream.avatar.stopMouthLog()")
            results = page.evaluate("window.holistream.avatar.rigResults")
    finally:
        server.stop()
        tmp.cleanup()
    with_gap = [e for e in log if e["lipGap"] is not None]
    drawn = [e["rendered"] for e in with_gap]
    print(f"{len(log)} frames drawn in {args.seconds:g} s ({results} rig results in all)")
    server_a = [e["server"] for e in with_gap]
    gap = [e["lipGap"] for e in with_gap]
    print(f"mouth drawn vs the server's A:   r = {correlation(drawn, server_a):.3f}")
    print(f"mouth drawn vs the lip gap:      r = {correlation(drawn, gap):.3f}")
    print(f"server's A vs the lip gap:       r = {correlation(server_a, gap):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
