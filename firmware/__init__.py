# The firmware's root error: what firmware code raises to its callers derives from it
# (config.ConfigError: a node config that does not pass; docs/architecture.md "Errors").
# One small class, so a board pays next to nothing for it; and the node's config loader.
class FirmwareError(Exception):
    pass


def load_config(root="", board=None):
    # -> the node's config from flash, checked (firmware/config.py; its ConfigError says why
    # not) for the board it names, else for `board`, the one it runs on. A board checks it once,
    # at start, so config.py leaves the heap again after (about 6 KB of its code and tables; the
    # drivers it read SETTINGS from stay: the sensors use them). On CPython it stays (no heap to
    # win; a second import would be a second ConfigError).
    import sys

    from firmware import config

    try:
        return config.load((root + "/" if root else "") + config.CONFIG_NAME, board)
    finally:
        if sys.implementation.name == "micropython":
            del sys.modules["firmware.config"]
            globals().pop("config", None)  # the package's name for it (an import sets it)
