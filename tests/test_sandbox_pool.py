"""The sandbox pool's side of a check's answer: whatever text it carries reaches the web process as UTF-8 JSON,
and a sandbox process keeps its passes unless memory ran out."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from server.core.config import ModelConfig
from server.core.serialize import graded_json
from server.sandbox_pool import SandboxPool, answer_json, escaped, is_memory_error

from .live_server import stat


def test_a_lone_surrogate_is_sent_as_its_escape():
    answer = {"results": [{"label": "W\ud800", "notes": ("a\udfff",)}], "ok": True, "n": 3}
    with pytest.raises(TypeError):
        graded_json(answer)  # what the sandbox process met: orjson refuses such a str
    body = json.loads(answer_json(graded_json, answer))
    assert body == {"results": [{"label": "W\\ud800", "notes": ["a\\udfff"]}], "ok": True, "n": 3}
    assert escaped("plain é") == "plain é"


def test_only_a_memory_error_lets_the_passes_go():
    assert is_memory_error(MemoryError())
    assert is_memory_error(RuntimeError("[enforce fail] DefaultCPUAllocator: can't allocate memory: you tried"))
    assert not is_memory_error(TypeError("str is not valid UTF-8: surrogates not allowed"))


def test_a_check_with_a_lone_surrogate_in_a_cmp_label_keeps_the_pool_and_its_passes(lecture_dataset):
    pool = SandboxPool(lecture_dataset, size=1)
    try:
        config = ModelConfig()
        right = "dlogprobs = torch.zeros_like(logprobs)\ndlogprobs[range(n), Yb] = -1.0/n"
        first = pool.run({"config": config, "mode": "atomic", "step": None, "code": right})
        assert "json" in first, first
        kept = pool.run({"passes": True})["passes"]
        assert kept >= 1
        label = right + "\ncmp('dlogprobs\\ud800', dlogprobs, logprobs)"
        answer = pool.run({"config": config, "mode": "atomic", "step": None, "code": label})
        if "json" in answer:
            json.loads(answer["json"])  # UTF-8 JSON the web process can send as it is
        else:
            assert "refused" in answer and answer["refused"].encode("utf-8")
        assert pool.run({"passes": True})["passes"] == kept  # the same process, its passes kept
        assert pool.respawns == 0
    finally:
        pool.close()


def test_a_killed_sandbox_process_or_forkserver_is_replaced(lecture_dataset):
    from multiprocessing import forkserver

    pool = SandboxPool(lecture_dataset, size=1)
    right = {"config": ModelConfig(), "mode": "atomic", "step": 1, "code": "dlogprobs = torch.zeros_like(logprobs)"}

    def kill_the_sandbox_process() -> None:
        (sandbox,) = list(pool.idle.queue)
        sandbox.proc.kill()

    try:
        assert "json" in pool.run(right)
        kill_the_sandbox_process()  # as the kernel's OOM killer does: the forkserver reports how it ended
        assert "was killed (SIGKILL" in pool.run(right)["refused"]
        assert "json" in pool.run(right)  # a new process answers
        server = forkserver._forkserver._forkserver_pid
        os.kill(server, signal.SIGKILL)
        while stat(server)[0] != "Z":  # until it has ended (not reaped)
            time.sleep(0.01)
        kill_the_sandbox_process()  # now the next process needs a forkserver too
        assert "the evaluator" in pool.run(right)["refused"]
        assert "json" in pool.run(right), "answered by a process of a new forkserver"
        assert forkserver._forkserver._forkserver_pid not in (None, server)
        assert pool.respawns == 2
    finally:
        pool.close()
