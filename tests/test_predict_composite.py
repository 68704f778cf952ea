"""The fast single-image detector in process (server.predict.composite), real models: order
independence, parity with a fresh HolisticLandmarker, and only the parts asked for."""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from server.model import resolve_model
from server.predict.composite import CompositeHolistic, _Model
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


def test_a_hand_model_call_is_the_model_on_the_scaled_crop_and_keeps_no_state(
        models: dict[str, Path]) -> None:
    """The crop is scaled into LiteRT's input tensor in place: the outputs must be those of the
    model given the float crop, and an earlier call's outputs must survive a later call."""
    from ai_edge_litert.interpreter import Interpreter

    with zipfile.ZipFile(models["holistic"]) as bundle:
        content = bundle.read("hand_roi_refinement.tflite")
    model = _Model(content)
    reference = Interpreter(model_content=content, num_threads=1)
    reference.allocate_tensors()
    detail = reference.get_input_details()[0]
    output = reference.get_output_details()[0]
    rng = np.random.default_rng(7)
    crops = [rng.integers(0, 256, (model.size, model.size, 3), dtype=np.uint8) for _ in range(2)]
    first = model(crops[0])
    first_copy = {name: value.copy() for name, value in first.items()}
    second = model(crops[1])
    for crop, got in zip(crops, (first, second), strict=True):
        scaled = crop.astype(np.float32)[None] * np.float32(1 / 255)
        reference.set_tensor(detail["index"], scaled)
        reference.invoke()
        expected = reference.get_tensor(output["index"]).reshape(-1)
        assert np.array_equal(got[output["name"]], expected)  # bit for bit
    assert not np.array_equal(first[output["name"]], second[output["name"]])
    assert all(np.array_equal(first[k], first_copy[k]) for k in first)
