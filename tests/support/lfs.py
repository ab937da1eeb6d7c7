# A board's flash filesystem on the host: real LittleFS (PyPI littlefs-python, littlefs 2.11,
# the version MicroPython 1.28 vendors in lib/littlefs) on an in-memory NOR chip that counts
# sector erases and can lose power before any write.
#
# Geometry and settings as the ports mount it:
# - RP2 (ports/rp2/modules/_boot.py: vfs.VfsLfs2(rp2.Flash(), progsize=256)): 4096-byte
#   sectors, 352 of them on a Pico (1408 KB of MICROPY_HW_FLASH_STORAGE_BYTES), read 32;
# - ESP32 (ports/esp32/modules/inisetup.py: vfs.VfsLfs2(bdev) with the defaults of
#   extmod/vfs_lfs.c: readsize 32, progsize 32, lookahead 32).
# extmod/vfs_lfsx.c init_config sets block_cycles 100 and cache_size
# min(block_size, 4 * max(read, prog)), and leaves inline_max 0 (littlefs picks
# min(cache_size, attr_max, block_size / 8)).
# The file object follows extmod/vfs_lfsx_file.c: write() is lfs_file_write, flush() is
# lfs_file_sync, close() is lfs_file_close. Not modelled: the 8-byte mtime attribute
# MicroPython adds to each sync's commit (it shares the commit's program unit).
import errno

from littlefs import LittleFS, LittleFSError, UserContext, lfs

RP2 = {"block_size": 4096, "block_count": 352, "read_size": 32, "prog_size": 256, "lookahead_size": 32}
ESP32 = {"block_size": 4096, "block_count": 512, "read_size": 32, "prog_size": 32, "lookahead_size": 32}


class PowerCut(BaseException):
    # the supply died before this write reached the chip
    pass


class NorFlash(UserContext):
    # erased bytes are 0xff; counts erases and programs; cut_at = writes (erases and
    # programs) allowed before the power goes, the image as it was then kept in `image`
    def __init__(self, geometry):
        self.block_size = geometry["block_size"]
        super().__init__(buffsize=self.block_size * geometry["block_count"])
        self.erases = 0
        self.per_block = {}  # block -> erases (wear levelling)
        self.progs = 0
        self.writes = 0
        self.cut_at = None
        self.torn = False  # a cut program leaves its first half written
        self.image = None  # the chip's content when the power went
        self.dead = False

    def _cut(self, block, off, data):
        # -> True when this write does not happen (the power is gone). littlefs-python
        # swallows exceptions raised in these callbacks, so a dead chip answers every later
        # write with LFS_ERR_IO and the test mounts `image` on a fresh chip
        if self.dead:
            return True
        if self.cut_at is not None and self.writes >= self.cut_at:
            if self.torn and data is not None and len(data) > 1:
                start = block * self.block_size + off
                self.buffer[start : start + len(data) // 2] = data[: len(data) // 2]
            self.image = bytes(self.buffer)
            self.dead = True
            return True
        self.writes += 1
        return False

    def prog(self, cfg, block, off, data):
        if self._cut(block, off, data):
            return -5
        self.progs += 1
        return super().prog(cfg, block, off, data)

    def erase(self, cfg, block):
        if self._cut(block, 0, None):
            return -5
        self.erases += 1
        self.per_block[block] = self.per_block.get(block, 0) + 1
        return super().erase(cfg, block)

    def revived(self):
        # the chip after the power came back: the image as it was at the cut
        chip = NorFlash.__new__(NorFlash)
        chip.__dict__.update(self.__dict__)
        chip.buffer = bytearray(self.image if self.image is not None else self.buffer)
        chip.dead = False
        chip.cut_at = None
        chip.image = None
        return chip


def settings(geometry):
    cache = min(geometry["block_size"], 4 * max(geometry["read_size"], geometry["prog_size"]))
    return dict(geometry, cache_size=cache, block_cycles=100)


def mount(chip, geometry=RP2, format=False):
    # format=False: a chip that does not mount is an error, never silently wiped
    fs = LittleFS(context=chip, mount=False, **settings(geometry))
    if format:
        fs.format()
    fs.mount()
    return fs


def _oserror(e):
    # littlefs error codes are negative errno values, as MicroPython raises them
    return OSError(-e.code if isinstance(getattr(e, "code", None), int) else errno.EIO, str(e))


class LfsFile:
    def __init__(self, fs, fh):
        self._fs = fs
        self._fh = fh

    def write(self, data):
        try:
            return lfs.file_write(self._fs, self._fh, data.encode() if isinstance(data, str) else bytes(data))
        except LittleFSError as e:
            raise _oserror(e) from e

    def readinto(self, buf):
        data = lfs.file_read(self._fs, self._fh, len(buf))
        buf[: len(data)] = data
        return len(data)

    def read(self, n=-1):
        if n < 0:
            n = lfs.file_size(self._fs, self._fh)
        return bytes(lfs.file_read(self._fs, self._fh, n))

    def seek(self, pos, whence=0):
        return lfs.file_seek(self._fs, self._fh, pos, whence)

    def flush(self):
        try:
            lfs.file_sync(self._fs, self._fh)
        except LittleFSError as e:
            raise _oserror(e) from e

    def close(self):
        if self._fh is not None:
            fh, self._fh = self._fh, None
            try:
                lfs.file_close(self._fs, fh)
            except LittleFSError as e:
                raise _oserror(e) from e

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


_MODES = {"rb": "r", "r": "r", "r+b": "r+", "wb": "w", "w": "w", "w+b": "w+", "ab": "a"}


class LfsVolume:
    # what firmware code sees of a MicroPython VFS: open() and the os functions the buffer uses
    def __init__(self, chip, geometry=RP2, format=False):
        self.chip = chip
        self.fs = mount(chip, geometry, format)

    def open(self, path, mode="r"):
        flags = {"r": lfs.LFSFileFlag.rdonly,
                 "r+": lfs.LFSFileFlag.rdwr,
                 "w": lfs.LFSFileFlag.wronly | lfs.LFSFileFlag.creat | lfs.LFSFileFlag.trunc,
                 "w+": lfs.LFSFileFlag.rdwr | lfs.LFSFileFlag.creat | lfs.LFSFileFlag.trunc,
                 "a": lfs.LFSFileFlag.wronly | lfs.LFSFileFlag.creat | lfs.LFSFileFlag.append}[_MODES[mode]]
        try:
            fh = lfs.file_open(self.fs.fs, path, flags)
        except LittleFSError as e:
            raise _oserror(e) from e
        return LfsFile(self.fs.fs, fh)

    def listdir(self, path):
        try:
            return self.fs.listdir(path)
        except LittleFSError as e:
            raise _oserror(e) from e

    def ilistdir(self, path):
        # (name, type, inode, size) like MicroPython's os.ilistdir on a VfsLfs2
        for st in self.fs.scandir(path):
            yield (st.name, 0x4000 if st.type == 2 else 0x8000, 0, st.size)

    def remove(self, path):
        try:
            self.fs.remove(path)
        except LittleFSError as e:
            raise _oserror(e) from e

    def mkdir(self, path):
        try:
            self.fs.mkdir(path)
        except LittleFSError as e:
            raise _oserror(e) from e

    def rename(self, a, b):
        try:
            self.fs.rename(a, b)
        except LittleFSError as e:
            raise _oserror(e) from e

    def statvfs(self, path="/"):
        # as extmod/vfs_lfsx.c statvfs: f_bfree = block_count - blocks a traversal finds in use
        try:
            used = lfs.fs_size(self.fs.fs)
        except LittleFSError as e:
            raise _oserror(e) from e
        bs = self.chip.block_size
        free = self.fs.cfg.block_count - used
        return (bs, bs, self.fs.cfg.block_count, free, free, 0, 0, 0, 0, 255)

    def stat(self, path):
        try:
            st = self.fs.stat(path)
        except LittleFSError as e:
            raise _oserror(e) from e
        return (0x4000 if st.type == 2 else 0x8000, 0, 0, 0, 0, 0, st.size, 0, 0, 0)
