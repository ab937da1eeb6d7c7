# The firmware type-checks against the MicroPython API of each target (pyright with
# micropython-esp32-stubs / micropython-rp2-stubs as typeshed, docs/architecture.md). typings/ is
# not in git: `make test` installs the stubs (target typings/.installed), and this test
# installs them itself when they are missing. Keep the pins here and in the Makefile equal.
import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
STUBS = {"esp32": "micropython-esp32-stubs==1.29.0.post1", "rp2": "micropython-rp2-stubs==1.29.0.post1"}
BIN = pathlib.Path(sys.executable).parent


def ensure_stubs(target):
    folder = ROOT / "typings" / target
    if not (folder / "machine.pyi").exists():
        p = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--target", str(folder), STUBS[target]],
                           capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, f"cannot install {STUBS[target]}:\n{p.stderr[-2000:]}"
    return folder


def pyright(config):
    p = subprocess.run([str(BIN / "pyright"), "--outputjson", "-p", str(config)], capture_output=True, text=True,
                       timeout=300, cwd=str(config.parent))
    report = json.loads(p.stdout)
    return [d for d in report["generalDiagnostics"] if d["severity"] == "error"]


@pytest.mark.parametrize("target", sorted(STUBS))
def test_firmware_type_checks_against_micropython_stubs(target):
    ensure_stubs(target)
    errors = pyright(ROOT / "firmware" / f"pyrightconfig.{target}.json")
    assert not errors, "\n".join(f"{e['file']}:{e['range']['start']['line'] + 1}: {e['message']}" for e in errors)


def test_the_stubs_catch_a_wrong_machine_call(tmp_path):
    # proof the check looks at MicroPython's API, not CPython's: this passes CPython's typeshed
    stubs = ensure_stubs("esp32")
    (tmp_path / "bad.py").write_text("import machine\nimport time\n\nmachine.I2C(0).readfrom_mem_into(0x76)\n"
                                     "time.sleep_ms('5')\n")
    config = tmp_path / "pyrightconfig.json"
    config.write_text(json.dumps({"include": ["."], "stubPath": str(stubs), "typeshedPath": str(stubs),
                                  "reportMissingModuleSource": "none"}))
    errors = pyright(config)
    lines = sorted(e["range"]["start"]["line"] + 1 for e in errors)
    assert lines == [4, 5], errors
