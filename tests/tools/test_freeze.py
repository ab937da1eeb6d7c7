# The frozen-build manifest (tools/freeze.py) holds exactly what `citynode flash` uploads to
# that board, as packages MicroPython's manifest tool takes (tools/manifestfile.py package()).
import ast
import pathlib

import pytest

from tools.freeze import frozen_manifest, main
from tools.upload import ROOT, manifest


def packages(text):
    # the package() calls of a manifest -> {package: [files]}, checked for their base path
    out = {}
    for node in ast.parse(text).body:
        call = node.value
        assert isinstance(call, ast.Call) and call.func.id in ("include", "package"), ast.dump(node)
        if call.func.id == "package":
            kw = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
            assert kw["base_path"] == ROOT.as_posix() and kw["opt"] == 3
            out[call.args[0].value] = kw["files"]
    return out


@pytest.mark.parametrize("board", ["rp2", "esp32"])
def test_the_manifest_freezes_the_boards_device_manifest(board):
    text = frozen_manifest(board)
    assert 'include("$(PORT_DIR)/boards/manifest.py")' in text  # the port's own modules stay
    got = sorted(f"{pkg}/{f}" for pkg, files in packages(text).items() for f in files)
    assert got == manifest(board)
    assert all((ROOT / rel).is_file() for rel in got)
    assert not any("/sim/" in rel for rel in got)


def test_cli_writes_it_and_refuses_an_unknown_board(tmp_path, capsys):
    out = tmp_path / "build" / "manifest.py"
    assert main(["--board", "rp2", "--out", str(out)]) == 0
    assert pathlib.Path(out).read_text() == frozen_manifest("rp2")
    assert main(["--board", "sim"]) == 2
    assert capsys.readouterr().err.startswith("freeze: no frozen build for board 'sim'")
