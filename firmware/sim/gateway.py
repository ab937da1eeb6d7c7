# A minimal gateway for simulations and tests, in the node's process: verifies each
# frame with the protocol decoder, keeps it once, answers with an ACK (cum = highest seq
# of that boot below which nothing is missing) and hands out queued commands. Lenient where
# the real gateway is strict (SPEC.md 10): it takes frames of any boot and never answers with
# boot-behind (6.5); tests of those run against the real gateway (tests/firmware/
# test_simulate_gateway.py) or a peer of their own (test_node.py). With the nodes' command
# keys it also plays the operator: it signs (op, arg) for the boot it hears (SPEC 6.6).
from protocol import message as msg
from protocol.cbor import FrameError


class SimGateway:
    def __init__(self, keys, sink=None, command_keys=None):
        # sink(message, decoded): called for each new frame instead of keeping it (small heaps)
        self.keys = keys  # node id -> key bytes
        self.command_keys = command_keys or {}  # node id -> command key (the operator's)
        self.sink = sink
        self.accepted = 0
        self.frames = []  # accepted frames, raw bytes, in arrival order
        self.decoded = []
        self.seen = {}  # (node, boot) -> set of seqs
        self.cum = {}  # (node, boot) -> highest contiguous seq
        self.rejects = {}
        self.duplicates = 0
        self.commands = []  # (node, op, arg) or (node, signed command) waiting for the node's next frame
        self.cmd_id = 0

    def __call__(self, message):
        try:
            d = msg.decode(message, self.keys.get)
        except FrameError as e:
            self.rejects[e.reason] = self.rejects.get(e.reason, 0) + 1
            return []
        if d["type"] != "data":
            self.rejects["type"] = self.rejects.get("type", 0) + 1
            return []
        node = d["node"]
        k = (node, d["boot"])
        seen = self.seen.setdefault(k, set())  # seqs above cum only: the set stays small
        if d["seq"] <= self.cum.get(k, -1) or d["seq"] in seen:
            self.duplicates += 1
        else:
            seen.add(d["seq"])
            self.accepted += 1
            if self.sink is not None:
                self.sink(message, d)
            else:
                self.frames.append(message)
                self.decoded.append(d)
            c = self.cum.get(k, -1)
            while c + 1 in seen:
                c += 1
                seen.discard(c)
            self.cum[k] = c
        key = self.keys[node]
        c = self.cum[k]
        replies = [msg.encode_ack(key, node, d["boot"], d["seq"], c if c >= 0 else None)]
        for item in self.commands:
            if item[0] == node:
                self.commands.remove(item)
                self.cmd_id += 1
                ck = self.command_keys.get(node)
                if len(item) == 2:
                    from protocol.command import peek

                    replies.append(msg.encode_signed(key, node, d["boot"], peek(item[1])[1]["counter"], item[1]))
                elif ck is not None:
                    from protocol import command

                    token = command.sign(ck, node, d["boot"], self.cmd_id, item[1], item[2])
                    replies.append(msg.encode_signed(key, node, d["boot"], self.cmd_id, token))
                else:  # unsigned: a node refuses it (SPEC 6.6), tests show that
                    replies.append(msg.encode_cmd(key, node, d["boot"], self.cmd_id, item[1], item[2]))
                break
        return replies
