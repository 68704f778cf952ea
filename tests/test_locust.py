"""The Locust profile of /v1/predict runs headless against a real server, and its check bites."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, ServerProcess, media

LOCUST = Path(sys.executable).parent / "locust"


def start_locust(
    host: str, out: Path, env: dict[str, str], seconds: int
) -> subprocess.Popen[bytes]:
    args = [str(LOCUST), "-f", str(ROOT / "loadgen" / "locustfile.py"), "--headless",
            "-u", "3", "-r", "3", "-t", f"{seconds}s", "--host", host, "--csv", str(out),
            "--only-summary", "--stop-timeout", "15", "--loglevel", "WARNING"]
    with open(f"{out}.log", "wb") as log:  # the child keeps its own descriptor
        return subprocess.Popen(args, env={**os.environ, **env}, stdout=log, stderr=log)


def totals(out: Path) -> tuple[int, int]:
    with open(f"{out}_stats.csv", newline="") as f:
        row = next(r for r in csv.DictReader(f) if r["Name"] == "Aggregated")
    return int(row["Request Count"]), int(row["Failure Count"])


def test_locust_headless_finishes_without_failures(server: ServerProcess, tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    for name in ("messi5.jpg", "astronaut.png", "building.jpg", "astronaut_face.jpg"):
        shutil.copy(media(name), images / name)
    people = tmp_path / "people"
    people.mkdir()
    shutil.copy(media("building.jpg"), people / "building.jpg")  # no person in it

    good = start_locust(server.url, tmp_path / "good", {
        "HOLISTREAM_LOCUST_IMAGES": str(images), "HOLISTREAM_LOCUST_UNIQUE": "1",
        "HOLISTREAM_LOCUST_WAIT": "0.2,0.6"}, seconds=5)
    # The same profile told to expect a person, on an image without one, must fail.
    strict = start_locust(server.url, tmp_path / "strict", {
        "HOLISTREAM_LOCUST_IMAGES": str(people), "HOLISTREAM_LOCUST_EXPECT": "pose",
        "HOLISTREAM_LOCUST_WAIT": "0.5,1"}, seconds=3)
    good_rc, strict_rc = good.wait(60), strict.wait(60)

    requests, failures = totals(tmp_path / "good")
    assert good_rc == 0, (tmp_path / "good.log").read_text()
    assert requests >= 3 and failures == 0  # each user finishes at least its first request
    requests, failures = totals(tmp_path / "strict")
    assert strict_rc != 0 and requests >= 1 and failures == requests
    with open(tmp_path / "strict_failures.csv", newline="") as f:
        assert {r["Error"] for r in csv.DictReader(f)} == {"CatchResponseError('no pose found')"}
