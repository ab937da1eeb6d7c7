# The dependency rule of docs/architecture.md, enforced by reading imports:
# protocol imports nothing from the repo; firmware and gateway import protocol only;
# tools may import all three.
import ast
import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ("protocol", "firmware", "gateway", "tools", "hil_tests", "tests")
ALLOWED = {
    "protocol": {"protocol"},
    "firmware": {"protocol", "firmware"},
    "gateway": {"protocol", "gateway"},
    "tools": {"protocol", "firmware", "gateway", "tools"},
}


def repo_imports(path):
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if top in PACKAGES:
                yield node.lineno, top


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_dependency_rule(package):
    files = sorted((ROOT / package).rglob("*.py"))
    if package == "protocol":
        assert files, "protocol/ has no sources"
    bad = [
        f"{f.relative_to(ROOT)}:{line} imports {top}"
        for f in files
        for line, top in repo_imports(f)
        if top not in ALLOWED[package]
    ]
    assert not bad, "dependency rule broken:\n" + "\n".join(bad)


def test_rule_checker_sees_violations(tmp_path):
    bad = tmp_path / "x.py"
    bad.write_text("import gateway.outbox\nfrom firmware import sampler\nimport json\n")
    assert [top for _, top in repo_imports(bad)] == ["gateway", "firmware"]


def test_cpython_side_type_checks():
    # pyright in standard mode over gateway/ and tools/ (pyrightconfig.json; `make typecheck` runs
    # the same). Here so that every landing runs it with the dependency rule; the firmware has its
    # own check against the MicroPython stubs (tests/firmware/test_typecheck.py).
    pyright = pathlib.Path(sys.executable).parent / "pyright"
    p = subprocess.run([str(pyright), "--outputjson", "-p", str(ROOT / "pyrightconfig.json")], capture_output=True,
                       text=True, timeout=600, cwd=str(ROOT))
    report = json.loads(p.stdout)
    errors = [d for d in report["generalDiagnostics"] if d["severity"] == "error"]
    assert not errors, "\n".join(f"{pathlib.Path(e['file']).relative_to(ROOT)}:{e['range']['start']['line'] + 1}: "
                                 f"{e['message']}" for e in errors)
    assert report["summary"]["filesAnalyzed"] > 30  # the scope did not shrink to nothing
    # ... and leaves no module out: only caches and node_modules are excluded
    config = json.loads("".join(line for line in (ROOT / "pyrightconfig.json").read_text().splitlines(True)
                                if not line.lstrip().startswith("//")))
    assert [x for x in config["exclude"] if not x.startswith("**/")] == []


def test_naming_the_sim_board_does_not_load_the_simulator():
    # the tools that only name the sim board (provisioning, flashing, the bundle's manifest) take
    # the name from firmware/sim/__init__.py, not from the simulator's modules (board, world)
    code = ("import sys, tools.upload, tools.nodeconfig, tools.flash, tools.provision; "
            "print(' '.join(sorted(m for m in sys.modules if m.startswith('firmware.sim.'))))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=str(ROOT))
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == []
