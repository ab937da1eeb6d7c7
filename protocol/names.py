# SenML name rule (RFC 8428 section 4.5.1), shared by every place that accepts a node
# id or a record name: provision, node config, the gateway's keys file and config, and
# the gateway's check of each frame. bn + n must match
#     ^[A-Za-z0-9][-:./A-Za-z0-9_]*$
# so a node id (the base name is "<id>:", checked by protocol.message.check_node_id,
# which also forbids "/" because the id is one MQTT topic level) is a valid name, and a record
# name must consist of name characters only. Written without `re` so that it runs
# unchanged on MicroPython (whose `re` lacks some classes) and allocates nothing.

_REST = "-:./_"


def _name_char(c):
    return ("a" <= c <= "z") or ("A" <= c <= "Z") or ("0" <= c <= "9") or c in _REST


def valid_name(s):
    """True if `s` is a valid SenML name (bn + n) by RFC 8428 section 4.5.1."""
    if not isinstance(s, str) or not s:
        return False
    c = s[0]
    if not (("a" <= c <= "z") or ("A" <= c <= "Z") or ("0" <= c <= "9")):
        return False
    for c in s:
        if not _name_char(c):
            return False
    return True


def valid_part(s):
    """True if `s` may follow a valid prefix (a record name appended to a base name)."""
    if not isinstance(s, str):
        return False
    for c in s:
        if not _name_char(c):
            return False
    return True


NODE_ID_RULE = ("1..32 characters: a letter or digit, then letters, digits and - : . _ "
                "(a SenML name, RFC 8428 4.5.1, that is also one MQTT topic level)")
