"""HTTP caching and compression (server/web/http_cache.py): ETags, 304s without a pass, shared caching, encodings."""

from __future__ import annotations

import gzip

import brotli
import pytest
import zstandard
from fastapi.testclient import TestClient

from server.web import http_cache
from server.web.app import create_app
from server.web.http_cache import accepted

DETERMINISTIC = [
    "/api/meta",
    "/api/bugs",
    "/api/dataset",
    "/api/graph?mode=fused",
    "/api/state?step=3",
    "/api/tensor/counts_sum_inv?step=3",
    "/api/hints?step=3",
    "/api/why/W2?step=9&at=5,3",
    "/api/instance/probs?step=2&at=3,7",
]


@pytest.fixture(scope="module")
def client(lecture_dataset):
    with TestClient(create_app(lecture_dataset), base_url="http://127.0.0.1", raise_server_exceptions=False) as c:
        yield c


def plain(client, url, **headers):
    return client.get(url, headers={"Accept-Encoding": "identity", **headers})


@pytest.mark.parametrize("url", DETERMINISTIC)
def test_a_deterministic_answer_has_a_strong_etag_a_shared_cache_may_keep_and_a_304(client, url):
    first = plain(client, url)
    assert first.status_code == 200
    etag = first.headers["etag"]
    assert etag.startswith('"') and not etag.startswith("W/")
    assert "public" in first.headers["cache-control"] and "max-age=" in first.headers["cache-control"]
    again = plain(client, url, **{"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == etag
    # a weak form of the tag, or the tag among others, is a match too (RFC 9110: weak comparison)
    assert plain(client, url, **{"If-None-Match": f'"other", W/{etag}'}).status_code == 304
    assert plain(client, url, **{"If-None-Match": '"other"'}).status_code == 200


def test_a_304_computes_no_pass(lecture_dataset):
    with TestClient(create_app(lecture_dataset), base_url="http://127.0.0.1") as c:
        etag = plain(c, "/api/tensor/h?seed=11&step=5").headers["etag"]
        c.app.state.cache._entries.clear()  # forget the pass: a 304 must not need it
        assert c.get("/api/health").json()["cached_passes"] == 0
        assert plain(c, "/api/tensor/h?seed=11&step=5", **{"If-None-Match": etag}).status_code == 304
        assert c.get("/api/health").json()["cached_passes"] == 0


def test_the_etag_follows_the_validated_query_the_path_and_the_data(client, embedded_dataset):
    tag = lambda url: plain(client, url).headers["etag"]  # noqa: E731
    # the same answer however the query is written: defaults omitted or spelled out, in any order
    assert tag("/api/state?step=3") == tag("/api/state?mode=atomic&step=3&seed=2147483647")
    assert tag("/api/state?step=3&batch_size=32") == tag("/api/state?batch_size=32&step=3")
    # another answer, another tag
    urls = ("/api/state?step=3", "/api/state?step=4", "/api/tensor/h?step=3", "/api/tensor/C?step=3")
    assert len({tag(url) for url in urls}) == 4
    # another dataset on another server: the same URL is another answer
    with TestClient(create_app(embedded_dataset), base_url="http://127.0.0.1") as other:
        assert plain(other, "/api/state?step=3").headers["etag"] != tag("/api/state?step=3")


def test_a_trained_runs_answers_are_not_shared(client):
    answer = plain(client, "/api/state?run=1&n_hidden=200")  # no run store here: a 404
    assert answer.status_code == 404 and "etag" not in answer.headers


@pytest.mark.parametrize(
    ("encoding", "decode"),
    [
        ("gzip", gzip.decompress),
        ("br", brotli.decompress),
        ("zstd", lambda b: zstandard.ZstdDecompressor().decompressobj().decompress(b)),
    ],
)
def test_answers_and_assets_are_compressed_as_the_client_accepts(client, encoding, decode):
    for url in ("/api/tensor/hprebn?step=3", "/js/app.js", "/vendor/plotly.min.js"):
        identity = plain(client, url)
        with client.stream("GET", url, headers={"Accept-Encoding": encoding}) as packed:
            raw = b"".join(packed.iter_raw())  # the bytes on the wire, not decoded by httpx
        assert packed.headers["content-encoding"] == encoding, url
        assert "accept-encoding" in packed.headers["vary"].lower()
        assert decode(raw) == identity.content
        assert len(raw) < len(identity.content) / 2
        # a compressed copy's strong tag names its encoding, and revalidates
        if url.startswith("/api/"):
            assert packed.headers["etag"] == identity.headers["etag"][:-1] + f'-{encoding}"'
            again = client.get(url, headers={"Accept-Encoding": encoding, "If-None-Match": packed.headers["etag"]})
            assert again.status_code == 304


def test_a_large_configs_answer_is_compressed_off_the_event_loop(client):
    url = "/api/tensor/h?batch_size=256&n_hidden=512&step=3"  # past routes.LARGE: computed in a worker thread
    identity = plain(client, url)
    with client.stream("GET", url, headers={"Accept-Encoding": "gzip, zstd"}) as packed:
        raw = b"".join(packed.iter_raw())
    assert packed.headers["content-encoding"] == "zstd"
    assert zstandard.ZstdDecompressor().decompressobj().decompress(raw) == identity.content
    assert packed.headers["etag"] == identity.headers["etag"][:-1] + '-zstd"'


def test_the_pages_files_may_be_kept_a_minute_and_revalidate(client):
    # the plain paths (the pages name the fingerprinted ones, kept for good: tests/web/test_static.py)
    for url in ("/js/app.js", "/style.css"):
        first = plain(client, url)
        assert first.headers["cache-control"] == "public, max-age=60", url
        assert plain(client, url, **{"If-None-Match": first.headers["etag"]}).status_code == 304


def test_the_pages_revalidate_on_every_visit(client):
    for url in ("/", "/train.html"):  # so that a new version's fingerprinted names reach every browser at once
        first = plain(client, url)
        assert first.headers["cache-control"] == "no-cache", url
        assert plain(client, url, **{"If-None-Match": first.headers["etag"]}).status_code == 304


def test_a_small_answer_goes_uncompressed(client):
    answer = client.get("/api/health", headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in answer.headers


@pytest.mark.parametrize(
    ("header", "chosen"),
    [
        ("gzip", "gzip"),
        ("gzip;q=0", None),
        ("gzip; q=0.000, identity", None),
        ("zstd;q=0, br;q=0, gzip", "gzip"),
        ("zstd;q=0.5, gzip", "zstd"),  # any q above 0 is accepted; the server's order decides among them
        ("*", "zstd"),
        ("*;q=0", None),
        ("*, zstd;q=0", "br"),
        ("GZIP;Q=0", None),
        ("gzip;q=zero", None),
        ("", None),
    ],
)
def test_an_encoding_with_q0_is_refused(header, chosen):
    assert accepted(header) == chosen


@pytest.mark.parametrize(
    "url", ["/api/tensor/hprebn?step=3", "/api/tensor/h?batch_size=256&n_hidden=512&step=3", "/vendor/plotly.min.js"]
)
def test_gzip_q0_gets_the_answer_plain(client, url):
    # the middleware, the large-file bundle and the off-loop compression agree: q=0 means not this one
    answer = client.get(url, headers={"Accept-Encoding": "gzip;q=0"})
    assert answer.status_code == 200 and "content-encoding" not in answer.headers


def test_the_etag_names_the_build(client, monkeypatch):
    # a new version of the server changes every answer's tag: no cache keeps an older build's answer
    url = "/api/state?step=3&seed=77"
    before = plain(client, url).headers["etag"]
    monkeypatch.setattr(http_cache, "BUILD", "another-build")
    after = plain(client, url).headers["etag"]
    assert after != before
    assert plain(client, url, **{"If-None-Match": before}).status_code == 200


@pytest.mark.parametrize("url", ["/api/state?step=3", "/api/meta", "/vendor/plotly.min.js"])
def test_if_none_match_star_matches_any_answer(client, url):
    # RFC 9110: "*" matches any current representation, so a cache holding one gets a 304
    answer = plain(client, url, **{"If-None-Match": "*"})
    assert answer.status_code == 304 and answer.content == b""
