"""The page's files under fingerprinted names (/static/js/app.<hash>.js), which a browser keeps for good.

A name carries a hash of the file's bytes, so a new version is a new name: its answer can be cached a year as
immutable, and a repeat visit fetches none of them. The HTML pages are the one way in: served revalidated on
every visit, they name the fingerprinted files, and their import map sends the modules' relative imports
("./api.js" from /static/js/app.<hash>.js asks for /static/js/api.js) and the lazily loaded plotly.js to theirs.
"""

from __future__ import annotations

import hashlib
import json
import mimetypes
import re
from dataclasses import dataclass
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response

from .http_cache import Precompressed, not_modified

IMMUTABLE = "public, max-age=31536000, immutable"  # a fingerprinted name never changes its bytes
# an HTML page: revalidated on every visit (its ETag: a 304 sends nothing), so a new version's names arrive at once
PAGE = "no-cache"
PAGES = ("index.html", "train.html", "class.html")
KINDS = {".js": "text/javascript", ".css": "text/css"}  # what is fingerprinted
REFERENCE = re.compile(r'(src|href)="(/[^"?#]+)"')


@dataclass(frozen=True)
class Asset:
    """One fingerprinted file: its bytes (compressed once per encoding) and its media type."""

    body: Precompressed
    media_type: str
    etag: str


def fingerprinted(path: str, digest: str) -> str:
    """ "/js/app.js" → "/static/js/app.<digest>.js"."""
    stem, dot, ext = path.rpartition(".")
    return f"/static{stem}.{digest}{dot}{ext}"


class Fingerprints:
    """The frontend folder's scripts and styles (and the vendored ones) by fingerprint, and its pages rewritten
    to name them; built again when a file of the folder changes (a developer's edit shows on reload)."""

    def __init__(self, frontend: Path, vendor: dict[str, Precompressed]) -> None:
        self.frontend = frontend
        self.vendor = vendor
        # every fingerprinted URL built so far: a page loaded before an edit still gets its files
        self.assets: dict[str, Asset] = {}
        self.signature: tuple = ()
        self.pages: dict[str, tuple[bytes, str]] = {}
        self._build()

    def _files(self) -> list[Path]:
        return sorted(p for p in self.frontend.rglob("*") if p.suffix in KINDS and p.is_file())

    def _build(self) -> None:
        files = self._files()
        self.signature = tuple((p, p.stat().st_mtime_ns, p.stat().st_size) for p in files)
        names: dict[str, str] = {}  # the plain path → its fingerprinted URL
        sources = [("/" + p.relative_to(self.frontend).as_posix(), Precompressed(p.read_bytes())) for p in files]
        for path, body in [*sources, *self.vendor.items()]:
            digest = hashlib.sha256(body.body).hexdigest()[:16]
            url = fingerprinted(path, digest)
            names[path] = url
            media = KINDS.get(Path(path).suffix) or mimetypes.guess_type(path)[0] or "application/octet-stream"
            self.assets[url] = Asset(body, media, f'"{digest}"')
        # the modules import each other relatively, from /static/js/: each such URL is mapped to its fingerprint
        imports = {f"/static{path}": url for path, url in names.items() if path.endswith(".js")}
        imports.update({path: url for path, url in names.items() if path.startswith("/vendor/")})
        importmap = f'<script type="importmap">{json.dumps({"imports": imports}, separators=(",", ":"))}</script>\n  '
        self.pages = {}
        for name in PAGES:
            html = (self.frontend / name).read_text()
            html = REFERENCE.sub(lambda m: f'{m[1]}="{names.get(m[2], m[2])}"', html)
            at = html.index("<link")  # before the first link: a modulepreload must see the map
            body = (html[:at] + importmap + html[at:]).encode()
            self.pages[name] = (body, f'"{hashlib.sha256(body).hexdigest()[:32]}"')

    def page(self, name: str, request: Request) -> Response:
        """An HTML page naming the current fingerprints; a 304 when the browser's copy is current."""
        if tuple((p, p.stat().st_mtime_ns, p.stat().st_size) for p in self._files()) != self.signature:
            self._build()
        body, etag = self.pages[name]
        headers = {"Cache-Control": PAGE, "ETag": etag}
        if not_modified(request, etag):
            return Response(status_code=304, headers=headers)
        return Response(body, media_type="text/html", headers=headers)

    def asset(self, url: str, request: Request) -> Response | None:
        """A fingerprinted file, kept for good by whoever receives it; None for a name this server never made."""
        asset = self.assets.get(url)
        if asset is None:
            return None
        headers = {"Cache-Control": IMMUTABLE, "ETag": asset.etag, "Vary": "Accept-Encoding"}
        if not_modified(request, asset.etag):
            return Response(status_code=304, headers=headers)
        encoding, body = asset.body.best(request.headers.get("accept-encoding", ""))
        if encoding:
            headers["Content-Encoding"] = encoding
        return Response(body, media_type=asset.media_type, headers=headers)
