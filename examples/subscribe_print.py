"""Subscribe to a holistream stream and print head and wrist positions live.

    python examples/subscribe_print.py --url ws://127.0.0.1:8000 --stream alice

Someone must publish the stream: the browser demo with a stream name, or any producer connecting
to `/ws?stream=alice`. Positions are normalised image coordinates (x, y in [0, 1]).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib

from holistream.client import Result, StreamEvent, subscribe

HEAD_POSE, HEAD_FACE = 0, 1  # pose landmark 0 is the nose; face mesh point 1 the nose tip
LEFT_WRIST, RIGHT_WRIST = 15, 16  # pose landmarks; hand landmark 0 is the wrist too


def point(result: Result, part: str, index: int) -> str:
    arr = result.parts.get(part)
    return "   –   " if arr is None else f"{arr[index, 0]:.3f},{arr[index, 1]:.3f}"


async def main(url: str, stream: str, count: int) -> None:
    async with subscribe(url, stream) as sub:
        seen = 0
        async for msg in sub:
            if isinstance(msg, StreamEvent):
                print(f"# {msg.type}: {msg.stream} {msg.reason or ''}", flush=True)
            elif isinstance(msg, Result):
                has_pose = msg.parts.get("pose") is not None
                head = point(msg, "pose", HEAD_POSE) if has_pose else point(msg, "face", HEAD_FACE)
                left = f"{point(msg, 'pose', LEFT_WRIST)} / {point(msg, 'left_hand', 0)}"
                right = f"{point(msg, 'pose', RIGHT_WRIST)} / {point(msg, 'right_hand', 0)}"
                print(f"seq {msg.seq:6d}  head {head}  wrists L {left}  R {right}", flush=True)
                seen += 1
                if count and seen >= count:
                    break


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--url", default="ws://127.0.0.1:8000", help="the server")
    parser.add_argument("--stream", required=True, help="the stream name to follow")
    parser.add_argument("--count", type=int, default=0, help="stop after N results (0 = never)")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(args.url, args.stream, args.count))
