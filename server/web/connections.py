"""Connections before they are requests: a head that does not arrive in time is closed, and one client address
holds a bounded number of connections (uvicorn's httptools protocol has neither: a connection that sends half a
request line waits forever, and enough of them take every file descriptor the process has).

A refusal is logged once per client and minute with its count, never per socket.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ..settings import Settings

LOG_EVERY_S = 60.0  # a refused client's (or the timeouts') log line repeats at most this often, with its count
TIMEOUT_ANSWER = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"

log = logging.getLogger("backprop-explorer")


class QuietLog:
    """Log a kind of event once, then at most once per `every_s` seconds with how many there were meanwhile."""

    def __init__(self, every_s: float = LOG_EVERY_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.every_s, self.clock = every_s, clock
        self.last: dict[Any, float] = {}
        self.unsaid: Counter[Any] = Counter()

    def event(self, key: Any, message: str) -> bool:
        """Count one event of `key`; log `message` (and the count since the last line) when due. True if logged."""
        self.unsaid[key] += 1
        now = self.clock()
        if key in self.last and now - self.last[key] < self.every_s:
            return False
        if len(self.last) > 10_000:  # many addresses: forget the old ones, not the memory
            self.last.clear()
        self.last[key] = now
        count = self.unsaid.pop(key)
        log.warning("%s%s", message, f" ({count} since the last such line)" if count > 1 else "")
        return True


def trusted_networks(addresses: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """--forwarded-allow-ips as networks (an address is a network of one); '*' trusts no one more than others."""
    return tuple(ipaddress.ip_network(a, strict=False) for a in addresses if a != "*")


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with a deadline for each request's head and a cap on a client's connections.

    Its settings are the class's (configure() in each web process, before uvicorn builds any connection).
    """

    head_timeout_s = Settings.head_timeout
    per_client = Settings.max_connections_per_client
    uncounted: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()  # trusted proxies: their clients'
    open_by_client: Counter[str] = Counter()  # this process's connections per client address
    quiet = QuietLog()

    @classmethod
    def configure(cls, settings: Settings) -> None:
        cls.head_timeout_s = settings.head_timeout
        cls.per_client = settings.max_connections_per_client
        cls.uncounted = trusted_networks(settings.forwarded_allow_ips)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.head_timer: asyncio.TimerHandle | None = None
        self.counted = self._counts(self.client[0] if self.client else None)
        if self.counted is not None:
            cls = type(self)
            cls.open_by_client[self.counted] += 1
            if cls.open_by_client[self.counted] > cls.per_client:
                cls.quiet.event(
                    ("too many", self.counted),
                    f"refused connections from {self.counted}: it holds {cls.per_client} already "
                    "(--max-connections-per-client)",
                )
                transport.abort()  # no answer: a client that opens this many is not reading them
                return
        self._arm_head_timer()

    def _counts(self, host: str | None) -> str | None:
        """The address a connection counts against, or None (no address, or a trusted proxy's)."""
        if host is None:
            return None
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return host
        return None if any(address in network for network in self.uncounted) else host

    def _arm_head_timer(self) -> None:
        if self.head_timer is None:
            self.head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

    def _head_timed_out(self) -> None:
        self.head_timer = None
        if self.transport.is_closing():
            return
        type(self).quiet.event("head timeout", f"closed connections whose request head took over "
                                               f"{self.head_timeout_s:g} s (--head-timeout)")  # fmt: skip
        if self.cycle is None or self.cycle.response_complete:  # no answer of ours is on its way: say why
            self.transport.write(TIMEOUT_ANSWER)
        self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm_head_timer()  # a keep-alive connection's next request: its head has the same deadline

    def on_headers_complete(self) -> None:
        self._disarm_head_timer()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        if getattr(self, "head_timer", None) is not None:
            self._disarm_head_timer()
        counted = getattr(self, "counted", None)
        if counted is not None:
            cls = type(self)
            cls.open_by_client[counted] -= 1
            if cls.open_by_client[counted] <= 0:
                del cls.open_by_client[counted]
            self.counted = None
        super().connection_lost(exc)


def quiet_accept_errors(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """The event loop's exception handler: running out of file descriptors is one line a minute, not a traceback
    per accept (asyncio retries the accept every second while it lasts)."""
    exception = context.get("exception")
    if isinstance(exception, OSError) and exception.errno in (24, 23, 105, 12):  # EMFILE ENFILE ENOBUFS ENOMEM
        GuardedHttpToolsProtocol.quiet.event(
            "accept", f"cannot accept connections: {exception.strerror} (the process's file descriptors are in use)"
        )
        return
    loop.default_exception_handler(context)
