# citynode gateway: serial/UDP ingest -> verify -> dedup -> durable outbox -> MQTT.
__version__ = "0.1.0"


class GatewayError(Exception):
    # The gateway's root error: every error class of gateway/ derives from it (docs/architecture.md
    # "Errors"); `citynode` maps it to exit 1 (the gateway could not do it)
    pass


class InputError(GatewayError, ValueError):
    # what the gateway was given is wrong: its config, a keys file, a command for a node (exit 2)
    pass


class InstallError(GatewayError):
    # the installed software does not fit this release (a dependency of a version it was not
    # written for): exit 78 (EX_CONFIG), which its systemd units do not restart on; installing
    # what pyproject.toml pins fixes it, a restart never does
    pass
