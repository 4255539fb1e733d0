"""The request guards (server/web/guards.py): which Host headers a server answers."""

from __future__ import annotations

from server.web.guards import host_allowed


def test_host_patterns():
    allowed = ("localhost", ".school.example", "10.0.0.5")
    assert all(
        host_allowed(h, allowed) for h in ("localhost:80", "school.example", "a.school.example:8000", "10.0.0.5")
    )
    assert not any(host_allowed(h, allowed) for h in ("evilschool.example", "localhost.evil", "10.0.0.6", ""))
    assert host_allowed("anything", ("*",))
