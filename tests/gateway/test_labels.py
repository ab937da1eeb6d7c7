# Rules said once (issue 20 item 3): the words for a frame's flags and quality statuses and
# the readings' titles are gateway/labels.py's, the codes protocol.message's and the SenML
# labels protocol.senml's. These tests read gateway/ and tools/ and fail when a module
# spells one of them again as a literal.
import ast
import pathlib

from gateway import labels
from protocol import message, senml

ROOT = pathlib.Path(__file__).resolve().parents[2]
HOME = {ROOT / "gateway" / "labels.py"}


def _codes(prefix):
    return {v for k, v in vars(message).items() if k.startswith(prefix) and isinstance(v, int)}


def test_every_code_has_one_word():
    assert set(labels.QUALITY) == _codes("Q_")
    assert {bit for bit, _ in labels.FLAGS} == _codes("F_")
    words = list(labels.QUALITY.values())
    assert len(set(words)) == len(words)
    flags = [name for _, name in labels.FLAGS]
    assert len(set(flags)) == len(flags)
    assert set(labels.BAD_QUALITY) <= set(labels.QUALITY) and message.Q_OK not in labels.BAD_QUALITY
    assert set(labels.TITLES) == set(senml.NAMES)
    assert labels.flag_names(message.F_STORM | message.F_BACKLOG) == {
        "storm": True, "alarm": False, "safe_mode": False, "backlog": True}


def _sources():
    for folder in ("gateway", "tools"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path not in HOME:
                yield path, ast.parse(path.read_text(), str(path))


def _mentions(node, word):
    return any(isinstance(n, ast.Name) and word in n.id.lower()
               or isinstance(n, ast.Attribute) and word in n.attr.lower()
               or isinstance(n, ast.Constant) and n.value == word for n in ast.walk(node))


def _int(node):
    return isinstance(node, ast.Constant) and type(node.value) is int


def test_no_module_spells_a_code_or_a_word_again():
    quality_words = set(labels.QUALITY.values()) - {"ok", "range"}  # "ok" and "range" are ordinary words
    titles = set(labels.TITLES.values())
    found = []
    for path, tree in _sources():
        where = path.relative_to(ROOT)
        for node in ast.walk(tree):
            # flags & 1: the bit's name is protocol.message.F_*
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitAnd):
                if ((_int(node.right) and _mentions(node.left, "flags"))
                        or (_int(node.left) and _mentions(node.right, "flags"))):
                    found.append(f"{where}:{node.lineno}: a flag bit as a number")
            # {1: "degraded"}, (4, "safe_mode"): a code's word outside gateway/labels.py
            elif isinstance(node, ast.Constant) and node.value in quality_words | {"safe_mode"}:
                found.append(f"{where}:{node.lineno}: {node.value!r} spelt again (gateway/labels.py)")
            elif isinstance(node, ast.Constant) and node.value in titles:
                found.append(f"{where}:{node.lineno}: the title {node.value!r} spelt again (protocol/senml.py NAMES)")
            # rec.get(2): a SenML label as a number (protocol.senml.N, V, U, T, ...)
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
                  and isinstance(node.func.value, ast.Name) and node.func.value.id in ("rec", "r", "record")
                  and node.args and _int(node.args[0])):
                found.append(f"{where}:{node.lineno}: a SenML label as a number")
    assert not found, "\n".join(found)
