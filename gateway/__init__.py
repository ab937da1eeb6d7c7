# citynode gateway: serial/UDP ingest -> verify -> dedup -> durable outbox -> MQTT.
__version__ = "0.1.0"
