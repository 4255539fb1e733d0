"""The guards in front of the API: body size, HEAD, host and origin checks, and error answers that stay
short and JSON whatever a request sent (plain ASGI middleware: @app.middleware costs ~0.3 ms a request)."""

from __future__ import annotations

import logging
import math
from typing import Any
from urllib.parse import urlsplit

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..core.serialize import dumps
from ..settings import Settings

MAX_BODY_BYTES = 64 * 1024  # no endpoint needs more; larger bodies are refused before parsing


class LimitBody:
    """Refuse a body over MAX_BODY_BYTES with 413, declared or streamed (chunked bodies declare no length).

    A body without a Content-Length is read here, MAX_BODY_BYTES at most, and handed on whole; the 413
    goes out as soon as the limit is crossed.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit() or int(length) > MAX_BODY_BYTES:
                await _too_large(scope, receive, send)
                return
            await self.app(scope, receive, send)  # the HTTP parser delivers no more than declared
            return
        if "transfer-encoding" not in headers:
            await self.app(scope, receive, send)  # no body
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                await _too_large(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body, delivered = b"".join(chunks), False

        async def replay() -> Message:
            nonlocal delivered
            if delivered:
                return await receive()  # e.g. an event stream waiting for the disconnect
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


class HeadAsGet:
    """HEAD answered as the GET it stands for, without the body (FastAPI routes a GET only; Allow lists HEAD)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return
        ended = False

        async def headers_only(message: Message) -> None:
            nonlocal ended
            if ended:
                return
            if message["type"] == "http.response.body":  # the server writes no body for HEAD; end at the first
                ended = True  # (an event stream ends here too: it would never finish)
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, headers_only)


LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")  # the names a server on loopback answers to by default
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
EVERY_INTERFACE = ("0.0.0.0", "::")  # a --host that is no name anybody types


def answered_hosts(settings: Settings) -> tuple[str, ...]:
    """The host names the server answers to: the local ones, its --host address and the --allowed-hosts."""
    own = () if settings.host in (*EVERY_INTERFACE, "") else (settings.host,)
    return tuple(dict.fromkeys((*LOCAL_HOSTS, *own, *settings.allowed_hosts)))


def host_allowed(host: str, allowed: tuple[str, ...]) -> bool:
    """Whether a Host header's name (port dropped) is one of `allowed`: a name, '.example.org' (it and
    its subdomains) or '*'."""
    name = host.rsplit("]", 1)[0].lstrip("[") if host.startswith("[") else host.rsplit(":", 1)[0]
    name = name.lower().rstrip(".")
    return any(a == "*" or a == name or (a.startswith(".") and (name == a[1:] or name.endswith(a))) for a in allowed)


def same_origin(origin: str, scheme: str, host: str | None) -> bool:
    """Whether an Origin header names this server as the request reached it: its scheme and its Host (a page on
    http://host may not change what https://host serves, nor the reverse)."""
    parts = urlsplit(origin)
    return host is not None and parts.scheme.lower() == scheme and parts.netloc.lower() == host.lower()


class GuardOrigin:
    """Refuse requests for a host name this server does not answer to (400: DNS rebinding), and changes
    sent from another origin (403: any page can make a browser POST here, preflight-free with text/plain)."""

    def __init__(self, app: ASGIApp, allowed_hosts: tuple[str, ...]) -> None:
        self.app = app
        self.allowed_hosts = tuple(h.lower() for h in allowed_hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = Headers(scope=scope)
            host = headers.get("host")
            refused: tuple[int, str] | None = None
            if host is not None and not host_allowed(host, self.allowed_hosts):
                refused = (400, f"unknown host {excerpt(host)!r}: this server answers to "
                                f"{', '.join(self.allowed_hosts)} (add names with --allowed-hosts)")  # fmt: skip
            elif scope["method"] in UNSAFE_METHODS:
                origin = headers.get("origin")
                if origin is not None and not same_origin(origin, scope.get("scheme", "http"), host):
                    refused = (403, f"a change sent from another origin ({excerpt(origin)}) is refused (behind an "
                                    "HTTPS proxy: name it with --forwarded-allow-ips)")  # fmt: skip
                elif origin is None and headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
                    refused = (403, "a change sent from another site is refused")
            if refused:
                response = JSONResponse({"detail": refused[1]}, status_code=refused[0])
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def _too_large(scope: Scope, receive: Receive, send: Send) -> None:
    # Connection: close, so the server reads no more of a body nobody will parse
    response = JSONResponse(
        {"detail": f"request body over {MAX_BODY_BYTES} bytes"}, status_code=413, headers={"Connection": "close"}
    )
    await response(scope, receive, send)


EXCERPT_CHARS = 80  # how much of a rejected value a 422 echoes
EXCERPT_ITEMS = 8  # items of a rejected list or object, and errors of one request
MAX_DETAIL_CHARS = 1000  # an error's own message


def excerpt(value: Any, chars: int = EXCERPT_CHARS, depth: int = 2) -> Any:
    """A short, JSON-safe excerpt of a value a request sent: a 422 never echoes a whole body back.

    JSON's parser hands over what JSON cannot carry back: 1e400 and NaN as floats, "\\ud800" as a lone
    surrogate (no UTF-8 for it); those come back as text, the surrogate as its escape.
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, int):
        return value if abs(value) < 10**15 else excerpt(str(value), chars)
    if isinstance(value, str):
        text = value if len(value) <= chars else f"{value[:chars]}... ({len(value):,} characters)"
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        if depth == 0:
            return f"an object of {len(value):,} keys"
        items = list(value.items())
        out = {excerpt(str(k), chars, 0): excerpt(v, chars, depth - 1) for k, v in items[:EXCERPT_ITEMS]}
        if len(items) > EXCERPT_ITEMS:
            out["..."] = f"{len(items) - EXCERPT_ITEMS:,} more keys"
        return out
    if isinstance(value, list | tuple):
        if depth == 0:
            return f"a list of {len(value):,} items"
        out_list = [excerpt(v, chars, depth - 1) for v in value[:EXCERPT_ITEMS]]
        if len(value) > EXCERPT_ITEMS:
            out_list.append(f"... {len(value) - EXCERPT_ITEMS:,} more items")
        return out_list
    return excerpt(str(value), chars, 0)


def _error_public(error: dict[str, Any]) -> dict[str, Any]:
    out = {
        "type": excerpt(error.get("type", "value_error")),
        "loc": [excerpt(part) for part in error.get("loc", ())][:EXCERPT_ITEMS],
        "msg": excerpt(error.get("msg", ""), MAX_DETAIL_CHARS),
    }
    if "input" in error:
        out["input"] = excerpt(error["input"])
    if error.get("ctx"):
        out["ctx"] = {excerpt(str(k), chars=40): excerpt(str(v)) for k, v in list(error["ctx"].items())[:EXCERPT_ITEMS]}
    return out


async def validation_error(request: Request, exc: RequestValidationError) -> Response:
    """FastAPI's 422 shape, with every echoed input cut to an excerpt."""
    errors = list(exc.errors())
    detail = [_error_public(e) for e in errors[:EXCERPT_ITEMS]]
    if len(errors) > EXCERPT_ITEMS:
        detail.append({"type": "too_many_errors", "loc": [], "msg": f"{len(errors) - EXCERPT_ITEMS} more errors"})
    return Response(dumps({"detail": detail}), status_code=422, media_type="application/json")


_store_log: Any = None  # a QuietLog, made on first use (connections.py imports this module's neighbours)


async def store_unavailable(request: Request, exc: Exception) -> Response:
    """The runs database failed under the server (corrupted, removed, unreachable): a 503 with the reason, logged
    once a minute without a traceback; everything that needs no runs database goes on answering."""
    global _store_log
    if _store_log is None:
        from .connections import QuietLog

        _store_log = QuietLog()
    reason = excerpt(str(exc) or type(exc).__name__)
    _store_log.event("runs database", f"the runs database cannot be used: {reason}")
    detail = f"the runs database cannot be used right now ({reason}); the explorer itself still works"
    return Response(dumps({"detail": detail}), status_code=503, media_type="application/json")


async def internal_error(request: Request, exc: Exception) -> Response:
    """A bug is still a JSON answer (the traceback goes to the log, not to the client)."""
    logging.getLogger("backprop-explorer").error("%s %s failed", request.method, request.url.path, exc_info=exc)
    detail = f"internal error ({type(exc).__name__}); the server's log has the details"
    return Response(dumps({"detail": detail}), status_code=500, media_type="application/json")
