"""Training runs' event streams: one database poll per run, shared by every stream open on it, and a cap.

A stream used to poll the database four times a second on the shared thread pool, each on its own:
800 open streams held up every other endpoint. Now a run's feed polls once for all its streams and
keeps its recent events in memory; a stream that is behind reads the database itself until it is not.
With a store that notifies (PostgreSQL: LISTEN/NOTIFY), one listening connection per process wakes a
run's feed when the run changes, and the feeds poll only slowly, in case a notice was lost.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from dataclasses import dataclass

from fastapi import HTTPException
from starlette.concurrency import run_in_threadpool

from ..runs.store import ENDED, RunStore

POLL_S = 0.25  # how often a feed looks for new events
NOTIFIED_POLL_S = 5.0  # the same while the store's notices wake the feeds
RELISTEN_S = 2.0  # a lost listening connection is opened again after this (the feeds poll fast meanwhile)
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
        self.owners = 0  # streams of the run's owner: only these count as somebody watching it
        self.watch_due = False  # an owner's stream opened: tell the run now, not at the next WATCH_EVERY_S
        self.task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self.woken = asyncio.Event()  # the store says the run changed: read it now

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


@dataclass
class Stream:
    """One open stream: its run's feed, its client (an address), and whether the run's owner opened it."""

    feed: RunFeed
    client: Hashable = None
    owner: bool = False


class RunFeeds:
    """The feeds of one server process, and the bounds on its open streams: `per_client` each (more: 429), and
    `max_streams` in all (more: 503; the owner's streams of a run are not refused by a full server, only by
    their client's bound, so that strangers cannot take the streams that keep an owner's run alive)."""

    def __init__(
        self,
        store: RunStore,
        max_streams: int,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        notified_poll_s: float = NOTIFIED_POLL_S,
        per_client: int | None = None,
    ) -> None:
        self.store, self.max_streams, self.sleep = store, max_streams, sleep
        self.per_client = per_client if per_client is not None else max_streams
        self.notified_poll_s = notified_poll_s
        self.feeds: dict[int, RunFeed] = {}
        self.open = 0
        self.by_client: dict[Hashable, int] = {}  # client -> its open streams
        self.listening = asyncio.Event()  # set while the store's notices come
        self.listener: asyncio.Task[None] | None = None

    @property
    def poll_s(self) -> float:
        """How long a feed waits between reads when nothing wakes it."""
        return self.notified_poll_s if self.listening.is_set() else POLL_S

    def start(self) -> None:
        """Listen to the store's notices, if it sends any (one connection for the whole process)."""
        if self.store.notifies and self.listener is None:
            self.listener = asyncio.create_task(self._listen())

    async def close(self) -> None:
        if self.listener is not None:
            self.listener.cancel()
            await asyncio.gather(self.listener, return_exceptions=True)
            self.listener = None

    async def _listen(self) -> None:
        def changed(run_id: int) -> None:
            if feed := self.feeds.get(run_id):
                feed.woken.set()

        def listening() -> None:
            self.listening.set()
            for feed in self.feeds.values():  # what changed before the notices came
                feed.woken.set()

        while True:
            try:
                await self.store.listen(changed, listening)
            except Exception:  # the database restarting: the feeds poll fast until the notices come again
                logging.getLogger("backprop-explorer").exception("listening to the runs' notices failed")
            self.listening.clear()
            await asyncio.sleep(RELISTEN_S)

    def hold(self, client: Hashable = None, owner: bool = False) -> None:
        """Count one more stream of `client` (owner: of a run's owner, or a class's teacher); HTTPException 429
        past the client's bound, 503 past the server's (not for an owner)."""
        mine = self.by_client.get(client, 0)
        if mine >= self.per_client:
            raise HTTPException(
                429, f"you have {mine} event streams open, the most one client may; close one (another tab?)",
                headers={"Retry-After": "10"},
            )  # fmt: skip
        if self.open >= self.max_streams and not owner:
            raise HTTPException(
                503, f"{self.open} event streams are open on this server, its most", headers={"Retry-After": "10"}
            )
        self.open += 1
        self.by_client[client] = mine + 1

    def release(self, client: Hashable = None) -> None:
        """A stream that hold() counted has closed."""
        self.open -= 1
        self.by_client[client] -= 1
        if not self.by_client[client]:
            del self.by_client[client]

    def subscribe(self, run_id: int, seq: int, client: Hashable = None, owner: bool = False) -> Stream:
        """`client` opens a stream on run `run_id`, from event `seq` (owner: the run's owner does): its feed
        (started if none is running)."""
        self.hold(client, owner)  # 429 / 503 past the bounds
        self.start()
        feed = self.feeds.get(run_id)
        if feed is None:
            feed = self.feeds[run_id] = RunFeed(run_id, seq)
            feed.task = asyncio.create_task(self._poll(feed))
        feed.streams += 1
        if owner:
            feed.owners += 1
            feed.watch_due = True
            feed.woken.set()
        return Stream(feed, client, owner)

    def unsubscribe(self, stream: Stream) -> None:
        feed = stream.feed
        feed.streams -= 1
        feed.owners -= stream.owner
        self.release(stream.client)
        if feed.streams == 0:
            if self.feeds.get(feed.run_id) is feed:
                del self.feeds[feed.run_id]
            if feed.task:
                feed.task.cancel()

    async def _poll(self, feed: RunFeed) -> None:
        last_watch, last_read = -WATCH_EVERY_S, 0.0
        read = watch = True
        while True:
            now = time.monotonic()
            if watch or feed.watch_due or now - last_watch >= WATCH_EVERY_S:
                feed.watch_due = False
                if feed.owners:  # an open stream of its owner counts as somebody watching the run
                    await run_in_threadpool(self.store.watch, feed.run_id)
                last_watch = now
            if read:
                feed.woken.clear()  # a notice from now on is news
                batch = await run_in_threadpool(self.store.events_after, feed.run_id, feed.seq, PAGE)
                # a run's last event is its final status: a stream of an ended run ends at once, not a poll later
                ended = bool(batch) and batch[-1][1] == "status" and json.loads(batch[-1][2]).get("final") is True
                if not batch:
                    run = await run_in_threadpool(self.store.get, feed.run_id)
                    if run is None or run["status"] in ENDED:
                        # the final events are committed with the status: read any that came in meanwhile
                        batch = await run_in_threadpool(self.store.events_after, feed.run_id, feed.seq, PAGE)
                        ended = len(batch) < PAGE
                feed.publish(batch, ended)
                if feed.ended:
                    return
                if len(batch) == PAGE:  # a full page: read on at once
                    continue
                last_read = now
            # sleep until the next read or watch is due, or a notice wakes the feed
            read_at, watch_at = last_read + self.poll_s, last_watch + WATCH_EVERY_S
            woken = await self._rest(feed, max(0.0, min(read_at, watch_at) - time.monotonic()))
            read = woken or read_at <= watch_at
            watch = not woken and watch_at < read_at

    async def _rest(self, feed: RunFeed, seconds: float) -> bool:
        """Sleep `seconds`; True if the feed was woken first."""
        if feed.woken.is_set():
            return True
        sleeping = asyncio.ensure_future(self.sleep(seconds))
        woken = asyncio.ensure_future(feed.woken.wait())
        try:
            await asyncio.wait((sleeping, woken), return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeping.cancel()
            woken.cancel()
        return feed.woken.is_set()

    async def stream(self, stream: Stream, seq: int, disconnected: Callable[[], Awaitable[bool]]) -> AsyncIterator[str]:
        """Server-Sent Events: the run's events after `seq`, then live ones until the run ends."""
        feed = stream.feed
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
            self.unsubscribe(stream)
