# The interpreter side of the virtual rig. It runs ON MicroPython (the unix port), one
# process per soft boot, with the rig's flash folder as "/". The rig (rig/board.py)
# owns the serial line and the REPL state machine; this process runs the board's code:
#
#   agent.py ROOT BOARD boot   run boot.py and main.py (stdin/stdout are the UART), then serve
#   agent.py ROOT BOARD raw    serve commands only (a soft reset from the raw REPL skips main.py)
#   agent.py ROOT BOARD repl   print the banner and serve (after a program that ignored Ctrl-C)
#
# Commands on stdin: b"E <n>\n" + n bytes (raw REPL: answers out \x04 err \x04) or
# b"S <n>\n" + n bytes (one friendly REPL line: answers its output).
# Control lines for the rig go to stderr: "@@rig running|repl|idle". The rig prints the
# prompts itself, after it has switched state, so a host never types ahead of the rig.
# Paths are jailed: "/" is ROOT, so mpremote's fs commands see a board, not the host.
import builtins
import os
import sys

ROOT = sys.argv[1]
BOARD = sys.argv[2]
MODE = sys.argv[3]
del sys.argv[:]  # a board has no command line
BANNER = os.getenv("RIG_BANNER") or "MicroPython\r\n"

_os = os
_open = open
# MicroPython's own (the CPython stubs pyright checks against lack them)
_ilistdir = getattr(os, "ilistdir")  # noqa: B009
_print_exception = getattr(sys, "print_exception")  # noqa: B009
_cwd = ["/"]


def _control(what) -> None:
    sys.stderr.write("@@rig " + what + "\n")


def _virtual(path):
    # a board path (absolute or relative to the virtual cwd) -> normalised absolute board path
    if not isinstance(path, str):
        path = path.decode()
    if not path.startswith("/"):
        path = _cwd[0].rstrip("/") + "/" + path
    parts = []
    for p in path.split("/"):
        if p == "..":
            if parts:
                parts.pop()
        elif p and p != ".":
            parts.append(p)
    return "/" + "/".join(parts)


def _host(path):
    v = _virtual(path)
    return ROOT if v == "/" else ROOT + v


class JailedOs:
    # os with every path under ROOT; the rest of os passes through
    sep = "/"

    def __getattr__(self, name):
        return getattr(_os, name)

    def getcwd(self):
        return _cwd[0]

    def chdir(self, path) -> None:
        _os.stat(_host(path))
        _cwd[0] = _virtual(path)

    def listdir(self, path: str = ""):
        return _os.listdir(_host(path or "."))

    def ilistdir(self, path: str = ""):
        # the unix port gives (name, type, inode); a board adds the size, which mpremote shows
        base = _host(path or ".")
        for entry in _ilistdir(base):
            size = 0
            if entry[1] == 0x8000:
                size = _os.stat(base + "/" + entry[0])[6]
            yield (entry[0], entry[1], entry[2], size)

    def stat(self, path):
        return _os.stat(_host(path))

    def statvfs(self, path: str = "/"):
        return _os.statvfs(_host(path))

    def mkdir(self, path):
        return _os.mkdir(_host(path))

    def rmdir(self, path):
        return _os.rmdir(_host(path))

    def remove(self, path):
        return _os.remove(_host(path))

    unlink = remove

    def rename(self, old, new):
        return _os.rename(_host(old), _host(new))


def jailed_open(path, *args, **kw):
    if isinstance(path, int):
        return _open(path, *args, **kw)
    return _open(_host(path), *args, **kw)


jail = JailedOs()
# every later `import os` gets the jail (MicroPython's sys.modules takes any object, its stub a module)
sys.modules["os"] = jail  # pyright: ignore[reportArgumentType]
sys.modules["uos"] = jail  # pyright: ignore[reportArgumentType]
builtins.open = jailed_open  # firmware modules that open files get the jail too
# how `citynode flash` tells the virtual rig (which runs any node config on its sim board)
# from a board that runs the MicroPython unix port: a builtin of the rig's own
setattr(builtins, "CITYNODE_RIG", BOARD)  # noqa: B010


def fresh_globals():
    return {"__name__": "__main__"}


def read_exactly(n):
    data = b""
    while len(data) < n:
        chunk = sys.stdin.buffer.read(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def run_file(name, g) -> bool:
    try:
        src = _open(_host(name)).read()
    except OSError:
        return False
    exec(compile(src, name, "exec"), g)
    return True


def serve(g) -> None:
    while True:
        try:
            if not serve_one(g):
                return
        except KeyboardInterrupt:
            _control("idle")  # a Ctrl-C that landed between commands: nothing to interrupt


def serve_one(g) -> bool:
    out = sys.stdout
    header = sys.stdin.buffer.readline()
    if not header:
        return False
    try:
        kind, n = header.split()
        code = read_exactly(int(n)).decode()
    except (EOFError, ValueError):
        return False
    if kind == b"E":
        try:
            exec(code, g)
            out.write("\x04\x04")
        except BaseException as e:  # noqa: B036 - the REPL reports everything, KeyboardInterrupt too
            out.write("\x04")
            _print_exception(e, out)
            out.write("\x04")
    else:
        try:
            exec(compile(code, "<stdin>", "single"), g)
        except BaseException as e:  # noqa: B036
            _print_exception(e, out)
    _control("idle")
    return True


def main() -> None:
    g = fresh_globals()
    if MODE == "boot":
        _control("running")
        try:
            run_file("boot.py", g)
            if not run_file("main.py", g):
                out = "no main.py on the flash\r\n"
                sys.stdout.write(out)
        except BaseException as e:  # noqa: B036 - like a board: print it, then the REPL
            _print_exception(e)
        sys.stdout.write(BANNER)
        _control("repl")
    elif MODE == "repl":
        sys.stdout.write(BANNER)
        _control("repl")
    else:
        _control("idle")
    serve(g)


main()
