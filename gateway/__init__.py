# citynode gateway: serial/UDP ingest -> verify -> dedup -> durable outbox -> MQTT.
