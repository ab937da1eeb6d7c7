# An ingest for cities that run LoRaWAN already: ChirpStack v4's MQTT integration. Each
# uplink event (topic application/<application id>/device/<devEUI>/event/up, JSON: the
# protobuf JSON form of integration.UplinkEvent, `data` = base64 FRMPayload, `rxInfo` with
# each receiving gateway's rssi and snr) carries a citynode frame in the compact LoRa profile
# (SPEC.md 13) as its FRMPayload. LoRaWAN has checked its own MIC and decrypted the payload;
# this link rebuilds our COSE_Mac0 from the packet and the node its address names, and the
# pipeline verifies our MAC on top, end to end from the node. ACKs and commands go back as
# downlinks (application/<id>/device/<devEUI>/command/down, JSON DownlinkCommand: devEui,
# confirmed, fPort, data), also compact, when `downlink = true`.
import base64
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from gateway.config import IngestSettings
from gateway.pipeline import one_line
from gateway.radio import AddressBook
from protocol.cbor import FrameError

log = logging.getLogger("citynode.gateway")


class ChirpStackLink:
    kind = "chirpstack"

    def __init__(self, settings: IngestSettings, submit: Callable[[tuple], Any],
                 reject: Callable[..., Any], keys: Callable[[], Mapping[str, bytes]]) -> None:
        # keys() -> the gateway's current node -> key dict (replaced on SIGHUP)
        self.s = settings
        self.submit = submit
        self.reject = reject
        self.keys = keys
        self.name = f"chirpstack {settings.host}:{settings.broker_port} application {settings.application}"
        self.topic = f"application/{settings.application}/device/+/event/up"
        self.counts = {"events": 0, "frames": 0, "bad_event": 0, "downlinks": 0}
        self.book = AddressBook(keys)
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=settings.client_id or "",
                                  clean_session=True, protocol=mqtt.MQTTv311)
        # paho 2.x re-raises what a callback raises, and that ends the network loop (the link
        # reads nothing more); _on_message refuses such an event itself, this keeps the loop for
        # any other callback (as gateway/mqtt.py)
        self.client.suppress_exceptions = True
        if settings.username:
            self.client.username_pw_set(settings.username, settings.password)
        if settings.tls:
            self.client.tls_set()
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(1, 5)

    def start(self) -> "ChirpStackLink":
        self.client.connect_async(str(self.s.host), self.s.broker_port, keepalive=30)
        self.client.loop_start()
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def describe(self, addr: tuple | None) -> str:
        # addr: (devEui, application id, rssi dBm, snr dB) of the event (hashable: ACKs are grouped by it)
        if not addr:
            return self.name
        return "chirpstack %s rssi %s snr %s" % (addr[0], addr[2], addr[3])

    def reception(self, addr: tuple | None) -> dict[str, float] | None:
        # the best receiving gateway's RSSI (dBm) and SNR (dB), as ChirpStack reported them
        if not addr or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in addr[2:4]):
            return None
        return {"rssi_dbm": addr[2], "snr_db": addr[3]}

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object, rc: Any,
                    props: object = None) -> None:
        if rc == 0:
            client.subscribe(self.topic, qos=1)
            log.info("%s: subscribed to %s", self.name, self.topic)
        else:
            log.warning("%s: connection refused (%s)", self.name, rc)

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        try:
            self._event(msg)
        except Exception as e:  # noqa: BLE001 - one event must not end the link (paho would re-raise it)
            # what no check of an event's shape foresaw (JSON nested deeper than the reader goes:
            # RecursionError): that event refused, counted, one line; the link reads on
            self.counts["bad_event"] += 1
            self.reject("payload", self.name, f"cannot read the event: {one_line(e)}")

    def _event(self, msg: mqtt.MQTTMessage) -> None:
        received = time.time()
        self.counts["events"] += 1
        try:
            ev = json.loads(msg.payload)
            air = base64.b64decode(ev["data"], validate=True)
            rx = max(ev.get("rxInfo") or [{}], key=_rssi_of)  # the best reception
            dev_eui = (ev.get("deviceInfo") or {}).get("devEui") or msg.topic.split("/")[3]
            # the address names the downlink topic, and the pipeline groups ACKs by it (hashable):
            # an EUI-64, and numbers or nothing for the reception
            addr = (dev_eui, msg.topic.split("/")[1], _number(rx.get("rssi")), _number(rx.get("snr")))
        except (ValueError, KeyError, TypeError, IndexError, AttributeError):
            self.counts["bad_event"] += 1
            self.reject("payload", self.name, "not a ChirpStack uplink event with base64 data")
            return
        if not _is_eui64(dev_eui):
            self.counts["bad_event"] += 1
            self.reject("payload", self.name, f"devEui {str(dev_eui)[:40]!r} is not an EUI-64 (16 hex digits)")
            return
        try:
            frame = self.book.frame(air)
        except FrameError as e:
            self.reject(e.reason, self.describe(addr), str(e))
            return
        self.counts["frames"] += 1
        self.submit((frame, self, addr, received))

    def send(self, addr: tuple | None, msg_bytes: bytes) -> bool:
        # an ACK or command for the node behind devEui, as a ChirpStack downlink (compact when it can be)
        if not self.s.downlink or not addr:
            return False
        try:
            data = self.book.downlink(msg_bytes)
        except (FrameError, KeyError):
            return False
        topic = f"application/{addr[1]}/device/{addr[0]}/command/down"
        body = {"devEui": addr[0], "confirmed": False, "fPort": self.s.fport,
                "data": base64.b64encode(data).decode()}
        info = self.client.publish(topic, json.dumps(body), qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            return False
        self.counts["downlinks"] += 1
        return True



def _rssi_of(rx: Mapping[str, Any]) -> float:
    # the order of the gateways that heard an uplink: the strongest first; one without a number last
    v = _number(rx.get("rssi"))
    return -999.0 if v is None else v


def _number(v: object) -> int | float | None:
    # a reception field (rssi dBm, snr dB) as ChirpStack sends it, a number; None for anything else
    return v if isinstance(v, int | float) and not isinstance(v, bool) else None


def _is_eui64(v: object) -> bool:
    # ChirpStack names a device by its EUI-64: 16 hex digits (protobuf JSON: a string)
    return isinstance(v, str) and len(v) == 16 and all(c in "0123456789abcdefABCDEF" for c in v)
