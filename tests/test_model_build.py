"""Offline build of the model bundles: the refinement maths (fast) and the real build (slow).

The slow tests fetch the mediapipe 0.10.21 wheel with pip once (cached in the wheel dir, see
``server.model.wheel.default_wheel_dir``) and build every bundle into a temp cache.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from server.model import (
    BUNDLES,
    ModelError,
    Provisioned,
    download,
    provision_all,
    resolve_model,
)
from server.model.face_spec import (
    FACE_LAYOUT,
    Refinement,
    find_face_refinements,
    parse_refinements,
    plan_gather,
)

# --- the refinement maths, against a direct transcription of LandmarksRefinementCalculator ---


def _reference(refs: Sequence[Refinement], sources: Sequence[np.ndarray]) -> np.ndarray:
    n = 1 + max(i for r in refs for i in r.indexes)
    out = np.zeros((n, 3), dtype=np.float64)
    for r, src in zip(refs, sources, strict=True):
        for j, i in enumerate(r.indexes):
            out[i, :2] = src[j, :2]
        if r.z == "copy":
            for j, i in enumerate(r.indexes):
                out[i, 2] = src[j, 2]
        elif r.z == "average":
            out[list(r.indexes), 2] = out[list(r.z_average_of), 2].mean()
    return out


def _via_plan(refs: Sequence[Refinement], sources: Sequence[np.ndarray]) -> np.ndarray:
    plan = plan_gather(refs, [s.shape[1] for s in sources])
    mesh = sources[0]
    xy = np.concatenate([mesh[:, :2], *sources[1:]])[list(plan.xy_rows)]
    means = [mesh[list(rows), 2].mean(keepdims=True) for rows in plan.z_means]
    z = np.concatenate([mesh[:, 2], *means])[list(plan.z_rows)]
    return np.column_stack([xy, z])


def _random_sources(refs: Sequence[Refinement], seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(len(r.indexes), 3 if k == 0 else 2)) for k, r in enumerate(refs)]


def test_plan_matches_reference_with_overlaps_and_averages() -> None:
    refs = [
        Refinement(tuple(range(6)), "copy"),
        Refinement((1, 2), "none"),
        Refinement((2, 3), "none"),  # overlaps the previous one: later wins
        Refinement((6, 7), "average", (0, 1, 2)),
    ]
    sources = _random_sources(refs)
    np.testing.assert_allclose(_via_plan(refs, sources), _reference(refs, sources))


def test_plan_rejects_what_a_single_gather_cannot_express() -> None:
    with pytest.raises(ModelError):
        plan_gather([Refinement((0, 1), "copy"), Refinement((2,), "none")], [3, 2])  # no z for 2
    with pytest.raises(ModelError):
        plan_gather([Refinement((0,), "none"), Refinement((1,), "copy")], [2, 3])


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _encode(refs: Sequence[Refinement], packed: bool = True) -> bytes:
    """Serialize LandmarksRefinementCalculatorOptions the way protoc would."""
    out = b""
    for r in refs:
        if packed:
            body = _field(1, b"".join(_varint(i) for i in r.indexes))
        else:
            body = b"".join(_varint(1 << 3) + _varint(i) for i in r.indexes)
        z = {"none": _field(1, b""), "copy": _field(2, b"")}.get(r.z)
        if z is None:
            z = _field(3, _field(1, b"".join(_varint(i) for i in r.z_average_of)))
        out += _field(1, body + _field(2, z))
    return out


def _face_like_refs() -> tuple[Refinement, ...]:
    rng = np.random.default_rng(1)
    refs = [Refinement(tuple(range(468)), "copy")]
    for n, _ in FACE_LAYOUT[1:4]:
        refs.append(Refinement(tuple(int(i) for i in rng.choice(468, n, replace=False)), "none"))
    for first in (468, 473):
        eye = tuple(int(i) for i in rng.choice(468, 16, replace=False))
        refs.append(Refinement(tuple(range(first, first + 5)), "average", eye))
    return tuple(refs)


@pytest.mark.parametrize("packed", [True, False])
def test_refinements_are_decoded_and_found_in_a_binary(packed: bool) -> None:
    refs = _face_like_refs()
    assert parse_refinements(_encode(refs, packed)) == refs
    options = _encode(refs, packed)
    blob = b"\x00junk" * 100 + _field(381914658, options) + b"\xa2\x9c\x8e\xb6more junk"
    assert find_face_refinements(blob) == refs
    sources = _random_sources(refs, seed=2)
    np.testing.assert_allclose(_via_plan(refs, sources), _reference(refs, sources))


def test_binary_without_the_face_refinement_is_a_model_error() -> None:
    wrong = _face_like_refs()[:5]
    with pytest.raises(ModelError, match="found 0"):
        find_face_refinements(b"nothing here" + _field(381914658, _encode(wrong)))


# --- the real build (slow) ---


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Provisioned]]:
    cache = tmp_path_factory.mktemp("models")
    return cache, provision_all(cache_dir=cache, allow_download=False, log=lambda _: None)


@pytest.mark.slow
def test_offline_build_of_all_bundles_passes_the_self_check(
    built: tuple[Path, list[Provisioned]],
) -> None:
    cache, provisioned = built
    results = {r.name: r for r in provisioned}
    assert set(results) == set(BUNDLES)
    assert {r.source for r in results.values()} == {"built"}
    assert results["holistic"].counts == {
        "face": 478,
        "pose": 33,
        "left_hand": 21,
        "right_hand": 21,
    }
    assert results["face"].counts == {"face": 478}
    assert results["pose"].counts == {"pose": 33}
    assert results["hands"].counts == {"hands": 1, "hand_points": 21}
    for name, r in results.items():
        assert r.path == cache / BUNDLES[name]
        assert hashlib.sha256(r.path.read_bytes()).hexdigest() == r.sha256
    leftovers = [p.name for p in cache.iterdir() if p.name.endswith(".part")]
    assert leftovers == []


@pytest.mark.slow
def test_rerun_reuses_the_cache(built: tuple[Path, list[Provisioned]]) -> None:
    cache, _ = built
    start = time.monotonic()
    paths = [
        resolve_model(n, cache_dir=cache, allow_download=False, allow_build=False) for n in BUNDLES
    ]
    assert time.monotonic() - start < 2
    assert paths == [cache / f for f in BUNDLES.values()]


@pytest.mark.slow
def test_build_is_reproducible(built: tuple[Path, list[Provisioned]], tmp_path: Path) -> None:
    cache, _ = built
    again = resolve_model("face", cache_dir=tmp_path, allow_download=False, log=lambda _: None)
    assert again.read_bytes() == (cache / BUNDLES["face"]).read_bytes()


@pytest.mark.slow
def test_real_refinement_table_is_the_legacy_one() -> None:
    from server.model.wheel import default_wheel_dir, fetch_wheel, load_legacy

    refs = load_legacy(fetch_wheel(default_wheel_dir(), log=lambda _: None)).face_refinements
    assert refs[1].indexes[:6] == (61, 146, 91, 181, 84, 17)  # lips
    assert refs[2].indexes[:4] == (33, 7, 163, 144)  # left eye
    assert refs[4].z_average_of[:3] == (33, 7, 163)  # left iris z from the left eye contour


@pytest.mark.slow
def test_self_check_catches_a_wrong_face_rewrite(tmp_path: Path) -> None:
    from server.model.build import BundleBuilder, add_image_metadata, write_bundle
    from server.model.face_rewrite import rewrite_face_model
    from server.model.selfcheck import self_check
    from server.model.wheel import default_wheel_dir, fetch_wheel, load_legacy

    legacy = load_legacy(fetch_wheel(default_wheel_dir(), log=lambda _: None))
    refs = list(legacy.face_refinements)
    refs[4], refs[5] = (  # swap the irises' destinations: each lands in the other eye
        dataclasses.replace(refs[4], indexes=refs[5].indexes),
        dataclasses.replace(refs[5], indexes=refs[4].indexes),
    )
    source = legacy.files["face_landmark/face_landmark_with_attention.tflite"]
    wrong = add_image_metadata(rewrite_face_model(source, refs), 0.0, 255.0)
    bundle = tmp_path / "face.task"
    detector = BundleBuilder(legacy).member("face_detector.tflite")
    write_bundle(
        {"face_detector.tflite": detector, "face_landmarks_detector.tflite": wrong}, bundle
    )
    with pytest.raises(ModelError, match="implausible"):
        self_check("face", bundle)


@pytest.fixture
def serve_file() -> Iterator[dict[str, bytes]]:
    """A local HTTP server; put ``{"/path": bytes}`` in the yielded dict to serve them."""
    files: dict[str, bytes] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            body = files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    files["base"] = f"http://127.0.0.1:{httpd.server_address[1]}".encode()
    yield files
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.slow
def test_download_path_installs_a_verified_bundle(
    built: tuple[Path, list[Provisioned]],
    serve_file: dict[str, bytes],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    body = (built[0] / BUNDLES["pose"]).read_bytes()
    serve_file["/pose.task"] = body
    url = serve_file["base"].decode() + "/pose.task"
    monkeypatch.setitem(download.OFFICIAL, "pose", download.Official(url, None))
    [result] = provision_all(cache_dir=tmp_path, only=["pose"], log=lambda _: None)
    assert result.source == "download"
    assert result.counts == {"pose": 33}
    assert result.path.read_bytes() == body


@pytest.mark.parametrize("junk_then_fail", [True, False])
def test_failed_build_leaves_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, junk_then_fail: bool
) -> None:
    """A build that dies half-way, or whose output fails the self-check, leaves nothing."""
    import server.model

    def broken_write(self: object, name: str, dest: Path) -> None:
        dest.write_bytes(b"PK\x03\x04 half a bundle")
        if junk_then_fail:
            raise ModelError("build died")

    monkeypatch.setattr(server.model._Legacy, "write", broken_write)
    with pytest.raises(ModelError, match="build died" if junk_then_fail else "self-check"):
        resolve_model("pose", cache_dir=tmp_path, allow_download=False, log=lambda _: None)
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []


@pytest.mark.slow
def test_cli_prints_one_line_per_bundle(
    built: tuple[Path, list[Provisioned]], capsys: pytest.CaptureFixture[str]
) -> None:
    from server.model import cli

    assert cli.main(["--cache-dir", str(built[0]), "--offline"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list(BUNDLES)
    assert all(" cache " in line and "sha256:" in line for line in lines)
    assert "face=478 pose=33 left_hand=21 right_hand=21" in lines[0]


def test_cli_fails_clearly_on_a_missing_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from server.model import cli

    assert cli.main(["--model", str(tmp_path / "nope.task"), "--only", "holistic"]) == 1
    assert "does not exist" in capsys.readouterr().err
