"""The worked producer example of docs/protocol.md ("Flow control: credits") runs as written
against a real server, and keeps within the credits it read from `ready`."""

from __future__ import annotations

import re

from tests.conftest import ServerProcess, media
from tests.protocol_schema import SCHEMA_PATH

DOC = SCHEMA_PATH.parent / "protocol.md"


def _example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    return next(b for b in blocks if "async def produce" in b)


async def test_the_documented_producer_loop_works(server: ServerProcess) -> None:
    namespace: dict = {}
    exec(compile(_example(), "docs/protocol.md", "exec"), namespace)
    jpeg = media("messi5.jpg").read_bytes()
    results = await namespace["produce"](server.ws_url, [jpeg] * 6)
    frames = [r["frame"] for r in results]
    assert frames == sorted(frames) and frames[-1] == 5
    # With 2 credits nothing is superseded: every frame is answered or (under load) stale.
    assert len(results) + sum(r["dropped"] for r in results) == 6
    assert all(r["pose"] is not None and len(r["pose"]) == 165 for r in results)
