# The offline buffer on a host folder (torn writes at every offset, ACK pruning, wrap-around,
# reopen) and the config validation. On real LittleFS: tests/firmware/test_buffer_flash.py.
import pytest

from firmware import config
from firmware.buffer import Buffer
from firmware.sim.board import PowerCut, SimBoard


def frames(n, size=90):
    return [bytes([(i * 7 + k) & 0xFF for k in range(size)]) for i in range(n)]


def test_put_ack_cum_and_reopen(tmp_path):
    path = str(tmp_path / "b.bin")
    b = Buffer(path, slots=8, slot_bytes=128)
    fs = frames(6)
    for i, f in enumerate(fs):
        b.put(3, i, f)
    assert b.ack(3, 4) == 1 and b.ack(2, 0, cum=10) == 0  # another boot's ACK removes nothing
    assert b.ack(3, 99, cum=1) == 2
    b.close()
    b = Buffer(path, slots=8, slot_bytes=128)
    order = []
    pos = 0
    while True:
        slot, pos = b.oldest(pos)
        if slot < 0:
            break
        pos += 1
        order.append((b.seq[slot], b.frame(slot)))
    assert order == [(2, fs[2]), (3, fs[3]), (5, fs[5])]
    assert b.put(3, 6, bytes(200)) == -1 and b.counts["oversize"] == 1


def test_ring_drops_oldest_when_full(tmp_path):
    b = Buffer(str(tmp_path / "b.bin"), slots=4, slot_bytes=128)
    for i in range(6):
        b.put(1, i, frames(1)[0])
    assert b.live == 4 and b.counts["dropped"] == 2
    slot, _ = b.oldest()
    assert b.seq[slot] == 2
    b.close()
    b = Buffer(str(tmp_path / "b.bin"), slots=4, slot_bytes=128)
    assert b.seq[b.oldest()[0]] == 2 and b.live == 4  # order survives a reopen after wrapping


@pytest.mark.parametrize("cut", list(range(0, 92, 9)) + [91])  # 90-byte frame + CRC
def test_power_cut_at_every_offset_of_a_slot_write(tmp_path, cut):
    board = SimBoard(str(tmp_path / "flash"))
    path = board.path("buffer.bin")
    b = Buffer(path, slots=8, slot_bytes=128, opener=board.open)
    fs = frames(5)
    for i in range(4):
        b.put(1, i, fs[i])
    b.ack(1, 0)
    board.cut_after = cut
    with pytest.raises(PowerCut):
        b.put(1, 4, fs[4])
    b = Buffer(path, slots=8, slot_bytes=128, opener=board.open)
    got = sorted((b.seq[i], b.frame(i)) for i in range(8) if b.wc[i])
    assert got == [(1, fs[1]), (2, fs[2]), (3, fs[3])]
    assert b.counts["torn"] == 1  # the file of the cut write, found by its CRC and removed
    b.put(1, 5, fs[4])
    assert b.live == 4


def test_config_defaults_and_rejects():
    key = "00" * 16
    cfg = config.validate({"node": "sew-1", "key": key, "board": "esp32", "link": {"kind": "uart"},
                           "interval_s": 60})
    assert cfg["interval_s"] == 60 and cfg["sensors"]["level"]["kind"] == "a02yyuw" and len(cfg["key_bytes"]) == 16
    cfg = config.validate({"node": "n", "key": key, "sensors": {"level": {"mount_mm": 2000}}})
    assert cfg["sensors"]["level"]["mount_mm"] == 2000 and cfg["sensors"]["level"]["samples"] == 5
    bad = [
        ({"node": "a/b", "key": key}, "node"),
        ({"node": "sew@07", "key": key}, "node"),  # printable, but not a SenML name (RFC 8428 4.5.1)
        ({"node": "_probe", "key": key}, "node"),
        ({"node": "n", "key": "zz"}, "key must be hex"),
        ({"node": "n", "key": "00"}, "16..64"),
        ({"node": "n", "key": key, "interval_s": 0}, "interval_s"),
        ({"node": "n", "key": key, "interval_s": 10, "storm_interval_s": 30}, "storm_interval_s"),
        ({"node": "n", "key": key, "link": {"kind": "zigbee"}}, "link.kind"),
        ({"node": "n", "key": key, "link": {"kind": "lora", "freq_khz": 869525}}, "freq_khz"),  # the 10 % band
        ({"node": "n", "key": key, "link": {"kind": "lora", "power_dbm": 22}}, "power_dbm"),  # over 25 mW ERP
        ({"node": "n", "key": key, "link": {"kind": "udp", "host": "h", "port": 0}}, "port"),
        ({"node": "n", "key": key, "sensors": {"level": {"kind": "laser"}}}, "sensors.level.kind"),
        ({"node": "n", "key": key, "sensors": {"level": {"samples": 99}}}, "samples"),
        ({"node": "n", "key": key, "sleep": "hibernate"}, "sleep"),
        ({"node": "n", "key": key, "sensors": {"level": {"ema_alpha": 2}}}, "ema_alpha"),
        ({"node": "n", "key": key, "sensors": {"level": {"clamp_mm": [500, 100]}}}, "clamp_mm"),
        ([], "JSON object"),
    ]
    for raw, words in bad:
        with pytest.raises(config.ConfigError, match=words):
            config.validate(raw)


def test_config_save_load_roundtrip(tmp_path):
    p = str(tmp_path / "config.json")
    config.save(p, {"node": "n", "key": "11" * 16, "interval_s": 120})
    assert config.load(p)["interval_s"] == 120
    with pytest.raises(config.ConfigError, match="no config"):
        config.load(str(tmp_path / "missing.json"))
