# The independent COSE check (SPEC.md section 4.4): pycose 1.1.0, in its own virtual environment
# with cbor2 < 6 (`make .venv-pycose/.installed`), verifies every valid vector and every invalid
# one whose fault lies beyond COSE ("mac_ok": true), and rejects the others.
import json
import pathlib
import re
import subprocess

ROOT = pathlib.Path(__file__).resolve().parent.parent
PYTHON = ROOT / ".venv-pycose" / "bin" / "python"
VECTORS = ROOT / "protocol" / "vectors"


def expected_counts():
    verified = rejected = 0
    for path in VECTORS.glob("*.json"):
        for v in json.loads(path.read_text()):
            if "frame" in v or "token" in v:  # a message, or a signed command (SPEC 6.7)
                if v.get("valid") or v["mac_ok"]:
                    verified += 1
                else:
                    rejected += 1
    return verified, rejected


def test_pycose_verifies_the_vectors():
    assert PYTHON.exists(), "no .venv-pycose with pycose 1.1.0: run `make .venv-pycose/.installed` first"
    proc = subprocess.run([str(PYTHON), str(ROOT / "tests" / "pycose_check.py"), str(VECTORS)], capture_output=True,
                          text=True, timeout=120, cwd=str(ROOT))
    print(proc.stdout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    m = re.search(r"pycose (\S+) with cbor2 (\S+): (\d+) verified as expected, (\d+) rejected as expected, "
                  r"(\d+) failed", proc.stdout)
    assert m, proc.stdout
    assert m.group(1) == "1.1.0"
    assert (int(m.group(3)), int(m.group(4)), int(m.group(5))) == (*expected_counts(), 0)
