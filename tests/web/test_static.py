"""The page's files under fingerprinted names: immutable, named by the pages and their import map, 404 otherwise."""

from __future__ import annotations

import hashlib
import json
import re

import pytest
from fastapi.testclient import TestClient
from starlette.requests import Request

from server.assets import FRONTEND
from server.web.app import create_app
from server.web.http_cache import Precompressed
from server.web.static import PAGES, Fingerprints

YEAR = 31536000


@pytest.fixture(scope="module")
def client(lecture_dataset):
    with TestClient(create_app(lecture_dataset), base_url="http://127.0.0.1", raise_server_exceptions=False) as c:
        yield c


def importmap(html: str) -> dict[str, str]:
    found = re.search(r'<script type="importmap">(.*?)</script>', html, re.S)
    assert found, "the page has no import map"
    return json.loads(found[1])["imports"]


@pytest.mark.parametrize("page", ["/", "/index.html", "/train.html"])
def test_the_pages_name_only_fingerprinted_scripts_and_styles(client, page):
    r = client.get(page)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert r.headers["cache-control"] == "no-cache"  # revalidated on every visit: a new version's names at once
    html = r.text
    refs = re.findall(r'(?:src|href)="(/[^"]+)"', html)
    local = [u for u in refs if not u.startswith("/api/") and u != "/train.html" and u != "/"]
    assert local and all(re.fullmatch(r"/static/[\w/.-]+\.[0-9a-f]{16}\.(js|css)", u) for u in local), local
    # the import map sends every module's relative import, and plotly.js, to its fingerprint
    imports = importmap(html)
    modules = sorted(p.name for p in (FRONTEND / "js").glob("*.js"))
    assert sorted(k.removeprefix("/static/js/") for k in imports if k.startswith("/static/js/")) == modules
    assert "/vendor/plotly.min.js" in imports
    # the map comes before any module is asked for (a modulepreload before it would miss it)
    assert html.index('type="importmap"') < html.index("modulepreload" if page != "/train.html" else 'type="module"')
    again = client.get(page, headers={"If-None-Match": r.headers["etag"]})
    assert again.status_code == 304 and again.content == b""


def test_a_fingerprinted_file_is_its_files_bytes_kept_for_a_year(client):
    imports = importmap(client.get("/").text)
    for plain, url in imports.items():
        r = client.get(url, headers={"Accept-Encoding": "gzip"})
        assert r.status_code == 200, (url, r.text)
        assert r.headers["cache-control"] == f"public, max-age={YEAR}, immutable"
        assert r.headers["content-type"].startswith("text/javascript")
        if plain.startswith("/static/js/"):
            source = (FRONTEND / plain.removeprefix("/static/")).read_bytes()
            assert r.content == source  # httpx undid the gzip
            assert hashlib.sha256(source).hexdigest()[:16] in url
        again = client.get(url, headers={"If-None-Match": r.headers["etag"]})
        assert again.status_code == 304
    css = re.search(r'href="(/static/style\.[0-9a-f]+\.css)"', client.get("/").text)[1]
    r = client.get(css)
    assert r.headers["content-type"].startswith("text/css") and r.content == (FRONTEND / "style.css").read_bytes()


@pytest.mark.parametrize(
    "url",
    [
        "/static/js/app.0123456789abcdef.js",  # a fingerprint this server never made (an older version's)
        "/static/js/app.js",  # no fingerprint
        "/static/js/nothing.0123456789abcdef.js",
        "/static/",
        "/static/%2e%2e/server/settings.py",
    ],
)
def test_an_unknown_fingerprint_is_a_clear_404(client, url):
    r = client.get(url)
    assert r.status_code == 404
    assert "not a fingerprint of this server's files" in r.json()["detail"]
    assert "immutable" not in r.headers.get("cache-control", "")


def test_an_edited_file_gets_a_new_name_and_the_old_one_still_answers(tmp_path):
    (tmp_path / "js").mkdir()
    for name in PAGES:
        (tmp_path / name).write_text('<html><head>\n<link rel="stylesheet" href="/style.css">\n'
                                     '<script type="module" src="/js/app.js"></script></head></html>')  # fmt: skip
    (tmp_path / "style.css").write_text("body { color: black }")
    app = tmp_path / "js" / "app.js"
    app.write_text('import "./api.js";')
    (tmp_path / "js" / "api.js").write_text("export const a = 1;")
    files = Fingerprints(tmp_path, {"/vendor/plotly.min.js": Precompressed(b"window.Plotly = {};")})
    request = Request({"type": "http", "method": "GET", "headers": []})
    before = files.page("index.html", request).body.decode()
    old = re.search(r'src="(/static/js/app\.[0-9a-f]+\.js)"', before)[1]
    app.write_text('import "./api.js"; // edited')
    after = files.page("index.html", request).body.decode()
    new = re.search(r'src="(/static/js/app\.[0-9a-f]+\.js)"', after)[1]
    assert new != old and importmap(after)["/static/js/app.js"] == new
    assert importmap(after)["/static/js/api.js"] == importmap(before)["/static/js/api.js"]  # unchanged: same name
    assert files.asset(new, request).body.endswith(b"// edited")
    assert files.asset(old, request).status_code == 200  # a page loaded before the edit still gets its files
