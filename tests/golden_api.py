"""The golden set: what the API answers at the lecture's defaults, recorded once and kept.

Every answer is kept as the sha256 and length of its body (tests/golden/api.json): a refactor of the
engine or the declaration must leave each one byte-identical. Record anew only for a deliberate change
of an answer:  python -m tests.golden_api  (writes tests/golden/api.json from the current code).
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path

from fastapi.testclient import TestClient

GOLDEN = Path(__file__).resolve().parent / "golden" / "api.json"
MODES = ("atomic", "fused_ce", "fused_bn", "fused")


def urls(client: TestClient) -> Iterator[str]:
    """The URLs of the golden set, in order; what each mode has is read from its own graph answer."""
    yield "/api/dataset"
    yield "/api/bugs"
    for mode in MODES:
        graph = client.get("/api/graph", params={"mode": mode}).json()
        total = len(graph["schedule"])
        yield f"/api/graph?mode={mode}"
        for step in range(total + 1):
            yield f"/api/state?mode={mode}&step={step}"
        for step in sorted({0, total // 2, total}):
            for node in graph["nodes"]:
                yield f"/api/tensor/{node['name']}?mode={mode}&step={step}"
        for step in (1, total):
            yield f"/api/hints?mode={mode}&step={step}"
    for bug in client.get("/api/bugs").json()["bugs"]:
        mode = bug["modes"][0]
        total = len(client.get("/api/graph", params={"mode": mode}).json()["schedule"])
        yield f"/api/state?mode={mode}&step={total}&bug={bug['name']}"
        yield f"/api/tensor/{bug['target']}?mode={mode}&step={total}&bug={bug['name']}"
    yield "/api/tensor/hprebn?mode=fused_bn&step=3&dtype=float64&seed=42"


def answers(client: TestClient) -> dict[str, dict[str, object]]:
    out = {}
    for url in urls(client):
        response = client.get(url)
        assert response.status_code == 200, (url, response.text[:300])
        out[url] = {"sha256": hashlib.sha256(response.content).hexdigest(), "bytes": len(response.content)}
    return out


def main() -> int:
    import torch

    from server.core.data import load_dataset
    from server.web.app import create_app

    torch.set_num_threads(1)
    data = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "names.txt"
    with TestClient(create_app(load_dataset(data)), base_url="http://127.0.0.1") as client:
        golden = answers(client)
    GOLDEN.write_text(json.dumps(golden, indent=0, sort_keys=False) + "\n")
    print(f"{len(golden)} answers recorded in {GOLDEN}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
