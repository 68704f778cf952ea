"""Locust profile for the single-image API: `POST /v1/predict`, varied images, checked answers.

    locust -f loadgen/locustfile.py --headless -u 20 -r 20 -t 30s --host http://127.0.0.1:8000

Each user uploads a random image from a folder as the multipart field `file`, then waits a
human-like pause. A response counts as a success only when it is a 200 whose body carries every
requested part with the right number of values (or null: not found). Failures are named by
status and error code ("HTTP 503 server_full"), so a run's failure table says what went wrong.
Refusals (503) are counted under their own name, "<path> (503)": instant refusals would
otherwise pull down the percentiles of the requests that were answered.

Settings (environment):
  HOLISTREAM_LOCUST_IMAGES  folders of .jpg/.jpeg/.png/.webp, separated by ':' (default: the
                            repository's test and server fixtures)
  HOLISTREAM_LOCUST_PARTS   parts query, e.g. "pose,hands" (default: all)
  HOLISTREAM_LOCUST_MODE    mode query, "fast" or "exact" (default: the server's, fast)
  HOLISTREAM_LOCUST_WAIT    "min,max" seconds between a user's requests (default "0.5,1.5")
  HOLISTREAM_LOCUST_UNIQUE  "1": make every upload's bytes unique (same pixels), so no result
                            cache can answer (for measuring inference, not the cache)
  HOLISTREAM_LOCUST_EXPECT  "pose": also require a pose in every answer (images of people)
  HOLISTREAM_LOCUST_TOKEN   bearer token, when the server requires one
  HOLISTREAM_LOCUST_PATH    the endpoint path (default /v1/predict)
"""

from __future__ import annotations

import itertools
import os
import random
from pathlib import Path
from typing import Any

from locust import HttpUser, between, task

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_FOLDERS = (ROOT / "tests" / "fixtures", ROOT / "server" / "fixtures")
SUFFIXES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp"}
# Values per part in a result, as docs/protocol.md defines them (points × stride).
PART_SIZES = {
    "pose": 33 * 5,
    "pose_world": 33 * 3,
    "face": 478 * 3,
    "left_hand": 21 * 3,
    "right_hand": 21 * 3,
    "left_hand_world": 21 * 3,
    "right_hand_world": 21 * 3,
}
GROUPS = {
    "face": ("face",),
    "hands": ("left_hand", "right_hand", "left_hand_world", "right_hand_world"),
    "pose": ("pose", "pose_world"),
}
REQUEST_TIMEOUT_S = 30.0


def load_images(spec: str | None) -> list[tuple[str, bytes, str]]:
    """(name, bytes, content type) of every image in the folders; at least one is required."""
    folders = [Path(p) for p in spec.split(":") if p] if spec else list(DEFAULT_FOLDERS)
    images = []
    for folder in folders:
        for path in sorted(folder.iterdir()) if folder.is_dir() else []:
            ctype = SUFFIXES.get(path.suffix.lower())
            if ctype is not None and path.is_file():
                images.append((path.name, path.read_bytes(), ctype))
    if not images:
        raise SystemExit(f"no .jpg/.png/.webp images in {', '.join(map(str, folders))}")
    return images


def expected_parts(parts: str) -> tuple[str, ...]:
    return tuple(p for g in (parts.split(",") if parts else GROUPS) for p in GROUPS[g])


def check(body: Any, wanted: tuple[str, ...], expect_pose: bool) -> str | None:
    """None when the body is a well-formed result with the wanted parts, else the problem."""
    if not isinstance(body, dict) or not isinstance(body.get("width"), int):
        return "not a result"
    for name in wanted:
        if name not in body:
            return f"no {name}"
        value = body[name]
        if value is not None and (not isinstance(value, list) or len(value) != PART_SIZES[name]):
            return f"{name} has the wrong size"
    if expect_pose and body.get("pose") is None:
        return "no pose found"
    return None


IMAGES = load_images(os.environ.get("HOLISTREAM_LOCUST_IMAGES"))
PARTS = os.environ.get("HOLISTREAM_LOCUST_PARTS", "")
MODE = os.environ.get("HOLISTREAM_LOCUST_MODE", "")
QUERY = "&".join(f"{k}={v}" for k, v in (("parts", PARTS), ("mode", MODE)) if v)
WANTED = expected_parts(PARTS)
WAIT = tuple(float(x) for x in os.environ.get("HOLISTREAM_LOCUST_WAIT", "0.5,1.5").split(","))
UNIQUE = os.environ.get("HOLISTREAM_LOCUST_UNIQUE") == "1"
EXPECT_POSE = os.environ.get("HOLISTREAM_LOCUST_EXPECT") == "pose"
TOKEN = os.environ.get("HOLISTREAM_LOCUST_TOKEN")
PATH = os.environ.get("HOLISTREAM_LOCUST_PATH", "/v1/predict")
_serial = itertools.count()


class PredictUser(HttpUser):
    wait_time = between(WAIT[0], WAIT[-1])

    @task
    def predict(self) -> None:
        name, data, ctype = random.choice(IMAGES)
        if UNIQUE:  # bytes after the image's end marker: same pixels, a new cache key
            data = data + b"\0locust-%d-%d" % (os.getpid(), next(_serial))
        headers = {"Authorization": f"Bearer {TOKEN}"} if TOKEN else {}
        query = f"?{QUERY}" if QUERY else ""
        with self.client.post(
            PATH + query,
            files={"file": (name, data, ctype)},
            headers=headers,
            name=PATH,
            timeout=REQUEST_TIMEOUT_S,
            catch_response=True,
        ) as resp:
            if resp.status_code == 503:
                resp.request_meta["name"] = f"{PATH} (503)"
            if resp.status_code != 200:
                code = ""
                try:
                    code = resp.json()["error"]["code"]
                except Exception:  # not our JSON error body (a proxy, a crash)
                    code = "unexpected body"
                resp.failure(f"HTTP {resp.status_code} {code}".strip())
                return
            try:
                problem = check(resp.json(), WANTED, EXPECT_POSE)
            except ValueError:
                problem = "not JSON"
            if problem is None:
                resp.success()
            else:
                resp.failure(problem)
