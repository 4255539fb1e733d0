"""A 3-D tensor whole or as the one 2-D slice the page draws: bytes on the wire and time to answer, side by side.

Starts nothing: the app runs in-process (the same middleware stack as the server). For every pack's largest 3-D
tensor, at its own sizes and at batch 256: the whole answer and its batch row 0 alone (slice_dim, slice_index),
identity and gzip, with the median time to answer (the pass computed and cached first).
Usage: python bench/slice_bench.py [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")

import torch  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from server.core.data import load_dataset  # noqa: E402
from server.web.app import create_app  # noqa: E402

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "names.txt"


def fetch(client: TestClient, url: str, encoding: str, runs: int) -> tuple[int, float]:
    """Bytes on the wire and the median milliseconds of `runs` answers."""
    client.get(url, headers={"Accept-Encoding": encoding})
    times, size = [], 0
    for _ in range(runs):
        start = time.perf_counter()
        with client.stream("GET", url, headers={"Accept-Encoding": encoding}) as r:
            size = sum(len(chunk) for chunk in r.iter_raw())
        times.append((time.perf_counter() - start) * 1000)
    return size, statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with TestClient(create_app(load_dataset(DATA)), base_url="http://127.0.0.1") as client:
        nets = [n["name"] for n in client.get("/api/nets").json()["nets"]]
        print(f"{'tensor':34s} {'encoding':9s} {'whole bytes':>12s} {'slice bytes':>12s} {'ratio':>6s} "
              f"{'whole ms':>9s} {'slice ms':>9s}")  # fmt: skip
        for net in nets:
            graph = client.get("/api/graph", params={"net": net}).json()
            nodes = [n for n in graph["nodes"] if len(n["shape"]) == 3]
            if not nodes:
                continue
            node = max(nodes, key=lambda n: n["shape"][0] * n["shape"][1] * n["shape"][2])
            batch = node["axes"].index("batch") if "batch" in node["axes"] else 0
            for size in ("", "&batch_size=256"):
                url = f"/api/tensor/{node['name']}?net={net}{size}"
                cut = f"{url}&slice_dim={batch}&slice_index=0"
                for encoding in ("identity", "gzip"):
                    whole, whole_ms = fetch(client, url, encoding, args.runs)
                    part, part_ms = fetch(client, cut, encoding, args.runs)
                    what = f"{net} {node['name']} batch {256 if size else node['shape'][batch]}"
                    print(f"{what:34s} {encoding:9s} {whole:12,d} {part:12,d} {whole / part:6.0f} "
                          f"{whole_ms:9.1f} {part_ms:9.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
