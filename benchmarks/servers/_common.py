"""Shared command-line handling for the benchmark echo servers."""

import argparse
import asyncio

MAX_MESSAGE = 16 * 1024 * 1024


def parse_args(description: str) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument(
        "--wsgiws", default=None, help="path of the wsgiws checkout (wsgiws servers only)"
    )
    return p.parse_args()


def asyncio_main(description: str, run) -> None:
    """Parse the command line and run ``run(host, port)`` (a coroutine) on asyncio."""
    args = parse_args(description)
    asyncio.run(run(args.host, args.port))
