"""The classic single-image design, as the comparison baseline for holistream's /v1/predict.

Flask on Werkzeug's threaded server (a thread per connection), a ThreadPoolExecutor of 4 for
inference, MediaPipe's HolisticLandmarker in IMAGE mode created per request exactly as
MediaPipe's own examples do (`with HolisticLandmarker.create_from_options(...)`): a landmarker
is not thread-safe, and a reused one carries state between images (docs/predict.md). It answers
503 when too many requests are pending and 504 when a result takes longer than 10 s, without
cancelling the work (a running thread cannot be stopped), and can cache results in Redis by
image hash. Its defects are faithful, not introduced: the point is to measure them.

    python bench/baselines/flask_predict.py --port 8001 [--redis-url redis://127.0.0.1:6379/0]

`--landmarker per-thread` reuses one landmarker per pool thread instead, as the classic design is
usually written (and as bench/predict_compare.py runs it): no landmarker creation per image, so
it is fast, but its answers depend on the images that thread saw before (docs/predict.md).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any

os.environ.setdefault("GLOG_minloglevel", "2")  # native logs cost I/O per landmarker

import cv2
import mediapipe as mp
import numpy as np
from flask import Flask, Response, jsonify, request
from mediapipe.tasks.python import BaseOptions
from mediapipe.tasks.python import vision as mpv
from werkzeug.serving import make_server

MODEL = Path.home() / ".cache" / "holistream" / "models" / "holistic_landmarker.task"
POOL_SIZE = 4
TIMEOUT_S = 10.0


def _flat(points: Any, five: bool = False) -> list[float] | None:
    if not points:
        return None
    out: list[float] = []
    for p in points:
        out += [p.x, p.y, p.z] + ([p.visibility or 0.0, p.presence or 0.0] if five else [])
    return [round(v, 4) for v in out]


def landmarks_json(result: Any, width: int, height: int) -> dict[str, Any]:
    """The same field names and layout as holistream's result, for the same Locust check."""
    return {
        "width": width,
        "height": height,
        "pose": _flat(result.pose_landmarks, five=True),
        "pose_world": _flat(result.pose_world_landmarks),
        "face": _flat(result.face_landmarks),
        "left_hand": _flat(result.left_hand_landmarks),
        "right_hand": _flat(result.right_hand_landmarks),
        "left_hand_world": _flat(result.left_hand_world_landmarks),
        "right_hand_world": _flat(result.right_hand_world_landmarks),
    }


class Predictor:
    def __init__(self, model: Path, per_thread: bool) -> None:
        self.options = mpv.HolisticLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(model)),
            running_mode=mpv.RunningMode.IMAGE,
        )
        self.per_thread = per_thread
        self.local = threading.local()

    def __call__(self, rgb: np.ndarray) -> dict[str, Any]:
        image = mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb)
        if self.per_thread:
            if not hasattr(self.local, "landmarker"):
                self.local.landmarker = mpv.HolisticLandmarker.create_from_options(self.options)
            result = self.local.landmarker.detect(image)
        else:
            with mpv.HolisticLandmarker.create_from_options(self.options) as landmarker:
                result = landmarker.detect(image)
        return landmarks_json(result, rgb.shape[1], rgb.shape[0])


def create_app(predictor: Predictor, max_pending: int, redis_url: str | None) -> Flask:
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = 4 * 1024 * 1024
    executor = ThreadPoolExecutor(max_workers=POOL_SIZE)
    lock = threading.Lock()
    pending = [0]
    cache = None
    if redis_url:
        import redis

        cache = redis.Redis.from_url(redis_url)

    def error(status: int, code: str, message: str, **headers: str) -> Response:
        resp = jsonify({"error": {"code": code, "message": message}})
        resp.status_code = status
        resp.headers.update(headers)
        return resp

    @app.post("/predict")
    @app.post("/v1/predict")
    def predict() -> Response:
        upload = request.files.get("file")
        data = upload.read() if upload is not None else request.get_data()
        if not data:
            return error(400, "no_image", "no image")
        key = "flask:predict:" + hashlib.sha256(data).hexdigest()
        if cache is not None:
            hit = cache.get(key)
            if hit is not None:
                return Response(hit, mimetype="application/json")
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            return error(422, "undecodable", "cannot decode the image")
        with lock:
            if pending[0] >= max_pending:
                return error(503, "server_full", "busy", **{"Retry-After": "5"})
            pending[0] += 1
        try:
            future = executor.submit(predictor, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            try:
                body = future.result(timeout=TIMEOUT_S)
            except FutureTimeout:
                return error(504, "timeout", "inference took too long")
        finally:
            with lock:
                pending[0] -= 1
        text = json.dumps(body)
        if cache is not None:
            cache.set(key, text, ex=3600)
        return Response(text, mimetype="application/json")

    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--model", type=Path, default=MODEL)
    parser.add_argument("--max-pending", type=int, default=POOL_SIZE * 5,
                        help="requests admitted at once (running + waiting); beyond: 503")
    parser.add_argument("--redis-url", default=None, help="cache results by image hash")
    parser.add_argument("--landmarker", choices=("per-request", "per-thread"),
                        default="per-request")
    args = parser.parse_args(argv)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    predictor = Predictor(args.model, args.landmarker == "per-thread")
    app = create_app(predictor, args.max_pending, args.redis_url)
    server = make_server(args.host, args.port, app, threaded=True)
    print(f"listening on http://{args.host}:{server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
