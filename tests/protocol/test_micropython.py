# The protocol tests on the real MicroPython VM (heap: tests/support/mpvm.py, room, not a
# board): every golden vector, CRC/HMAC/COBS, mutated vectors, and the heap cost of building
# one frame in bytes, the budget this test holds (tests/protocol/mp_vectors.py does the work;
# this reads its report).
import re

import pytest

from tests.support import mpvm

pytestmark = pytest.mark.micropython

HEAP_CEILING = 8000  # bytes allocated to encode and MAC one typical frame (measured: ~4.7k on the unix port)


@pytest.fixture(scope="module")
def protocol_mpy(tmp_path_factory):
    # protocol/ as .mpy, the way it goes onto a board (compiling sources would take RAM a board
    # never spends on it)
    out = tmp_path_factory.mktemp("protocol-mpy")
    failures = mpvm.compile_tree(out, ("protocol",))
    assert not failures, failures
    return out


def test_protocol_on_micropython(protocol_mpy):
    proc = mpvm.run("tests/protocol/mp_vectors.py", path=[protocol_mpy], check=False)
    out = proc.stdout
    print(out)
    assert proc.returncode == 0, out + proc.stderr
    values = dict(re.findall(r"^(\w+) (\S+)$", out, re.M))
    assert "FAIL" not in out
    assert int(values["valid"]) >= 10
    assert int(values["invalid"]) >= 30
    assert int(values["streams"]) >= 8
    assert int(values["signed"]) >= 17
    assert values["crc_hmac_cobs"] == "ok"
    assert int(values["fuzzed"]) >= 1000
    assert values["failures"] == "0"
    assert int(values["frame_bytes"]) <= 100
    assert 0 < int(values["heap_encode_mac"]) < HEAP_CEILING
    assert int(values["heap_kept"]) < 400  # the frame itself and little else
