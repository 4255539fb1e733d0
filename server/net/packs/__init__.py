"""The network packs: each module declares one network (its Net); the lecture's is the default."""

from __future__ import annotations

from ..declare import Net, Undeclared
from . import attention, layernorm, makemore4, wavenet

DEFAULT_NET = "makemore4"
NETS: dict[str, Net] = {net.name: net for net in (makemore4.NET, layernorm.NET, wavenet.NET, attention.NET)}


def net_of(name: str) -> Net:
    """The pack of that name; any other name is Undeclared (a 4xx on the `net` field)."""
    if name not in NETS:
        raise Undeclared("net", f"no network {name!r}: the networks are {', '.join(NETS)}")
    return NETS[name]


def default_net() -> Net:
    """The lecture's network: what a request or a run without `net` builds."""
    return NETS[DEFAULT_NET]
