"""Training runs' event streams: one database poll per run, shared by every stream open on it, and a cap.

A stream used to poll the database four times a second on the shared thread pool, each on its own:
800 open streams held up every other endpoint. Now a run's feed polls once for all its streams and
keeps its recent events in memory; a stream that is behind reads the database itself until it is not.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable

from fastapi import HTTPException
from starlette.concurrency import run_in_threadpool

from ..runs import ENDED, RunStore

POLL_S = 0.25  # how often a feed looks for new events
WATCH_EVERY_S = 2.0  # how often a feed tells the run that somebody watches
KEEPALIVE_S = 15.0  # a comment line on a stream when nothing happened for this long
WAKE_S = 1.0  # a waiting stream looks whether its client is still there at least this often
KEPT = 1000  # recent events a feed keeps for its streams
PAGE = 500  # events read from the database at a time

Event = tuple[int, str, str]  # (seq, kind, JSON data)


class RunFeed:
    """One run's events as its feed has read them: the newest KEPT, and whether the run has ended."""

    def __init__(self, run_id: int, seq: int) -> None:
        self.run_id = run_id
        self.seq = seq  # the newest event read
        self.recent: deque[Event] = deque(maxlen=KEPT)
        self.ended = False
        self.streams = 0
        self.task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    def after(self, seq: int) -> list[Event] | None:
        """The events after `seq` from memory; None when some of them are no longer (or not yet) kept."""
        if seq >= self.seq:
            return []
        if not self.recent or self.recent[0][0] > seq + 1:
            return None
        return [e for e in self.recent if e[0] > seq]

    def publish(self, batch: list[Event], ended: bool) -> None:
        self.recent.extend(batch)
        if batch:
            self.seq = batch[-1][0]
        self.ended = self.ended or ended
        self._changed.set()
        self._changed = asyncio.Event()

    async def changed(self, timeout_s: float) -> None:
        """Return when the feed read something new, or after `timeout_s`."""
        try:
            await asyncio.wait_for(self._changed.wait(), timeout_s)
        except TimeoutError:
            pass


class RunFeeds:
    """The feeds of one server process, and the bound on its open streams (more: 503)."""

    def __init__(
        self, store: RunStore, max_streams: int, sleep: Callable[[float], Awaitable[object]] = asyncio.sleep
    ) -> None:
        self.store, self.max_streams, self.sleep = store, max_streams, sleep
        self.feeds: dict[int, RunFeed] = {}
        self.open = 0

    def subscribe(self, run_id: int, seq: int) -> RunFeed:
        """A stream opens on run `run_id`, from event `seq`: its feed (started if none is running)."""
        if self.open >= self.max_streams:
            raise HTTPException(
                503, f"{self.open} event streams are open on this server, its most", headers={"Retry-After": "10"}
            )
        feed = self.feeds.get(run_id)
        if feed is None:
            feed = self.feeds[run_id] = RunFeed(run_id, seq)
            feed.task = asyncio.create_task(self._poll(feed))
        feed.streams += 1
        self.open += 1
        return feed

    def unsubscribe(self, feed: RunFeed) -> None:
        feed.streams -= 1
        self.open -= 1
        if feed.streams == 0:
            if self.feeds.get(feed.run_id) is feed:
                del self.feeds[feed.run_id]
            if feed.task:
                feed.task.cancel()

    async def _poll(self, feed: RunFeed) -> None:
        last_watch = -WATCH_EVERY_S
        while True:
            now = time.monotonic()
            if now - last_watch >= WATCH_EVERY_S:  # an open stream counts as somebody watching the run
                await run_in_threadpool(self.store.watch, feed.run_id)
                last_watch = now
            batch = await run_in_threadpool(self.store.events_after, feed.run_id, feed.seq, PAGE)
            ended = False
            if not batch:
                run = await run_in_threadpool(self.store.get, feed.run_id)
                if run is None or run["status"] in ENDED:
                    # the final events are committed with the status: read any that came in meanwhile
                    batch = await run_in_threadpool(self.store.events_after, feed.run_id, feed.seq, PAGE)
                    ended = len(batch) < PAGE
            feed.publish(batch, ended)
            if feed.ended:
                return
            if len(batch) < PAGE:  # a full page: read on at once
                await self.sleep(POLL_S)

    async def stream(self, feed: RunFeed, seq: int, disconnected: Callable[[], Awaitable[bool]]) -> AsyncIterator[str]:
        """Server-Sent Events: the run's events after `seq`, then live ones until the run ends."""
        try:
            yield "retry: 1000\n\n"
            last_sent = time.monotonic()
            while True:
                batch = feed.after(seq)
                if batch is None:  # behind what the feed keeps: read the database
                    batch = await run_in_threadpool(self.store.events_after, feed.run_id, seq, PAGE)
                for event_seq, kind, data in batch:
                    seq = event_seq
                    yield f"id: {event_seq}\nevent: {kind}\ndata: {data}\n\n"
                if batch:
                    last_sent = time.monotonic()
                    continue
                if feed.ended:
                    return  # the page closes its EventSource on the final status event
                if time.monotonic() - last_sent >= KEEPALIVE_S:
                    yield ": keep-alive\n\n"
                    last_sent = time.monotonic()
                await feed.changed(WAKE_S)
                if await disconnected():
                    return
        finally:
            self.unsubscribe(feed)
