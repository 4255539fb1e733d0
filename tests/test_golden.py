"""Every answer of the golden set (tests/golden_api.py) byte-identical to the recorded one: a refactor behind
the API changes nothing it says."""

from __future__ import annotations

import hashlib
import json

import pytest
from fastapi.testclient import TestClient

from server.web.app import create_app
from tests.golden_api import GOLDEN, urls


@pytest.fixture(scope="module")
def client(lecture_dataset):
    with TestClient(create_app(lecture_dataset), base_url="http://127.0.0.1") as c:
        yield c


def test_every_golden_answer_is_byte_identical(client):
    golden = json.loads(GOLDEN.read_text())
    asked = list(urls(client))
    assert asked == list(golden), "the golden set's URLs changed: the modes, nodes or bugs differ"
    changed = []
    for url in asked:
        response = client.get(url)
        got = {"sha256": hashlib.sha256(response.content).hexdigest(), "bytes": len(response.content)}
        if response.status_code != 200 or got != golden[url]:
            changed.append(f"{url}: {response.status_code}, {got['bytes']} bytes (was {golden[url]['bytes']})")
    assert not changed, f"{len(changed)} of {len(asked)} answers changed:\n" + "\n".join(changed[:20])
