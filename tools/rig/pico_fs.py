# The emulated Pico's filesystem from the host, while the board is off: the LittleFS region
# of the rig's flash file (the last 1408 KB of its 2 MB, MICROPY_HW_FLASH_STORAGE_BYTES of
# RPI_PICO), mounted with littlefs-python (littlefs 2.11, the version MicroPython 1.28
# vendors) at the rp2 port's settings (ports/rp2/modules/_boot.py: vfs.VfsLfs2(rp2.Flash(),
# progsize=256); extmod/vfs_lfsx.c: read 32, lookahead 32, cache min(block, 4 * progsize),
# block_cycles 100). What is written here the board reads as if it had written it itself.
#
# preload_backlog() lets a test start the board with an outage's backlog in flash without
# making it frame by frame on the emulated CPU (~16 ms of emulated time and a file commit each):
# the firmware's own Buffer (firmware/buffer.py) writes real frames, signed with the node's key.
import contextlib
import json
import pathlib
from collections.abc import Iterator
from typing import Any, BinaryIO

FLASH_BYTES = 2 * 1024 * 1024
BLOCK = 4096
BLOCKS = 352
OFFSET = FLASH_BYTES - BLOCKS * BLOCK


def littlefs(mount: bool = False) -> Any:
    # a littlefs-python LittleFS at the rp2 port's settings (mount=True: a new, formatted one)
    from littlefs import LittleFS

    return LittleFS(block_size=BLOCK, block_count=BLOCKS, read_size=32, prog_size=256, lookahead_size=32,
                    cache_size=1024, block_cycles=100, mount=mount)


class PicoFs:
    # what firmware code needs of a MicroPython VFS (open and the os functions the buffer
    # uses), on the mounted image; littlefs errors become OSError as on the board
    def __init__(self, fs: Any) -> None:
        self.fs = fs

    def _call(self, fn: str, *args: Any) -> Any:
        from littlefs import LittleFSError

        try:
            return getattr(self.fs, fn)(*args)
        except LittleFSError as e:
            raise OSError(-e.code, str(e)) from None

    def open(self, path: str, mode: str = "r") -> BinaryIO:
        return self._call("open", path, mode)

    def mkdir(self, path: str) -> None:
        self._call("mkdir", path)

    def remove(self, path: str) -> None:
        self._call("remove", path)

    def rename(self, a: str, b: str) -> None:
        self._call("rename", a, b)

    def listdir(self, path: str) -> list[str]:
        return self._call("listdir", path)

    def stat(self, path: str) -> Any:
        return self._call("stat", path)


@contextlib.contextmanager
def mounted(flash_file: str | pathlib.Path) -> Iterator[PicoFs]:
    # the filesystem of a rig's flash file (the board must be off); written back on success
    path = pathlib.Path(flash_file)
    image = bytearray(path.read_bytes())
    if len(image) != FLASH_BYTES:
        raise ValueError("%s: %d bytes, not a Pico's 2 MB flash" % (path, len(image)))
    fs = littlefs()
    fs.context.buffer[:] = image[OFFSET:]
    fs.mount()  # raises on a region without a filesystem: never formatted here
    yield PicoFs(fs)
    fs.unmount()
    image[OFFSET:] = fs.context.buffer
    path.write_bytes(bytes(image))


def preload_backlog(flash_file: str | pathlib.Path, frames: int) -> dict[str, int]:
    # Fill the node's offline buffer on the flash of a provisioned, flashed rig to `frames`
    # frames (what its earlier boots left counts), as an outage leaves it: typical 6-reading
    # frames of its current boot, signed with its key. -> {"live": frames in the buffer,
    # "boot": the boot they carry}
    from firmware import config
    from firmware.buffer import Buffer
    from protocol import message
    from protocol.senml import record

    with mounted(flash_file) as fs:
        with fs.open("/config.json", "r") as f:
            cfg = config.validate(json.loads(f.read()))
        with fs.open("/state.json", "r") as f:
            boot = json.loads(f.read())["boot"]
        buf = Buffer("/buffer.bin", cfg["buffer_slots"], cfg["slot_bytes"], fs.open, fs=fs)
        # after what the board's own run of this boot left unanswered
        seq = 1 + max((buf.seq[i] for i in range(buf.slots) if buf.wc[i] and buf.boot[i] == boot), default=-1)
        while buf.live < frames:
            recs = [record("t", 21.5), record("h", 55.5), record("p", 101325), record("l", 0.25 + seq % 100 / 400),
                    record("d", 2.75), record("b", 3.7)]
            frame = message.encode_data(cfg["key_bytes"], cfg["node"], boot, seq, seq * cfg["interval_s"] * 1000,
                                        recs, cfg["key_version"])
            if buf.put(boot, seq, frame) < 0:
                raise OSError("the buffer took no more frames at %d (flash errors %d)"
                              % (buf.live, buf.counts["flash"]))
            seq += 1
        return {"live": buf.live, "boot": boot}
