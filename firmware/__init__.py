# The firmware's root error: what firmware code raises to its callers derives from it
# (config.ConfigError: a node config that does not pass; docs/architecture.md "Errors").
# One small class, so a board pays next to nothing for it.
class FirmwareError(Exception):
    pass
