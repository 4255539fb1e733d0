"""HTTP caching of the explorer's answers: a strong ETag from what determines an answer, a Cache-Control that lets
a shared cache (a class's reverse proxy) keep it, and If-None-Match answered with 304 before any pass is computed.

An answer of GET /api/graph, /api/state, /api/tensor/*, /api/why/*, ... is a pure function of the server's code,
the dataset and the query: the ETag hashes the three (the query as validated, so ?step=3&mode=atomic and
?mode=atomic&step=3, or an omitted default and the default written out, are one answer). A trained run's answers
are not shared: a deleted run's id can come back with other parameters.
"""

from __future__ import annotations

import gzip
import hashlib
import threading
from importlib import metadata
from pathlib import Path

import brotli
import zstandard
from pydantic import BaseModel
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

SHARED = "public, max-age=300"  # a proxy or browser may reuse an answer 5 minutes, then revalidates (304: no pass)
PRIVATE = "private, no-store"  # a trained run's answers
ENCODINGS = ("zstd", "br", "gzip")  # what the compression middleware may add to a representation


def _build_id() -> str:
    """The server's version and sources: any change to the code that makes the answers changes every ETag."""
    digest = hashlib.sha256()
    try:
        digest.update(metadata.version("backprop-explorer").encode())
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        digest.update(b"checkout")
    root = Path(__file__).resolve().parent.parent
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


BUILD = _build_id()


def etag_of(request: Request, dataset_sha256: str, query: BaseModel | None = None) -> str:
    """The strong ETag of an answer: the build, the dataset, the path and the validated query."""
    canonical = query.model_dump_json() if query is not None else ""
    key = f"{BUILD}\n{dataset_sha256}\n{request.url.path}\n{canonical}".encode()
    return f'"{hashlib.sha256(key).hexdigest()[:32]}"'


def not_modified(request: Request, etag: str) -> bool:
    """Whether If-None-Match names this answer (weak comparison, as RFC 9110 asks for If-None-Match), in any of
    its encodings: a cache revalidating a gzip copy sends the tag the gzip copy carried ("…-gzip")."""
    header = request.headers.get("if-none-match")
    if not header:
        return False
    if header.strip() == "*":
        return True
    tags = {t.strip().removeprefix("W/") for t in header.split(",")}
    return etag in tags or any(f'{etag[:-1]}-{enc}"' in tags for enc in ENCODINGS)


def cache_headers(etag: str | None) -> dict[str, str]:
    return {"ETag": etag, "Cache-Control": SHARED} if etag else {"Cache-Control": PRIVATE}


class EncodedETag:
    """ASGI middleware around the compression: a compressed representation's strong ETag gets its encoding
    ("tag" → "tag-gzip"), so that no two representations share a strong tag (RFC 9110 §8.8.3)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def tagged(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                encoding, etag = headers.get("content-encoding"), headers.get("etag")
                if encoding and etag and etag.endswith('"') and not etag.startswith("W/"):
                    headers["etag"] = f'{etag[:-1]}-{encoding}"'
            await send(message)

        await self.app(scope, receive, tagged)


FAST = {"zstd": 3, "br": 3, "gzip": 4}  # levels for a large answer compressed off the event loop


def _quality(params: list[str]) -> float:
    """An Accept-Encoding item's q (1 when it names none; 0 when unreadable: a client that garbles it gets it plain)."""
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            try:
                return float(value.strip())
            except ValueError:
                return 0.0
    return 1.0


def accepted(accept_encoding: str) -> str | None:
    """The encoding to send for an Accept-Encoding header: zstd, then brotli, then gzip (the middleware's order),
    among those the client accepts: "gzip;q=0" refuses gzip, "*" stands for every encoding it does not name."""
    qualities: dict[str, float] = {}
    for item in accept_encoding.split(","):
        coding, *params = item.split(";")
        coding = coding.strip().lower()
        if coding:
            qualities[coding] = _quality(params)
    wildcard = qualities.get("*", 0.0)
    return next((e for e in ENCODINGS if qualities.get(e, wildcard) > 0), None)


def compress(body: bytes, encoding: str, level: int) -> bytes:
    if encoding == "zstd":
        return zstandard.ZstdCompressor(level=level).compress(body)
    if encoding == "br":
        return brotli.compress(body, quality=level)
    return gzip.compress(body, level)


class Precompressed:
    """A large file that never changes (plotly.min.js, 4.8 MB) compressed once per encoding, on first request:
    zstd 10 / brotli 5 / gzip 6 take 0.1–0.3 s each, which no request should pay twice."""

    LEVELS = {"zstd": 10, "br": 5, "gzip": 6}

    def __init__(self, body: bytes) -> None:
        self.body = body
        self._encoded: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def best(self, accept_encoding: str) -> tuple[str | None, bytes]:
        """(encoding, body) for an Accept-Encoding header: zstd, then brotli, then gzip, else as it is."""
        encoding = accepted(accept_encoding)
        return (encoding, self._encode(encoding)) if encoding else (None, self.body)

    def _encode(self, encoding: str) -> bytes:
        with self._lock:
            if encoding not in self._encoded:
                self._encoded[encoding] = compress(self.body, encoding, self.LEVELS[encoding])
            return self._encoded[encoding]
