"""`holistream vmc`: send a named stream's rig to a VMC receiver (VSeeFace, Warudo, VNyan, ...).

    holistream vmc --url ws://127.0.0.1:8000 --stream alice --to 127.0.0.1:39539

Exit status: 0 after Ctrl-C / SIGTERM, 1 after --max-retries failed attempts in a row, 2 when the
server refuses in a way retrying cannot fix (bad token, bad stream name) or the arguments are bad.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys

from holistream.vmc.bridge import DEFAULT_PORT, BridgeConfig, VmcBridge

log = logging.getLogger("holistream.vmc")


def parse_target(text: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """`HOST:PORT`, `HOST`, `:PORT` or `[IPv6]:PORT` -> (host, port); ValueError if malformed."""
    host, port = text.strip(), str(default_port)
    if host.startswith("["):
        inside, _, rest = host[1:].partition("]")
        host, port = inside, rest.removeprefix(":") or port
    elif host.count(":") == 1:
        host, port = host.split(":")
    elif host.count(":") > 1:
        raise ValueError(f"write an IPv6 address as [ADDRESS]:PORT, not {text!r}")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bad UDP port in {text!r}")
    return host or "127.0.0.1", int(port)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default="ws://127.0.0.1:8000",
                        help="the holistream server (ws:// or wss://) [default %(default)s]")
    parser.add_argument("--stream", required=True, help="the named stream to follow")
    parser.add_argument("--to", default=f"127.0.0.1:{DEFAULT_PORT}", metavar="HOST:PORT",
                        help="the VMC receiver's UDP address [default %(default)s]")
    parser.add_argument("--token", default=os.environ.get("HOLISTREAM_TOKEN"),
                        help="bearer token, if the server requires one [env HOLISTREAM_TOKEN]")
    parser.add_argument("--mirror", action="store_true",
                        help="send the mirror image (selfie view); done here, per receiver")
    parser.add_argument("--no-smoothing", dest="smoothing", action="store_false",
                        help="ask for the unsmoothed rig (a stream's rig is shared: see "
                             "'Options of a shared rig' in docs/rig.md)")
    parser.add_argument("--max-retries", type=int, default=20, metavar="N",
                        help="give up after N failed attempts in a row; -1 retries forever "
                             "[default %(default)s]")
    parser.add_argument("--backoff-max", type=float, default=10.0, metavar="S",
                        help="longest wait between attempts, seconds [default %(default)s]")
    parser.add_argument("--status-interval", type=float, default=10.0, metavar="S",
                        help="log the bundle rate every S seconds [default %(default)s]")
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning"))


def config_from_args(args: argparse.Namespace) -> BridgeConfig:
    host, port = parse_target(args.to)
    return BridgeConfig(
        stream=args.stream, url=args.url, host=host, port=port, token=args.token or None,
        mirror=args.mirror, smoothing=args.smoothing, max_retries=args.max_retries,
        backoff_s=min(0.5, args.backoff_max), backoff_max_s=args.backoff_max,
        status_interval_s=max(0.1, args.status_interval),
    )  # fmt: skip


async def _main(bridge: VmcBridge) -> int:
    main = asyncio.current_task()
    assert main is not None

    def on_signal() -> None:  # first: stop cleanly; second: stop now
        if bridge.stopping:
            main.cancel()
        else:
            log.info("stopping (press Ctrl-C again to stop at once)")
            bridge.stop()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not on Windows
            loop.add_signal_handler(sig, on_signal)
    return await bridge.run()


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        bridge = VmcBridge(config_from_args(args))
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    try:
        return asyncio.run(_main(bridge))
    except (KeyboardInterrupt, asyncio.CancelledError):
        log.info("stopped")
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="holistream vmc", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
