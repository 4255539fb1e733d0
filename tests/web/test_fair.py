"""The fair queue in front of code checks and large passes: bounded, per client, clients served in turn."""

from __future__ import annotations

import asyncio
import threading

import anyio
import httpx
import pytest
from fastapi import HTTPException

from server.web.app import create_app, use_checks
from server.web.fair import FairQueue


async def _settle() -> None:
    for _ in range(20):  # let every ready task run as far as it can (bounded, no clock)
        await asyncio.sleep(0)


def test_a_freed_slot_goes_to_the_next_client_in_turn():
    async def scenario() -> list[str]:
        queue = FairQueue(1, per_client=3, max_waiting=10, what="checks")
        order: list[str] = []
        first_holds = asyncio.Event()

        async def job(client: str, name: str, hold: asyncio.Event | None = None) -> None:
            async with queue.slot(client):
                order.append(name)
                if hold:
                    await hold.wait()

        tasks = [asyncio.create_task(job("a", "a1", first_holds))]
        await _settle()
        tasks += [asyncio.create_task(job("a", name)) for name in ("a2", "a3")]
        await _settle()
        tasks.append(asyncio.create_task(job("b", "b1")))  # one client's burst is queued ahead of it
        await _settle()
        first_holds.set()
        await asyncio.gather(*tasks)
        assert queue.free == 1 and queue.n_waiting == 0 and not queue.holding
        return order

    assert asyncio.run(scenario()) == ["a1", "a2", "b1", "a3"]  # first in, first out would be a1 a2 a3 b1


def test_past_its_share_a_client_gets_429_and_past_the_bound_everyone_503():
    async def scenario() -> None:
        queue = FairQueue(1, per_client=2, max_waiting=2, what="checks")
        hold = asyncio.Event()

        async def job(client: str) -> None:
            async with queue.slot(client):
                await hold.wait()

        tasks = [asyncio.create_task(job(c)) for c in ("a", "a", "b", "c")]  # a runs, a, b and c wait... c over
        await _settle()
        failed = [t.exception() for t in tasks if t.done()]
        assert [(e.status_code, e.headers["Retry-After"]) for e in failed] == [(503, "2")]
        with pytest.raises(HTTPException) as too_many:
            async with queue.slot("a"):
                pass
        assert too_many.value.status_code == 429
        hold.set()
        await asyncio.gather(*[t for t in tasks if not t.done()])
        assert queue.free == 1 and not queue.holding

    asyncio.run(scenario())


def test_a_cancelled_waiter_leaves_the_queue():
    async def scenario() -> None:
        queue = FairQueue(1, per_client=5, max_waiting=5, what="checks")
        hold = asyncio.Event()

        async def job() -> None:
            async with queue.slot("a"):
                await hold.wait()

        running, waiting = asyncio.create_task(job()), asyncio.create_task(job())
        await _settle()
        waiting.cancel()
        await _settle()
        assert queue.n_waiting == 0 and queue.holding == {"a": 1}
        hold.set()
        await running
        assert queue.free == 1 and not queue.holding

    asyncio.run(scenario())


class BlockingPool:
    """Stands in for the SandboxPool: each run() blocks until released."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = 0
        self.lock = threading.Lock()

    def run(self, job: dict) -> dict:
        with self.lock:
            self.started += 1
        self.release.wait(timeout=60)
        return {"json": b'{"correct": true}'}

    def close(self) -> None:
        self.release.set()


def test_checks_in_flight_hold_no_shared_thread_and_other_endpoints_answer(lecture_dataset, tmp_path):
    from server.runs.store import RunStore

    app = create_app(lecture_dataset, runs=RunStore(tmp_path / "runs.db"), schedule=False)
    pool = BlockingPool()
    use_checks(app, pool, 2)
    body = {"step": 1, "code": "dlogprobs = logprobs * 0"}

    async def scenario() -> None:
        def client(ip: str) -> httpx.AsyncClient:
            transport = httpx.ASGITransport(app=app, client=(ip, 1234))
            return httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1", timeout=60)

        async with client("10.0.0.1") as a, client("10.0.0.2") as b:
            mine = [asyncio.create_task(a.post("/api/check", json=body)) for _ in range(2)]
            for _ in range(2000):  # bounded: until both reached a worker
                if pool.started == 2:
                    break
                await asyncio.sleep(0.005)
            assert pool.started == 2
            third = await a.post("/api/check", json=body)  # past this client's share
            assert third.status_code == 429 and third.headers["Retry-After"]
            theirs = asyncio.create_task(b.post("/api/check", json=body))  # another client queues
            await _settle()
            # the two checks being run hold threads of their own: the shared pool has every thread free
            assert anyio.to_thread.current_default_thread_limiter().borrowed_tokens == 0
            assert (await b.get("/api/runs")).status_code == 200
            pool.release.set()
            answers = await asyncio.gather(*mine, theirs)
            assert [r.status_code for r in answers] == [200, 200, 200]

    asyncio.run(scenario())
    pool.close()
    app.state.check_threads.shutdown()
