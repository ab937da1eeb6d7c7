# The firmware on the real MicroPython VM (unix port), deployed as a device gets it:
# every protocol/ and firmware/ module compiled with mpy-cross, run from that folder
# with a capped heap. The full storm scenario runs there; the host verifies every frame.
import os
import pathlib
import subprocess

import pytest

from protocol import message as msg
from tests.firmware.conftest import KEY, NODE
from tests.support import mpvm

ROOT = pathlib.Path(__file__).resolve().parents[2]
# The device's heap budget is measured on the target (the emulated Pico:
# hil_tests/test_port.py test_heap_budget_after_start_and_a_300_frame_backlog); here the VM
# checks in bytes what a cycle allocates and that nothing accumulates, with a heap that is
# room, not a budget (tests/support/mpvm.py: the 64-bit port's qstr pools grow in doubling
# steps, a cliff no board has). The storm scenario also carries the simulated world, its parts
# and a gateway in the same VM, so it gets more.
DEVICE_HEAP = mpvm.HEAP
STORM_HEAP = "320k"


@pytest.fixture(scope="session")
def mpy_tree(tmp_path_factory):
    out = tmp_path_factory.mktemp("device")
    failures = mpvm.compile_tree(out)
    assert not failures, "mpy-cross rejects:\n" + "\n".join(failures)
    return out


@pytest.fixture(scope="session")
def esp32_tree(tmp_path_factory):
    # exactly what `citynode flash` puts under /lib of an ESP32 (its device manifest)
    from tools.upload import build_bundle

    out = tmp_path_factory.mktemp("esp32")
    for path, data in build_bundle({"board": "esp32"}):
        if path.startswith("lib/"):
            (out / path[4:]).parent.mkdir(parents=True, exist_ok=True)
            (out / path[4:]).write_bytes(data)
    return out


def run_device(tree, args, heap, cwd, timeout=120):
    env = dict(os.environ, MICROPYPATH=str(tree))
    return subprocess.run([mpvm.micropython_binary(), "-X", f"heapsize={heap}", "-m", *args],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=str(cwd))


def test_every_module_compiles_with_mpy_cross(mpy_tree):
    n = len(list(mpy_tree.rglob("*.mpy")))
    assert n == len(list((ROOT / "firmware").rglob("*.py"))) + len(list((ROOT / "protocol").rglob("*.py")))


def test_mpy_cross_check_catches_cpython_only_syntax(tmp_path):
    exe = pathlib.Path(mpvm.micropython_binary()).parent / "mpy-cross"
    bad = tmp_path / "bad.py"
    bad.write_text("def f(a, /, b):\n    return a\n")
    p = subprocess.run([str(exe), str(bad)], capture_output=True, text=True)
    assert p.returncode != 0


@pytest.mark.micropython
def test_storm_scenario_on_micropython(mpy_tree, tmp_path):
    flash = tmp_path / "flash"
    p = run_device(mpy_tree, ["firmware.sim.run", "storm", "--flash", str(flash), "--node", NODE,
                              "--key", KEY.hex(), "--hours", "8"], STORM_HEAP, tmp_path)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr
    lines = p.stdout.splitlines()
    frames = [bytes.fromhex(x[6:]) for x in lines if x.startswith("FRAME ")]
    logs = [x[4:] for x in lines if x.startswith("LOG ")]
    done = [x for x in lines if x.startswith("DONE ")]
    assert done and " live=0" in done[0] and " rejects=0" in done[0], done
    decoded = [msg.decode(f, {NODE: KEY}.get) for f in frames]  # raises on any bad MAC or payload
    seqs = [d["seq"] for d in decoded]
    assert sorted(seqs) == list(range(len(seqs))), "a reading was lost"
    assert len(frames) > 150
    flags = [d["flags"] for d in decoded]
    assert any(f & msg.F_STORM for f in flags) and any(f & msg.F_ALARM for f in flags)
    assert any(f & msg.F_BACKLOG for f in flags)  # made during the outages, delivered later
    assert not flags[-1] & (msg.F_STORM | msg.F_ALARM)  # drained and calm again
    levels = [r[2] for d in decoded for r in d["records"] if r[0] == "l"]
    assert min(levels) < 0.3 and max(levels) >= 2.2
    assert decoded[0]["info"][msg.I_BOARD] == "sim"
    for needle in ("link down", "link up", "storm mode on", "ALARM", "alarm cleared", "storm mode off"):
        assert any(needle in x for x in logs), needle


@pytest.mark.micropython
def test_device_firmware_one_cycle_heap_and_no_growth(esp32_tree, tmp_path):
    # bench/firmware_cycle_mp.py: the real node, drivers, 512-slot buffer and protocol on
    # parts that allocate nothing themselves, heap capped, from the ESP32's device
    # manifest alone (no simulator there to load: the manifest holds all the node needs)
    assert not list(esp32_tree.rglob("sim")) and not (esp32_tree / "protocol" / "fast.mpy").exists()
    env = dict(os.environ, MICROPYPATH=str(esp32_tree))
    p = subprocess.run([mpvm.micropython_binary(), "-X", "heapsize=" + DEVICE_HEAP,
                        str(ROOT / "bench" / "firmware_cycle_mp.py"), str(tmp_path / "flash"), "300"],
                       capture_output=True, text=True, timeout=120, env=env, cwd=str(tmp_path))
    assert p.returncode == 0, p.stdout + p.stderr
    last = p.stdout.splitlines()[-1]
    words = last.split()
    figures = dict(zip(words[0::2], map(int, words[1::2]), strict=True))
    # goal: one sample-encode-send cycle under 8 KB of heap. Counted: every byte the firmware
    # allocates in a cycle, garbage included; protocol.message encode/decode is reported apart
    # (PROTOCOL) because that code belongs to protocol/.
    assert figures["PEAK"] < 8192, p.stdout
    assert figures["GROWTH"] < 512, p.stdout  # nothing accumulates from cycle to cycle
    assert figures["FRAMES"] == figures["SENT"] == 320 and figures["LIVE"] == 0, p.stdout
