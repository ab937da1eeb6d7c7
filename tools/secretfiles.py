# Writing files that hold keys: created with mode 0600 from the start (never world-readable,
# not even for a moment) and replaced atomically, so a crash never leaves half a keys file.
import os


def write_private(path, text):
    path = os.fspath(path)
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # O_CREAT honours the umask; an old tmp file keeps its mode
        data = text.encode() if isinstance(text, str) else text
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
