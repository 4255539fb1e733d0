"""The lecture's network pack, by the names the tests read it by: the default net's nodes, ops, modes and bugs."""

from __future__ import annotations

from server.net.bugs import schedule_with_bug as _schedule_with_bug
from server.net.declare import Op
from server.net.layers import layers_of
from server.net.packs import default_net
from server.net.packs.makemore4 import CLIP, EPS

NET = default_net()
MODES = NET.mode_names
MODES_BY_NAME = NET.modes_by_name
MODE_LIST = list(NET.modes)
NODES = NET.nodes_by_name
NODE_LIST = list(NET.nodes)
OPS = list(NET.ops)
OPS_BY_NAME = NET.ops_by_name
PARAMS = NET.params
PARAM_NAMES = NET.param_names
TRAINED_MODE = NET.trained_mode
CMP_ORDER = NET.cmp_order
BUGS = NET.bugs_by_name
LAYERS = layers_of(NET)
ops_for_mode = NET.ops_for_mode
nodes_for_mode = NET.nodes_for_mode
backward_schedule = NET.backward_schedule
eval_ops = NET.eval_ops
__all__ = ["CLIP", "EPS", "Op"]


def schedule_with_bug(mode: str, bug: str = "") -> list[Op]:
    """The lecture's schedule of a mode with a bug switched on."""
    return _schedule_with_bug(NET, mode, bug)


def bug_modes(bug: object) -> tuple[str, ...]:
    """The lecture's modes that have the rule the bug replaces."""
    return NET.bug_modes(bug)  # type: ignore[arg-type]
