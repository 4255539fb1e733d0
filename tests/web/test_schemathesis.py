"""Property-based fuzzing of every endpoint from the OpenAPI schema: no 5xx, responses match it."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import schemathesis
import torch
from hypothesis import HealthCheck, settings
from schemathesis.checks import negative_data_rejection, not_a_server_error, positive_data_acceptance

from server.core.data import DEFAULT_DATA, load_dataset
from server.net.packs import DEFAULT_NET, NETS
from server.runs.store import Limits, RunStore
from server.settings import Settings
from server.web.app import create_app
from server.web.guards import MAX_BODY_BYTES

torch.set_num_threads(1)
RUNS = tempfile.TemporaryDirectory()
# runs are stored but never started (no scheduler); the queue is unbounded so valid bodies get 201
runs = RunStore(Path(RUNS.name) / "runs.db", Limits(max_queued=10**9))
# schemathesis's ASGI client sends Host: testserver
app = create_app(
    load_dataset(DEFAULT_DATA),
    Settings(cache_size=64, check_workers=0, allowed_hosts=("testserver",)),
    runs=runs,
    schedule=False,
)
# an event stream stays open while its run is active, and runs never end here: see tests/test_runs.py, test_feeds.py
# POST /api/check runs learners' code in worker processes: fuzzed in tests/test_sandbox.py and test_check_api.py
schema = schemathesis.openapi.from_asgi("/openapi.json", app).exclude(path_regex=r"/events$|/check$")


def _number(value: object) -> float:
    """A query value as the server reads it (an int, a float or a numeric string); anything else: -inf."""
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return float("-inf")


@schema.parametrize()
@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms(case):
    # keep generated passes small enough for CI; the bounds themselves are tested in test_api.py
    if case.query:
        for field, cap in (("n_hidden", 96), ("batch_size", 64), ("n_embd", 16)):
            if isinstance(case.query.get(field), int) and case.query[field] > cap:
                case.query[field] = cap
    excluded = []
    # the schema offers every network's modes and bugs: which of them a network has is the engine's 422 to say
    query = {**(case.query or {}), **(case.body if isinstance(case.body, dict) else {})}
    net = NETS.get(query.get("net", DEFAULT_NET)) if isinstance(query.get("net", DEFAULT_NET), str) else None
    mode = query.get("mode", "atomic")
    if net is not None and isinstance(mode, str):
        if mode not in net.mode_names:
            excluded.append(positive_data_acceptance)  # a mode of another network: 422 by design
        elif _number(query.get("step")) > len(net.ops_for_mode(mode)):
            # past a shorter mode's end (15.0 is an integer step too; the coverage phase sends "39", a string)
            excluded.append(positive_data_acceptance)
        bug = query.get("bug")
        if (
            isinstance(bug, str)
            and bug
            and (bug not in net.bugs_by_name or mode not in net.bug_modes(net.bugs_by_name[bug]))
        ):
            excluded.append(positive_data_acceptance)  # another network's bug, or one whose op the mode fuses away
        for field, (low, high) in net.bounds.items():
            if field in query and not low <= _number(query[field]) <= high:
                excluded.append(positive_data_acceptance)  # a network's own bounds (LayerNorm: n_hidden >= 2)
    if "at" in query or "slice_dim" in query or "slice_index" in query:
        # an entry's index or a slice is checked against the tensor's shape, which the schema cannot know: outside
        # it (or a slice_dim without its slice_index), a 422
        excluded.append(positive_data_acceptance)
    if case.path == "/api/export":
        # the code is checked against the challenge's vocabulary past the schema (and code or steps, one of the two):
        # a schema-valid body is mostly a 422 with the reason
        excluded.append(positive_data_acceptance)
    if case.body is not None and len(json.dumps(case.body, default=str).encode()) > MAX_BODY_BYTES:
        # a body over the cap is refused with 413 before it is parsed, whatever it holds (tested in test_guards.py)
        excluded.append(negative_data_rejection)
    body = case.body if isinstance(case.body, dict) else {}
    if case.path == "/api/runs" and case.method == "POST" and ("code" in body or body.get("backward") == "code"):
        # code goes with backward=code (a 422 otherwise), and a block is checked past the schema by sandbox processes,
        # which this app has none of: a 503 that says so (the checked block: tests/web/test_runs_routes.py)
        excluded.append(positive_data_acceptance)
        response = case.call()
        if response.status_code == 503:
            assert "code checks are off" in response.json()["detail"]
            excluded.append(not_a_server_error)
        case.validate_response(response, excluded_checks=excluded)
        return
    case.call_and_validate(excluded_checks=excluded)
