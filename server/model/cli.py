"""``holistream model``: provision the four bundles and show that each one works.

Prints one line per bundle on stdout (name, path, SHA-256 prefix, where it came from, what
the self-check found); progress goes to stderr. Exit status 0 when every requested bundle is
provisioned and passes its self-check, 1 with a one-line reason otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from server.logs import native_logs_filtered

from . import BUNDLES, ModelError, Provisioned, provision_all
from .selfcheck import format_counts


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value) if value else None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``model`` subcommand's flags (each also read from an environment variable)."""
    parser.add_argument(
        "--model",
        type=Path,
        default=_env_path("HOLISTREAM_MODEL"),
        metavar="PATH",
        help="use this holistic .task instead of the cache (env HOLISTREAM_MODEL)",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=_env_path("HOLISTREAM_CACHE_DIR"),
        metavar="DIR",
        help="model cache (env HOLISTREAM_CACHE_DIR; default ~/.cache/holistream/models)",
    )
    parser.add_argument(
        "--offline",
        action="store_true",
        help="do not try the official download; build from the legacy wheel if needed",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=list(BUNDLES),
        metavar="NAME",
        help=f"provision only this bundle (repeatable): {', '.join(BUNDLES)}",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="ignore the cache and provision again (with --offline: rebuild)",
    )


def format_result(p: Provisioned) -> str:
    """One aligned line per bundle."""
    counts = format_counts(p.counts) if p.counts else "-"
    return f"{p.name:<8} {p.path}  sha256:{p.sha256[:12]}  {p.source:<8} {counts}"


def run(args: argparse.Namespace) -> int:
    """Provision as the flags say; print results; return the exit status."""

    def log(msg: str) -> None:
        print(f"model: {msg}", file=sys.stderr, flush=True)

    try:
        # MediaPipe/LiteRT print dozens of INFO/WARNING lines per self-check (server/logs.py).
        with native_logs_filtered("model"):
            results = provision_all(
                explicit=args.model,
                cache_dir=args.cache_dir,
                allow_download=not args.offline,
                force=args.force,
                only=args.only,
                log=log,
            )
    except ModelError as e:
        print(f"holistream model: error: {e}", file=sys.stderr)
        return 1
    for p in results:
        print(format_result(p), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Standalone entry point: ``python -m server.model.cli``."""
    parser = argparse.ArgumentParser(prog="holistream model", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
