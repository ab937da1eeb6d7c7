# How the emulated Pico finds its images (tools/rig/pico.py): $CITYNODE_RIG_DIR, checked
# against its SHA256SUMS; what is missing or wrong is one line, and `citynode rig --board
# pico` exits 2 with it. No emulator runs here.
import hashlib
import os
import subprocess
import sys

import pytest

from tools.rig import pico


def rig_folder(tmp_path, image=b"uf2", bootrom=b"rom", sums=None):
    d = tmp_path / "rig"
    d.mkdir()
    (d / pico.IMAGE).write_bytes(image)
    (d / pico.BOOTROM).write_bytes(bootrom)
    if sums is None:
        sums = {pico.IMAGE: image, pico.BOOTROM: bootrom}
    (d / "SHA256SUMS").write_text("".join(f"{hashlib.sha256(v).hexdigest()}  {k}\n" for k, v in sums.items()))
    return d


def test_images_found_and_checked(tmp_path, monkeypatch):
    d = rig_folder(tmp_path)
    monkeypatch.setenv("CITYNODE_RIG_DIR", str(d))
    assert pico.find_images() == (d / pico.IMAGE, d / pico.BOOTROM)


def test_a_changed_image_is_refused(tmp_path, monkeypatch):
    d = rig_folder(tmp_path, sums={pico.IMAGE: b"another build", pico.BOOTROM: b"rom"})
    monkeypatch.setenv("CITYNODE_RIG_DIR", str(d))
    with pytest.raises(pico.RigMissing, match="does not match"):
        pico.find_images()


def test_missing_folder_and_file_are_named(tmp_path, monkeypatch):
    monkeypatch.setenv("CITYNODE_RIG_DIR", str(tmp_path / "nowhere"))
    assert "CITYNODE_RIG_DIR" in pico.check() and "SHA256SUMS" in pico.check()
    d = rig_folder(tmp_path)
    (d / pico.BOOTROM).unlink()
    monkeypatch.setenv("CITYNODE_RIG_DIR", str(d))
    assert pico.BOOTROM in pico.check()


def test_rig_without_images_is_one_line_and_exit_2(tmp_path):
    env_dir = tmp_path / "nowhere"
    proc = subprocess.run([sys.executable, "-m", "tools.cli", "rig", "--board", "pico", "--flash", str(tmp_path / "f")],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "CITYNODE_RIG_DIR": str(env_dir)})
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("citynode rig: no Pico images"), proc.stderr
