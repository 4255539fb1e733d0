"""Ctrl-C during start-up, before uvicorn takes the signals over: noted as well as raised.

A library imported during start-up may wrap an optional import in a bare `except:` that swallows the
KeyboardInterrupt a Ctrl-C raises; the server would then start as if nothing had happened and never end.
A noted Ctrl-C is acted on at the next step of start-up whatever became of its KeyboardInterrupt.
"""

from __future__ import annotations

import signal

_noted: list[int] = []  # the stop signals that arrived before uvicorn took them over


def note_stop_signals() -> None:
    """From now on a Ctrl-C is noted, then raised as ever (unless Ctrl-C is ignored: a job started with `&`)."""

    def noted(signum: int, frame: object) -> None:
        _noted.append(signum)
        raise KeyboardInterrupt

    # a mask is inherited across exec, and nothing here blocks them on purpose: a stop signal held back from
    # birth would be held for good
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, noted)


def stop_noted() -> bool:
    """Whether a Ctrl-C arrived since note_stop_signals(), swallowed or not."""
    return bool(_noted)


def end_if_noted() -> None:
    """Raise KeyboardInterrupt again for a Ctrl-C that something swallowed."""
    if _noted:
        raise KeyboardInterrupt
