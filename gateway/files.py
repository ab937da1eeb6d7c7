# Writing files atomically, the keys file of `citynode provision` and the gateway's
# data_dir/nodes.json: created with mode 0600 from the start (never world-readable,
# not even for a moment) and replaced atomically (a temporary file in the same folder,
# fsynced, renamed over the old one, the folder fsynced), so a crash or a full disk never
# leaves half a keys file, and a failed write leaves no temporary file behind.
import os
import tempfile


def write_private(path: str | os.PathLike[str], text: str | bytes) -> None:
    path = os.fspath(path)
    folder = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        try:
            os.fchmod(fd, 0o600)  # mkstemp makes it 0600 already; said here because it matters
            data = text.encode() if isinstance(text, str) else text
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    dfd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dfd)  # the rename itself survives a power cut
    finally:
        os.close(dfd)
