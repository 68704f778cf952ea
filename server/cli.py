"""`holistream` command: serve, model, vmc."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from server import __version__, config, logs


def _serve(args: argparse.Namespace) -> int:
    import uvloop

    from server.http.app import serve
    from server.model import BUNDLES, ModelError, resolve_model

    try:
        cfg = config.from_args(args)
    except ValueError as exc:
        print(f"holistream serve: error: {exc}", file=sys.stderr)
        return 2
    logs.configure(cfg.log_level, cfg.log_format)
    log = logging.getLogger("holistream")
    log.info("holistream %s", __version__)
    log.info("%s", cfg.describe())
    models = {}
    with logs.native_logs_filtered("model"):
        for name in BUNDLES:
            try:
                models[name] = resolve_model(
                    name,
                    explicit=cfg.model if name == "holistic" else None,
                    cache_dir=cfg.cache_dir,
                    log=lambda msg: log.info("model: %s", msg),
                )
            except ModelError as exc:
                if name == "holistic":
                    log.error("cannot provision the holistic model: %s", exc)
                    return 2
                log.warning("the %s pipeline is unavailable: %s", name, exc)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve(cfg, models))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="holistream", description=__doc__)
    parser.add_argument("--version", action="version", version=f"holistream {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the WebSocket server")
    config.add_arguments(serve)
    serve.set_defaults(func=_serve)

    model = sub.add_parser("model", help="provision and self-check the model bundles")
    import server.model.cli as model_cli

    model_cli.add_arguments(model)
    model.set_defaults(func=model_cli.run)

    vmc = sub.add_parser("vmc", help="send a stream's rig to a VMC receiver (OSC over UDP)")
    import holistream.vmc.cli as vmc_cli

    vmc_cli.add_arguments(vmc)
    vmc.set_defaults(func=vmc_cli.run)

    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
