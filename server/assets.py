"""Where the page and the embedded names list are: inside the installed package, or the repository's folders.

A wheel carries them as package data (server/frontend, server/embedded: pyproject.toml maps the
repository's top-level frontend/ and data/ in at build time); a checkout serves them where they are.
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _folder(packaged: str, in_repo: str) -> Path:
    installed = files(__package__ or "server").joinpath(packaged)
    if installed.is_dir():  # wheels install unpacked: a real folder, which StaticFiles needs
        return Path(str(installed))
    return REPO / in_repo


# index.html, train.html, style.css, js/; another folder's page where the environment names one (the browser
# bench serves an earlier version's page beside this one)
FRONTEND = Path(os.environ.get("BACKPROP_EXPLORER_FRONTEND") or _folder("frontend", "frontend"))
DEFAULT_DATA = _folder("embedded", "data") / "names.txt"  # the embedded names list


def missing() -> list[str]:
    """What a server cannot start without, if anything is missing."""
    needed = [FRONTEND / "index.html", FRONTEND / "train.html", DEFAULT_DATA]
    return [str(path) for path in needed if not path.is_file()]
