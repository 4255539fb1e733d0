"""A bounded queue for scarce work (code checks, large passes) that serves clients in turn.

One client's burst waits behind its own requests, not in front of everyone else's: each client may
have `per_client` requests in the queue or running (more: 429), the queue holds `max_waiting` in all
(more: 503), and a freed slot goes to the next client in turn, not to the oldest request.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import HTTPException, Request


def client_of(request: Request) -> Hashable:
    """Who is asking: the peer's address (behind a reverse proxy every client is the proxy)."""
    return request.client.host if request.client else None


async def in_sandbox(request: Request, pool: Any, job: dict[str, Any]) -> dict[str, Any]:
    """A learner-code job's answer from the app's sandbox processes (app.use_checks), run with this client's fair
    share of them; HTTPException 429 or 503 when the queue is full, 422 with the reason when the code is refused."""
    async with request.app.state.check_queue.slot(client_of(request)):
        answer = await asyncio.get_running_loop().run_in_executor(request.app.state.check_threads, pool.run, job)
    if "refused" in answer:
        raise HTTPException(422, answer["refused"])
    return answer


class FairQueue:
    """`slots` at a time; waiting requests granted round-robin by client. Used from one event loop."""

    def __init__(self, slots: int, per_client: int, max_waiting: int, what: str, retry_after_s: int = 2) -> None:
        self.free = slots
        self.per_client, self.max_waiting, self.what = per_client, max_waiting, what
        self.retry_after = str(retry_after_s)
        self.holding: dict[Hashable, int] = {}  # client -> its requests queued or running
        self.waiting: OrderedDict[Hashable, deque[asyncio.Future[None]]] = OrderedDict()  # in turn order
        self.n_waiting = 0

    @asynccontextmanager
    async def slot(self, client: Hashable) -> AsyncIterator[None]:
        """Hold a slot for the block; HTTPException 429 or 503 (with Retry-After) when the queue is full."""
        if self.holding.get(client, 0) >= self.per_client:
            raise HTTPException(
                429,
                f"you have {self.per_client} {self.what} waiting or running already; wait for an answer",
                headers={"Retry-After": self.retry_after},
            )
        if self.free == 0 and self.n_waiting >= self.max_waiting:
            raise HTTPException(
                503,
                f"the server is busy with {self.what}; try again shortly",
                headers={"Retry-After": self.retry_after},
            )
        self.holding[client] = self.holding.get(client, 0) + 1
        try:
            if self.free > 0:
                self.free -= 1
            else:
                await self._wait(client)
            try:
                yield
            finally:
                self._release()
        finally:
            self.holding[client] -= 1
            if not self.holding[client]:
                del self.holding[client]

    async def _wait(self, client: Hashable) -> None:
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiting.setdefault(client, deque()).append(granted)
        self.n_waiting += 1
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self._release()  # granted as it was cancelled: hand the slot on
            else:
                queue = self.waiting.get(client)
                if queue is not None and granted in queue:
                    queue.remove(granted)
                    self.n_waiting -= 1
                    if not queue:
                        del self.waiting[client]
            raise

    def _release(self) -> None:
        """The slot goes to the first waiting client in turn, who then goes to the back of the turn."""
        while self.waiting:
            client, queue = next(iter(self.waiting.items()))
            granted = queue.popleft()
            self.n_waiting -= 1
            if queue:
                self.waiting.move_to_end(client)
            else:
                del self.waiting[client]
            if not granted.done():
                granted.set_result(None)
                return
        self.free += 1
