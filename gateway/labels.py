# The words the gateway's outputs give to a frame's codes, defined once: the quality statuses
# and flags of SPEC.md section 6.1 (their codes are protocol.message's Q_* and F_*), and the
# title of each registered reading (protocol.senml.NAMES holds it with the reading's unit).
# The envelope, SensorThings, Home Assistant, the node state, the forecast and the demo read
# them here; tests/gateway/test_labels.py fails when a module spells a code or a name again.
from __future__ import annotations

from protocol import senml
from protocol.message import F_ALARM, F_BACKLOG, F_SAFE, F_STORM, Q_DEGRADED, Q_FAULT, Q_OK, Q_RANGE

QUALITY = {Q_OK: "ok", Q_DEGRADED: "degraded", Q_FAULT: "fault", Q_RANGE: "range"}
BAD_QUALITY = (Q_FAULT, Q_RANGE)  # statuses whose value is no measurement (the forecast leaves them out)
FLAGS = ((F_STORM, "storm"), (F_ALARM, "alarm"), (F_SAFE, "safe_mode"), (F_BACKLOG, "backlog"))
MODE_FLAGS = FLAGS[:3]  # the node's modes (its state); backlog only says how one frame travelled
TITLES = {name: title for name, (_unit, title) in senml.NAMES.items()}


def flag_names(flags: int, table: tuple[tuple[int, str], ...] = FLAGS) -> dict[str, bool]:
    # -> {name: set?} for every flag of `table`, in its order
    return {name: bool(flags & bit) for bit, name in table}
