# The citynode command: every technician subcommand of the registry is there and loads.
import subprocess
import sys

from tools import cli


def test_every_subcommand_is_listed():
    proc = subprocess.run([sys.executable, "-m", "tools.cli", "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    for name in ("decode", "provision", "flash", "monitor", "demo", "bench", "rig", "gateway", "simulate"):
        assert f"    {name}" in proc.stdout, name


def test_bench_names_are_checked(capsys):
    # citynode bench runs the scripts in bench/; an unknown name is one line, exit 2
    assert cli.main(["bench", "nosuch"]) == 2
    assert "no benchmark 'nosuch'; choose from protocol, firmware, gateway" in capsys.readouterr().err


def test_version():
    from gateway import __version__

    proc = subprocess.run([sys.executable, "-m", "tools.cli", "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == f"citynode {__version__}", proc


def test_the_license_is_an_spdx_string_so_installs_print_no_deprecation():
    # PEP 639: `license = { text = ... }` makes setuptools >= 77 warn on every install (measured:
    # SetuptoolsDeprecationWarning before, none after); an SPDX string needs setuptools >= 77
    import pathlib
    import re
    import tomllib

    data = tomllib.loads((pathlib.Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    assert data["project"]["license"] == "MIT"
    req = [r for r in data["build-system"]["requires"] if r.startswith("setuptools")]
    assert req and int(re.search(r">=(\d+)", req[0]).group(1)) >= 77
