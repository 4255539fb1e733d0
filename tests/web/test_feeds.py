"""Runs' event streams: one database poll per run for all its streams, and a cap on open streams."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest
from fastapi import HTTPException

from server.web.feeds import RunFeeds


class Store:
    """The run store's reads a feed makes, counted (called from the thread pool)."""

    notifies = False  # as SQLite's: the feed polls

    def __init__(self) -> None:
        self.events: list[tuple[int, str, str]] = []
        self.status = "running"
        self.calls = {"events_after": 0, "get": 0, "watch": 0}
        self.lock = threading.Lock()

    def add(self, kind: str, data: dict) -> None:
        with self.lock:
            self.events.append((len(self.events) + 1, kind, json.dumps(data)))

    def events_after(self, run_id: int, seq: int, limit: int = 500) -> list[tuple[int, str, str]]:
        with self.lock:
            self.calls["events_after"] += 1
            return [e for e in self.events if e[0] > seq][:limit]

    def get(self, run_id: int) -> dict:
        self.calls["get"] += 1
        return {"status": self.status}

    def watch(self, run_id: int) -> None:
        self.calls["watch"] += 1


class Ticker:
    """The feeds' sleep: returns when the test says so, never on the clock."""

    def __init__(self) -> None:
        self.sleeping = asyncio.Queue()
        self.wake = asyncio.Queue()

    async def sleep(self, seconds: float) -> None:
        await self.sleeping.put(seconds)
        await self.wake.get()

    async def tick(self) -> None:
        """Let the feed poll once more, and wait until it has."""
        self.wake.put_nowait(None)
        await asyncio.wait_for(self.sleeping.get(), 30)


def test_twenty_streams_share_one_poll_and_see_every_event_in_order():
    async def scenario() -> None:
        store, ticker = Store(), Ticker()
        feeds = RunFeeds(store, max_streams=25, sleep=ticker.sleep, per_client=20)  # type: ignore[arg-type]
        store.add("status", {"status": "running"})
        received: list[list[int]] = [[] for _ in range(20)]

        async def never() -> bool:
            return False

        async def watch(mine: list[int]) -> None:
            async for chunk in feeds.stream(feeds.subscribe(1, 0, "owner", owner=True), 0, never):
                if chunk.startswith("id: "):
                    mine.append(int(chunk.split("\n")[0][4:]))

        streams = [asyncio.create_task(watch(mine)) for mine in received]
        await asyncio.wait_for(ticker.sleeping.get(), 30)  # the feed's first poll is done
        assert len(feeds.feeds) == 1 and feeds.open == 20
        for step in range(1, 4):
            store.add("progress", {"step": step})
            await ticker.tick()
        store.add("status", {"status": "finished", "final": True})
        store.status = "finished"
        ticker.wake.put_nowait(None)  # the final event is read: the run has ended, the feed stops without a poll more
        await asyncio.wait_for(asyncio.gather(*streams), 30)
        assert all(mine == [1, 2, 3, 4, 5] for mine in received), received
        # one read per poll for all 20 streams (a stream that joined late would read its backlog once)
        assert store.calls["events_after"] == 5 and store.calls["get"] == 0 and store.calls["watch"] == 1, store.calls
        assert ticker.sleeping.empty()  # and it did not sleep again
        assert feeds.open == 0 and not feeds.feeds

    asyncio.run(scenario())


def test_past_the_cap_a_stream_is_refused_with_retry_after():
    async def scenario() -> None:
        store, ticker = Store(), Ticker()
        feeds = RunFeeds(store, max_streams=2, sleep=ticker.sleep)  # type: ignore[arg-type]
        first, second = feeds.subscribe(1, 0, "10.0.0.1"), feeds.subscribe(2, 0, "10.0.0.2")
        with pytest.raises(HTTPException) as refused:
            feeds.subscribe(1, 0, "10.0.0.3")
        assert refused.value.status_code == 503 and refused.value.headers["Retry-After"]
        feeds.unsubscribe(first)
        feeds.unsubscribe(feeds.subscribe(3, 0, "10.0.0.3"))  # a place came free
        feeds.unsubscribe(second)
        assert feeds.open == 0

    asyncio.run(scenario())


def test_one_client_cannot_hold_every_stream_nor_shut_out_a_runs_owner():
    async def scenario() -> None:
        store, ticker = Store(), Ticker()
        feeds = RunFeeds(store, max_streams=200, sleep=ticker.sleep, per_client=20)  # type: ignore[arg-type]
        flood = [feeds.subscribe(1, 0, "10.0.0.66") for _ in range(20)]
        with pytest.raises(HTTPException) as refused:
            feeds.subscribe(1, 0, "10.0.0.66")
        assert refused.value.status_code == 429 and refused.value.headers["Retry-After"]
        assert "20 event streams open" in refused.value.detail
        victim = feeds.subscribe(2, 0, "10.0.0.7")  # another client is not refused
        # many strangers fill the server: a stranger is refused, the run's owner still gets its stream
        strangers = [feeds.subscribe(1, 0, f"10.1.{i // 20}.{i % 20}") for i in range(179)]
        assert feeds.open == 200
        with pytest.raises(HTTPException) as full:
            feeds.subscribe(2, 0, "10.0.0.8")
        assert full.value.status_code == 503
        owner = feeds.subscribe(2, 0, "10.0.0.7", owner=True)
        for stream in [*flood, *strangers, victim, owner]:
            feeds.unsubscribe(stream)
        assert feeds.open == 0 and feeds.by_client == {}

    asyncio.run(scenario())


def test_only_the_owners_streams_keep_a_run_watched():
    async def scenario() -> None:
        store, ticker = Store(), Ticker()
        feeds = RunFeeds(store, max_streams=10, sleep=ticker.sleep, per_client=5)  # type: ignore[arg-type]
        stranger = feeds.subscribe(1, 0, "10.0.0.66")
        await asyncio.wait_for(ticker.sleeping.get(), 30)  # the feed's first poll is done
        for _ in range(3):  # each poll: a read, and the watch that is due
            await ticker.tick()
        assert store.calls["watch"] == 0 and store.calls["events_after"] >= 3
        owner = feeds.subscribe(1, 0, "10.0.0.7", owner=True)
        for _ in range(40):  # bounded: the watch is due within WATCH_EVERY_S / POLL_S polls
            if store.calls["watch"]:
                break
            await ticker.tick()
        assert store.calls["watch"] >= 1
        feeds.unsubscribe(owner)
        feeds.unsubscribe(stranger)

    asyncio.run(scenario())
