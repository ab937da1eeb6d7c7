# The SenML name rule (RFC 8428 section 4.5.1) and the node id rule built on it, against
# the RFC's own regular expression.
import re

from hypothesis import given
from hypothesis import strategies as st

from protocol import message, names
from tests.protocol.strategies import nodes

RFC_NAME = re.compile(r"[A-Za-z0-9][-:./A-Za-z0-9_]*")  # RFC 8428 4.5.1, matched whole
ALPHABET = "aZ09-:./_ @(#+é\x00\t" + "".join(map(chr, range(0x20, 0x7F)))


@given(st.text(ALPHABET, max_size=40))
def test_valid_name_is_the_rfc_regex(s):
    assert names.valid_name(s) == bool(RFC_NAME.fullmatch(s))


@given(st.text(ALPHABET, max_size=40))
def test_valid_part_is_what_may_follow_a_valid_prefix(s):
    assert names.valid_part(s) == names.valid_name("x" + s)


@given(st.text(ALPHABET, max_size=40))
def test_a_node_id_is_a_senml_name_without_slash_of_at_most_32(s):
    expected = bool(RFC_NAME.fullmatch(s)) and "/" not in s and len(s) <= message.NODE_ID_MAX
    assert message.check_node_id(s) == expected
    if expected:
        assert names.valid_name(s + ":")  # the base name "<id>:" the gateway writes


@given(nodes)
def test_the_test_strategy_makes_valid_ids(node):
    assert message.check_node_id(node)


def test_examples_from_the_field():
    for bad in ("Sew(8)", "_probe", "sew@07", "temp 1", "Wärme", "a/b", "a+b", "#", "", "-x", ".x", ":x",
                "x" * 33, None, 7, b"sew-07"):
        assert not message.check_node_id(bad), bad
    for good in ("sew-07", "basin-north-east-00000000000001", "7", "a:b.c_d-e", "x" * 32):
        assert message.check_node_id(good), good
    assert not names.valid_name("temp 1") and not names.valid_part("temp 1")
    assert not names.valid_part("Wärme") and names.valid_part("") and names.valid_part("_x")
