"""The `kafka-ml` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import __version__, librdkafka_version


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kafka-ml", description=__doc__)
    parser.add_argument(
        "--version", action="version", version=f"kafka-ml {__version__} (librdkafka {librdkafka_version})"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser(
        "demo", help="the whole pipeline: ingest digits, train from Kafka, publish the model, serve it"
    )
    d.add_argument("--bootstrap-servers", help="a real Kafka cluster (default: an embedded one)")
    d.add_argument("--epochs", type=int, default=10)
    d.add_argument("--rate", type=int, default=2000, help="held-out inputs per second offered to serving")
    d.add_argument("--repeat", type=int, default=4, help="times the held-out set is streamed")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from .demo import run_demo

        return run_demo(args.bootstrap_servers, epochs=args.epochs, rate=args.rate, repeat=args.repeat)
    return 2


if __name__ == "__main__":
    sys.exit(main())
