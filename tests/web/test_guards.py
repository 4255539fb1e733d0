"""The request guards (server/web/guards.py): which Host headers a server answers, which origins may change."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from starlette.responses import JSONResponse

from server.web.guards import GuardOrigin, host_allowed


def test_host_patterns():
    allowed = ("localhost", ".school.example", "10.0.0.5")
    assert all(
        host_allowed(h, allowed) for h in ("localhost:80", "school.example", "a.school.example:8000", "10.0.0.5")
    )
    assert not any(host_allowed(h, allowed) for h in ("evilschool.example", "localhost.evil", "10.0.0.6", ""))
    assert host_allowed("anything", ("*",))


def _origin_app() -> TestClient:
    async def ok(scope, receive, send):
        await JSONResponse({"ok": True})(scope, receive, send)

    return TestClient(GuardOrigin(ok, ("127.0.0.1",)), base_url="http://127.0.0.1")


@pytest.mark.parametrize(
    ("origin", "status"),
    [
        ("http://127.0.0.1", 200),
        ("https://127.0.0.1", 403),  # the same host under another scheme is another origin
        ("HTTP://127.0.0.1", 200),
        ("http://127.0.0.1:8001", 403),
        ("http://evil.example", 403),
        ("null", 403),
    ],
)
def test_a_change_must_come_from_this_scheme_and_host(origin, status):
    answer = _origin_app().post("/api/check", headers={"Origin": origin}, content=b"{}")
    assert answer.status_code == status, answer.text
