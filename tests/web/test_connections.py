"""The connection guards (server/web/connections.py): a refusal's log line is said once a minute, with a count."""

from __future__ import annotations

import logging

from server.web.connections import QuietLog, trusted_networks


def test_an_event_is_logged_once_then_once_a_minute_with_its_count(caplog):
    now = [0.0]
    quiet = QuietLog(every_s=60, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="backprop-explorer"):
        said = [quiet.event("a", "refused a") for _ in range(1000)]
        now[0] = 30.0
        said.append(quiet.event("b", "refused b"))  # another key has its own minute
        now[0] = 61.0
        said.append(quiet.event("a", "refused a"))
    assert said.count(True) == 3 and said[0] and said[-1]
    assert [r.getMessage() for r in caplog.records] == [
        "refused a",
        "refused b",
        "refused a (1000 since the last such line)",
    ]


def test_trusted_proxies_are_networks_and_star_trusts_no_one_more():
    nets = trusted_networks(("10.0.0.1", "10.1.0.0/16", "::1", "*"))
    assert [str(n) for n in nets] == ["10.0.0.1/32", "10.1.0.0/16", "::1/128"]
