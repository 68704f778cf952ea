"""The fast single-image detector in process (server.predict.composite), real models: order
independence, parity with a fresh HolisticLandmarker, and only the parts asked for."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from server.model import resolve_model
from server.predict.composite import CompositeHolistic
from server.workers import pipelines
from server.workers.imaging import decode_rgb
from tests.conftest import media

PARTS = ("pose", "pose_world", "face", "left_hand", "right_hand", "left_hand_world",
         "right_hand_world")


def image(name: str) -> np.ndarray:
    return decode_rgb(media(name).read_bytes(), max_pixels=1 << 24, max_side=8192)


@pytest.fixture(scope="module")
def models() -> dict[str, Path]:
    return {name: resolve_model(name, allow_download=False, allow_build=False,
                                log=lambda _: None) for name in ("holistic", "pose", "face")}


@pytest.fixture(scope="module")
def composite(models: dict[str, Path]) -> Iterator[CompositeHolistic]:
    detector = CompositeHolistic(models)
    yield detector
    detector.close()


def test_a_after_b_equals_a_alone(composite: CompositeHolistic, models: dict[str, Path]) -> None:
    a, b = image("messi5.jpg"), image("astronaut.png")
    first = composite.detect(a)
    composite.detect(b)
    again = composite.detect(a)
    alone = CompositeHolistic(models)
    try:
        fresh = alone.detect(a)
    finally:
        alone.close()
    for name in PARTS:
        assert first[name] is not None, name
        assert np.array_equal(first[name], again[name]), name  # type: ignore[arg-type]
        assert np.array_equal(first[name], fresh[name]), name  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["messi5.jpg", "astronaut.png", "astronaut_face.jpg"])
def test_same_parts_as_a_fresh_holistic_landmarker_within_the_published_distance(
    composite: CompositeHolistic, models: dict[str, Path], name: str
) -> None:
    rgb = image(name)
    height, width = rgb.shape[:2]
    exact = pipelines.create("holistic", models["holistic"], (), video=False)
    try:
        reference = exact.detect(rgb, None)
    finally:
        exact.close()
    ours = composite.detect(rgb)
    for part in PARTS:
        assert (ours[part] is None) == (reference[part] is None), part
    for part in ("pose", "face", "left_hand", "right_hand"):
        got, ref = ours[part], reference[part]
        if got is None or ref is None:
            continue
        pixels = (got[:, :2] - ref[:, :2]) * (width, height)
        distance = np.hypot(pixels[:, 0], pixels[:, 1]) / max(width, height)
        assert np.median(distance) <= 0.01, (part, np.median(distance))
    assert ours["pose"] is not None and reference["pose"] is not None
    assert np.abs(ours["pose"] - reference["pose"]).max() <= 1e-4  # the same single pass


def test_only_the_parts_asked_for_are_looked_for(composite: CompositeHolistic) -> None:
    rgb = image("messi5.jpg")
    everything = composite.detect(rgb)
    pose_only = composite.detect(rgb, wanted=("pose",))
    assert pose_only["face"] is None and pose_only["left_hand"] is None
    assert np.array_equal(pose_only["pose"], everything["pose"])  # type: ignore[arg-type]
    left = composite.detect(rgb, wanted=("left_hand_world",))
    assert left["face"] is None and left["right_hand"] is None
    assert np.array_equal(left["left_hand_world"], everything["left_hand_world"])  # type: ignore[arg-type]
    assert all(v is None for v in composite.detect(image("building.jpg")).values())
