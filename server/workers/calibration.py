"""Start-up calibration: the images each pipeline is measured on, and the costs admission takes
from the workers' measurements (workers/process.py Worker.calibrate). Pure but for reading the
images."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from server.sessions.admission import PipelineCost
from server.workers.messages import Calibrated

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
CALIBRATION_IMAGES = {
    "holistic": "messi5.jpg",
    "holistic_lite": "messi5.jpg",
    "pose": "messi5.jpg",
    "hands": "messi5.jpg",
    "face": "astronaut_face.jpg",
}
FRAMES = 8  # measured frames per pipeline and worker


def calibration_images(pipelines: Sequence[str]) -> dict[str, bytes]:
    """The image each of `pipelines` is measured on (those that have one)."""
    return {
        name: (FIXTURES / file).read_bytes()
        for name, file in CALIBRATION_IMAGES.items()
        if name in pipelines and (FIXTURES / file).exists()
    }


def measured_costs(
    replies: Sequence[Calibrated], defaults: Mapping[str, PipelineCost]
) -> dict[str, PipelineCost]:
    """Per pipeline: the mean CPU ms per frame over the workers and the median memory. A
    landmarker grows after its first frames, so a start-up reading undershoots what a session
    costs over time: the default (measured per session) memory figure is a floor."""
    costs: dict[str, PipelineCost] = {}
    for name in sorted({n for r in replies for n in r.costs}):
        samples = [r.costs[name] for r in replies if name in r.costs]
        ms = sum(s.ms_per_frame for s in samples) / len(samples)
        memory = sorted(s.memory_bytes for s in samples)[len(samples) // 2]
        default = defaults[name]
        costs[name] = PipelineCost(ms, max(memory, default.memory_bytes), default.parallelism)
    return costs
