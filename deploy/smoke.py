#!/usr/bin/env python3
"""A real session against a running holistream (directly or through nginx): hello → ready →
results with landmarks, optionally with a subscriber on the same named stream.

    python3 deploy/smoke.py --url ws://127.0.0.1:8000 [--stream NAME] [--subscribe] [--frames 8]

Prints one JSON line (pipeline, results, parts found, worker) and exits 0 when every check holds,
1 otherwise. Needs only the bundled client (`holistream.client`); the image carries it, with the
server's fixture photo, as /opt/holistream/smoke.py.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from pathlib import Path

from holistream.client import Result, SessionClosed, connect, subscribe


def _fixture() -> bytes:
    import server

    return (Path(server.__file__).parent / "fixtures" / "messi5.jpg").read_bytes()


async def _subscriber(url: str, stream: str, want: int, got: list[int]) -> None:
    async with subscribe(url, stream) as sub:
        async for msg in sub:
            if isinstance(msg, Result):
                got.append(msg.frame)
                if len(got) >= want:
                    return


async def run(args: argparse.Namespace) -> dict[str, object]:
    image = Path(args.image).read_bytes() if args.image else _fixture()
    report: dict[str, object] = {"url": args.url, "stream": args.stream}
    async with connect(args.url, stream=args.stream, token=args.token, fps=args.fps) as client:
        assert client.ready is not None
        report["session"] = client.ready.session
        report["pipeline"] = client.ready.pipeline
        seen: list[int] = []
        task = None
        if args.subscribe and args.stream:
            task = asyncio.create_task(_subscriber(args.url, args.stream, args.frames // 2, seen))
            await asyncio.sleep(0.5)  # the subscriber attaches before the frames flow
        results: list[Result] = []
        async with asyncio.timeout(args.timeout):
            for _ in range(args.frames):
                await client.send_frame(image)
                await asyncio.sleep(1 / args.fps)
            while len(results) < args.frames // 2:
                msg = await client.recv()
                if isinstance(msg, Result):
                    results.append(msg)
            if task is not None:
                await task
        found = {k: (0 if v is None else len(v)) for k, v in results[-1].parts.items()}
        report |= {"results": len(results), "parts": found, "subscriber_results": len(seen)}
        if args.hold > 0:  # stream on until the server ends the session (or `hold` runs out)
            print(json.dumps({"streaming": True, **report}), flush=True)
            try:
                async with asyncio.timeout(args.hold):
                    while True:
                        await client.send_frame(image)
                        await asyncio.sleep(1 / args.fps)
            except SessionClosed as exc:
                report["closed"] = exc.code
                report["close_error"] = exc.error.code if exc.error else None
            except TimeoutError:
                report["closed"] = None
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return report


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", default="ws://127.0.0.1:8000")
    p.add_argument("--stream", default=None, help="publish as this named stream")
    p.add_argument("--subscribe", action="store_true", help="also subscribe to --stream")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--fps", type=float, default=10.0)
    p.add_argument("--image", default=None, help="a JPEG/PNG (default: the server's fixture)")
    p.add_argument("--token", default=None)
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--hold", type=float, default=0.0,
                   help="then stream on for up to this many seconds; success is the server "
                   "closing the session with 1001 (a graceful stop)")
    args = p.parse_args()
    try:
        report = asyncio.run(run(args))
    except Exception as exc:  # one line for a script to print, not a traceback
        print(json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}"}), flush=True)
        return 1
    parts = report.get("parts") or {}
    ok = isinstance(parts, dict) and parts.get("pose") == 33 and report.get("results", 0) > 0
    if args.subscribe and args.stream:
        ok = ok and bool(report.get("subscriber_results"))
    if args.hold > 0:
        ok = ok and report.get("closed") == 1001
    print(json.dumps({"ok": ok, **report}), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
