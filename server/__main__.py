"""Command line: python -m server [--host H] [--port P] [--data names.txt]."""

from __future__ import annotations

import argparse
import os
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="backprop-explorer", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument(
        "--data", default=None, help="names file, one word per line (default: the embedded data/names.txt)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes: one per core for a class (each has its own cache)",
    )
    parser.add_argument("--cache-size", type=int, default=512, help="backward passes kept per process")
    args = parser.parse_args(argv)

    # validate the data before starting anything: a bad file is a message, not a traceback
    from .data import DEFAULT_DATA, DataError, load_dataset

    data = args.data or str(DEFAULT_DATA)
    try:
        load_dataset(data)
    except DataError as e:
        print(f"backprop-explorer: cannot use the data file: {e}", file=sys.stderr)
        return 2
    os.environ["BACKPROP_DATA"] = os.path.abspath(data)
    os.environ["BACKPROP_CACHE_SIZE"] = str(args.cache_size)

    from .workers import serve

    options = {
        "app": "server.web.factory:app_from_env",
        "factory": True,
        "log_level": "warning",
        "access_log": False,  # a line per request costs time a class's load needs
    }
    return serve(args.host, args.port, args.workers, options)


if __name__ == "__main__":
    sys.exit(main())
