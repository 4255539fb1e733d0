"""Compression of the API's answers: bytes on the wire and time to answer, per encoding, side by side in one run.

Starts nothing: the app runs in-process (the same middleware stack as the server). For each answer, the identity
size, then each encoding's size, ratio and median time to answer (including the pass's computation, cached after
the first request). Usage: python bench/compress_bench.py [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")

from fastapi.testclient import TestClient  # noqa: E402

from server.core.data import load_dataset  # noqa: E402
from server.web.app import create_app  # noqa: E402

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "names.txt"
LARGEST = "batch_size=256&n_hidden=512&n_embd=64&block_size=8"
ANSWERS = [
    "/api/state?step=3",
    "/api/graph",
    "/api/tensor/counts?step=20",
    f"/api/tensor/hprebn?step=20&{LARGEST}",
    f"/api/tensor/hprebn?step=20&{LARGEST}&dtype=float64",
    "/vendor/plotly.min.js",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with TestClient(create_app(load_dataset(DATA)), base_url="http://127.0.0.1") as client:
        print(f"{'answer':62s} {'encoding':9s} {'bytes':>11s} {'ratio':>6s} {'ms (median)':>11s}")
        for url in ANSWERS:
            base = None
            for encoding in ("identity", "gzip", "br", "zstd"):
                times, size = [], 0
                client.get(url, headers={"Accept-Encoding": encoding})  # the pass computed and cached first
                for _ in range(args.runs):
                    start = time.perf_counter()
                    with client.stream("GET", url, headers={"Accept-Encoding": encoding}) as r:
                        size = sum(len(chunk) for chunk in r.iter_raw())
                    times.append((time.perf_counter() - start) * 1000)
                base = base or size
                print(f"{url[:62]:62s} {encoding:9s} {size:11,d} {base / size:6.1f} {statistics.median(times):11.1f}")


if __name__ == "__main__":
    main()
