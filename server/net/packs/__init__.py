"""The network packs: each module declares one network (its Net); the lecture's is the default."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..declare import Net, Undeclared
from . import attention, layernorm, makemore4, wavenet

DEFAULT_NET = "makemore4"
NETS: dict[str, Net] = {net.name: net for net in (makemore4.NET, layernorm.NET, wavenet.NET, attention.NET)}
NET_FILE_ENV = "BACKPROP_EXPLORER_NET_FILE"  # the network files' paths and texts, for every process the server starts


def net_of(name: str) -> Net:
    """The pack of that name; any other name is Undeclared (a 4xx on the `net` field)."""
    if name not in NETS:
        raise Undeclared("net", f"no network {name!r}: the networks are {', '.join(NETS)}")
    return NETS[name]


def default_net() -> Net:
    """The lecture's network: what a request or a run without `net` builds."""
    return NETS[DEFAULT_NET]


def add_net_file(path: str, source: str) -> Net:
    """A network file's Net (server/net/netfile.py) served beside the packs; NetFileError where it cannot be."""
    from ..netfile import NetFileError, load

    net = load(path, source)
    if net.name in NETS and NETS[net.name] is not net:
        raise NetFileError(1, f"a network called {net.name} is already served: rename the file")
    NETS[net.name] = net
    return net


def hand_over_net_files(files: list[tuple[str, str]]) -> None:
    """Every process started from now on (web, check, training) reads the same files' texts at its start."""
    os.environ[NET_FILE_ENV] = json.dumps([{"path": path, "source": source} for path, source in files])


def _net_files_from_environment(value: str) -> None:
    """The server hands its processes the files' paths and texts (JSON); a worker started by hand names the paths,
    separated as in PATH (mynet.py:head.py)."""
    if value.startswith("["):
        for handed in json.loads(value):
            add_net_file(handed["path"], handed["source"])
    else:
        for path in filter(None, value.split(os.pathsep)):
            add_net_file(path, Path(path).read_text(encoding="utf-8"))


# the server's --net-file, read again in each of its processes: the texts validated at start-up, not the files
if os.environ.get(NET_FILE_ENV):
    _net_files_from_environment(os.environ[NET_FILE_ENV])
