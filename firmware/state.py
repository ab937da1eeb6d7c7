# Boot state that must survive resets and power cuts: the boot counter (the gateway
# rejects a boot it has seen before as a replay), boots in a row that never became
# healthy (-> safe mode), why we reset ourselves, and what a deep sleep must resume.
# Written to a temporary file and renamed over the old one: a power cut leaves the old
# state or the new one, never half a file (rename is atomic on littlefs and POSIX).
import json
import os


class State:
    def __init__(self, path, opener=open, fs=None):
        # fs: the os functions used (rename, remove); default os
        self.path = path
        self._open = opener
        self._fs = fs or os
        self.data = {"boot": 0, "unhealthy": 0}

    def load(self):
        for p in (self.path, self.path + ".tmp"):
            try:
                with self._open(p, "r") as f:
                    d = json.loads(f.read())
                if isinstance(d, dict) and isinstance(d.get("boot"), int):
                    self.data = d
                    return d
            except (OSError, ValueError):
                pass
        return self.data

    def save(self, **changes):
        d = self.data
        for k in changes:
            if changes[k] is None:
                d.pop(k, None)
            else:
                d[k] = changes[k]
        tmp = self.path + ".tmp"
        with self._open(tmp, "w") as f:
            f.write(json.dumps(d))
        fs = self._fs
        try:
            fs.rename(tmp, self.path)
        except OSError:  # littlefs on some ports refuses to rename over a file
            fs.remove(self.path)
            fs.rename(tmp, self.path)
