"""What the workers answer, delivered: results to their sessions and streams, errors, pipeline
switches, replaced workers. The pool calls these (its Callbacks); Core wires them up.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from holistream import protocol
from server.metrics import Metrics
from server.sessions.admission import AdmissionPolicy
from server.sessions.frame_slot import Pending
from server.sessions.session import FramePayload, Session
from server.streams.hub import StreamHub
from server.workers.messages import FrameResult
from server.workers.pool import Callbacks


class Delivery:
    def __init__(
        self,
        admission: AdmissionPolicy,
        hub: StreamHub,
        metrics: Metrics,
        regrant: Callable[[], None],
    ) -> None:
        self.admission = admission
        self.hub = hub
        self.metrics = metrics
        self.regrant = regrant  # share capacity again (a session's cost changed)

    def callbacks(self) -> Callbacks[Session]:
        return Callbacks(self.result, self.frame_error, self.worker_lost)

    def result(self, session: Session, pending: Pending[FramePayload], result: FrameResult) -> None:
        if result.switched is not None:
            self.pipeline_switch(session, result.pipeline, result.switched)
        rig = None
        if result.rig_json is not None and result.rig_arrays is not None:
            rig = (result.rig_json, result.rig_arrays)
        now = time.monotonic()
        out = session.deliver(
            pending,
            result.width,
            result.height,
            result.parts,
            result.decode_ms,
            result.inference_ms,
            rig,
            now,
            result.pipeline,
        )
        # What this frame really cost its worker prices the session's grant from now on.
        wall_ms = result.decode_ms + result.inference_ms
        self.admission.observe(session.id, result.cpu_s * 1000, wall_ms)
        if session.stream is not None:
            self.hub.fan_out(session, out)
        self.metrics.frames_processed.inc()
        self.metrics.inference.labels(result.pipeline).observe(result.inference_ms / 1000)
        self.metrics.server_latency.observe(out.result.timing.total_ms / 1000)

    def pipeline_switch(self, session: Session, pipeline: str, switched: str) -> None:
        """The worker's fallback policy (workers/fallback.py) switched pipelines: the reservation
        follows what really runs (best effort: tracking is never refused mid-session), and the
        client hears of each fallback once."""
        self.admission.switch(session.id, pipeline)  # best effort: never refused mid-session
        self.regrant()
        if switched == "fallback":
            cheap = session.pipeline
            session.send_control(
                protocol.warning_message(
                    "pipeline_fallback",
                    f"the {cheap} pipeline misses parts here that holistic finds: this session "
                    f"runs holistic for now ({cheap} is tried again every few seconds)",
                )
            )

    def frame_error(
        self, session: Session, pending: Pending[FramePayload], code: str, msg: str
    ) -> None:
        self.metrics.frame_errors.labels(code).inc()
        session.error(code, msg, frame=pending.frame_id, refused=True)

    def worker_lost(self, session: Session) -> None:
        session.send_control(
            protocol.warning_message(
                "worker_restarted",
                "the worker serving this session died and was replaced; tracking restarted",
            )
        )
