# Commands on the node (SPEC.md 6.3 and 6.6): only what the operator signed with this
# node's command key, for this node and this boot, with a counter above the last one
# applied (kept on flash, so a replay is refused after a reset too), and an argument the
# one checker in protocol/command.py accepts. Every outcome but a repeat of the command
# just applied is reported in cmd_result and counted; only APPLIED changes the node.
from protocol import command as C


def depth_mm(cfg):
    # the shaft's depth at the level sensor, the setting its driver names (DEPTH: a distance
    # sensor's mount height, a probe's span); None without a level sensor
    from firmware import sensors

    for s in sensors.sensor_list(cfg):
        drv = sensors.driver(s["kind"])
        if drv.CAPS & sensors.LEVEL:
            return s[drv.DEPTH]
    return None


def handle(node, d):
    # d: a decoded type 3 message, or a LoRa link's compact signed command (cmd_id None: its
    # counter is inside what the operator signed, SPEC.md 13.6). -> status, or None for a
    # repeat that is only counted
    cmd_id = d["cmd_id"]
    token = d.get("signed")
    f = None
    h = node.health
    if token is None:
        status = C.UNSIGNED
    else:
        cfg = node.cfg
        status, f = C.decide(token, cfg["node"], cfg.get("command_key_bytes"), h.boot, node.last_cmd_id, cmd_id,
                             depth_mm(cfg), node.board.clock.time_s(), cfg.get("time_step_max_s", 3600))
        if status == C.REPLAY and f is not None and f["counter"] == node.last_cmd_id:
            node.counts["cmd_ignored"] += 1  # the gateway's resend of the command just applied
            return None
    if status == C.APPLIED:
        _apply(node, f)
    else:
        node.counts["cmd_refused"] += 1
    if cmd_id is None:
        # compact: no gateway MAC around it, anyone on the air can send one. A command whose own
        # MAC did not verify (f None) is only counted and logged; a verified refusal (replay,
        # other boot, an argument) waits for the next due frame, so replays cannot make the node
        # spend its airtime on reports
        if f is None:
            node.board.log("compact command refused: %d %s" % (status, C.RESULTS[status]))
            return status
        cmd_id = f["counter"]
        if status != C.APPLIED and node.cmd_result is not None:
            return status  # a result not yet sent is not overwritten by a refusal anyone could cause
        node.cmd_quiet = status != C.APPLIED
    node.cmd_result = [cmd_id, status]  # the next frame carries it (the node reports now)
    node.board.log("command %d %s -> %d %s" % (cmd_id, f["op"] if f else "?", status, C.RESULTS[status]))
    return status


def _apply(node, f):
    op = f["op"]
    arg = f["arg"]
    node.last_cmd_id = f["counter"]
    kept = None
    if op in ("interval", "thresholds"):
        node.policy.command(op, arg)
        node.send_info = True
        kept = node.policy.settings(node.cfg)
    elif op == "time":
        node.board.clock.set_time(arg)
    else:
        node.reboot_pending = True
    # the counter is on flash with the change: a replay after a reset finds it there
    if kept is not None:
        node.health.state.save(cmd=node.last_cmd_id, set=kept)
    else:
        node.health.state.save(cmd=node.last_cmd_id)
