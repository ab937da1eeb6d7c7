# Key rotation at the gateway (SPEC.md 4.5, 6.6): after `provision --force` the keys file
# holds the node's new key (version 1) and the replaced one as previous_key (version 0). Frames
# the node buffered under the old key verify and are forwarded once, like the new ones; once
# the previous key is gone (a reload without it) an old frame is refused as `retired`, counted
# against the node, and answered with a MACed retired message naming it, never ACKed.
import socket
import time

from gateway import config
from gateway.daemon import Gateway
from gateway.files import write_private
from gateway.keys import Keys, format_keys, load_keys
from protocol import message, senml
from tests.gateway.conftest import NODES, write_config

OLD = NODES["sew-01"]
NEW = bytes(range(100, 116))


def frame(key, version, boot, seq):
    return message.encode_data(key, "sew-01", boot, seq, 1000 + seq, [senml.record("l", 0.5 + seq / 1000)],
                               key_version=version, flags=message.F_BACKLOG)


def exchange(sock, gw, data, timeout=5.0):
    # send one datagram, return the gateway's replies decoded with the node's NEW key
    sock.sendto(data, gw.udp_addresses[0])
    sock.settimeout(timeout)
    data, _ = sock.recvfrom(2048)
    return message.decode(data, {"sew-01": NEW}.get)


def test_frames_under_the_previous_key_drain_then_a_retired_key_is_answered(tmp_path, mosquitto, subscriber):
    path = write_config(tmp_path / "gw", mosquitto.url)
    keys = Keys(NODES)
    keys.rotate("sew-01", NEW)  # what provision --force does: version 1, version 0 kept
    text = format_keys(keys)
    assert 'key_version = 1' in text and f'previous_key = "{OLD.hex()}"' in text
    write_private(tmp_path / "gw" / "keys.toml", text)
    assert load_keys(tmp_path / "gw" / "keys.toml").versions == {"sew-01": {1: NEW, 0: OLD}}
    gw = Gateway(config.load(path)).start()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    try:
        # the backlog under version 0 (boot 4), then the new boot under version 1
        for seq in range(5):
            assert exchange(sock, gw, frame(OLD, 0, 4, seq))["type"] == "ack"
        for seq in range(3):
            assert exchange(sock, gw, frame(NEW, 1, 5, seq))["type"] == "ack"
        # version 0 with the new key, version 1 with the old: the MAC decides, nothing is taken
        sock.sendto(frame(NEW, 0, 5, 3), gw.udp_addresses[0])
        sock.sendto(frame(OLD, 1, 5, 4), gw.udp_addresses[0])
        assert subscriber.wait(lambda: len(subscriber.ups()) == 8)
        assert sorted((u["boot"], u["seq"]) for u in subscriber.ups()) == [(4, s) for s in range(5)] + [
            (5, s) for s in range(3)]
        assert subscriber.wait(lambda: gw.stats.node("sew-01").unverified == 2)  # bad MACs: not its rejects

        # the previous key leaves the keys file (it leaked: provision --force --drop-old-key)
        keys.versions["sew-01"].pop(0)
        write_private(tmp_path / "gw" / "keys.toml", format_keys(keys))
        assert "previous_key" not in (tmp_path / "gw" / "keys.toml").read_text()
        assert gw.reload_keys()
        reply = exchange(sock, gw, frame(OLD, 0, 4, 5))
        assert (reply["type"], reply["boot"], reply["seq"], reply["key_version"]) == ("retired", 4, 5, 1)
        assert gw.stats.node("sew-01").rejected.get("retired") == 1
        assert subscriber.wait(lambda: gw.counters().get("retired_replies") == 1)
        # a frame naming a version above the gateway's: its keys file is older than the node's config
        sock.sendto(frame(NEW, 2, 5, 3), gw.udp_addresses[0])
        assert subscriber.wait(lambda: gw.stats.rejected.get("unknown") == 1)
        time.sleep(0.3)
        assert len(subscriber.ups()) == 8  # nothing refused was forwarded
        # the node's count of frames it discarded reaches its state
        info = {message.I_FW: "t", 6: 1}
        data = message.encode_data(NEW, "sew-01", 5, 3, 9000, [senml.record("l", 0.5)], key_version=1, info=info)
        assert exchange(sock, gw, data)["type"] == "ack"
        assert gw.stats.node("sew-01").as_dict()["discarded"] == 1
    finally:
        sock.close()
        gw.stop()


