# A stand-in for a FROST-Server (OGC SensorThings v1.0/v1.1), for the tests: FROST needs Maven
# and PostgreSQL, which this machine lacks. It applies the checks read in FROST-Server's source
# (FraunhoferIOSB/FROST-Server, read to learn, nothing copied):
#   - FROST-Server.Core .../service/Service.java handlePost: a path that does not parse or names
#     no existing entity -> 404; a body that does not parse or misses a required property -> 400;
#     created -> 201 with a Location header.
#   - .../mqtt/MqttManager.java handleEntityCreateEvent: an MQTT message to FROST's broker is the
#     same create request, its topic (version first, "v1.1/Datastreams(7)/Observations") the
#     URL path; a failure is only logged (the publisher got its PUBACK already).
#   - Plugins/CoreModel PluginCoreModel: Observation properties phenomenonTime (TimeValue: an
#     instant or an interval; PhenomenonTimeValidator sets "now" when it is missing), resultTime
#     (instant or null), result (required, may be null), resultQuality (any JSON), parameters
#     (a map), validTime (interval); Datastream/FeatureOfInterest links. Unknown properties are
#     refused (CustomEntityDeserializer with FAIL_ON_UNKNOWN_PROPERTIES).
#   - .../model/ext/TimeInstant.java: ISO 8601 extended (or basic) date-time WITH an offset.
#   - Plugins/CoreModel TableImpObservations: no FeatureOfInterest given and the Datastream's
#     Thing has no Location to generate one from -> "No FeatureOfInterest provided, and none can
#     be generated." (400).
#   - Entity ids: LONG by default (Datastreams(7)), or strings (Datastreams('b3a1')), '' inside.
#   - persistence.idGenerationMode (FROST docs, "Persistence settings"): ServerGeneratedOnly (the
#     default) ignores a client's @iot.id; ServerAndClientGenerated and ClientGeneratedOnly keep
#     it, and a second create with an id that exists fails in the database's primary key:
#     500 {"message": "Failed to store data."} (FROST-Server issues #106, #2082). GET of
#     Observations(id): 200 with the entity, 404 "Nothing found." when there is none.
import datetime
import json
import re
import ssl
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import paho.mqtt.client as mqtt

FIELDS = {"phenomenonTime", "resultTime", "result", "resultQuality", "parameters", "validTime", "Datastream",
          "FeatureOfInterest", "@iot.id", "id"}
INSTANT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2})")
PATH = re.compile(r"(v1\.[01])/Datastreams\((.*)\)/Observations")


def _instant(text):
    if not isinstance(text, str) or not INSTANT.fullmatch(text):
        return False
    try:
        datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def _interval(text):
    return isinstance(text, str) and text.count("/") == 1 and all(_instant(p) for p in text.split("/"))


class Frost:
    # datastreams: {id: has_location}; id_type "long" or "string"
    def __init__(self, datastreams, id_type="long", id_generation="ServerGeneratedOnly"):
        self.datastreams = datastreams
        self.id_type = id_type
        self.id_generation = id_generation
        self.ids = {}  # observation id -> index in created
        self.created = []  # (datastream id, observation)
        self.refused = []  # (status, message, path, body)
        self.lock = threading.Lock()
        self.fail_with = None  # an HTTP status to answer every request with (a server in trouble)
        self.drop_answers = 0  # creates whose answer is lost (the connection closes first)

    def _key(self, text):
        if self.id_type == "long":
            return int(text) if re.fullmatch(r"-?\d+", text) else None
        if len(text) >= 2 and text[0] == text[-1] == "'":
            inner = text[1:-1]
            if "'" in inner.replace("''", ""):
                return None
            return inner.replace("''", "'")
        return None

    def create(self, path, body):
        # -> (status, message); the checks of a FROST create, in FROST's order
        m = PATH.fullmatch(path)
        key = self._key(m.group(2)) if m else None
        if key is None:
            return self._refuse(404, f"path does not parse: {path}", path, body)
        if key not in self.datastreams:
            return self._refuse(404, "Nothing found.", path, body)
        try:
            obs = json.loads(body)
        except (ValueError, UnicodeDecodeError) as e:
            return self._refuse(400, f"not JSON: {e}", path, body)
        if not isinstance(obs, dict):
            return self._refuse(400, "an entity must be a JSON object", path, body)
        unknown = set(obs) - FIELDS
        if unknown:
            return self._refuse(400, f"Unknown field: {sorted(unknown)[0]} on Observation", path, body)
        if "result" not in obs:
            return self._refuse(400, "missing required property result", path, body)
        pt = obs.get("phenomenonTime")
        if pt is not None and not (_instant(pt) or _interval(pt)):
            return self._refuse(400, f"Failed to parse TimeValue {pt!r}", path, body)
        rt = obs.get("resultTime")
        if rt is not None and not _instant(rt):
            return self._refuse(400, f"Failed to parse TimeInstant {rt!r}", path, body)
        vt = obs.get("validTime")
        if vt is not None and not _interval(vt):
            return self._refuse(400, f"Failed to parse TimeInterval {vt!r}", path, body)
        if obs.get("parameters") is not None and not isinstance(obs["parameters"], dict):
            return self._refuse(400, "parameters must be an object", path, body)
        if "FeatureOfInterest" not in obs and not self.datastreams[key]:
            return self._refuse(400, "No FeatureOfInterest provided, and none can be generated.", path, body)
        client_id = obs.get("@iot.id") if self.id_generation != "ServerGeneratedOnly" else None
        if self.id_generation == "ClientGeneratedOnly" and client_id is None:
            return self._refuse(400, "No id provided", path, body)
        if client_id is not None and not isinstance(client_id, int if self.id_type == "long" else str):
            return self._refuse(400, f"Failed to parse id {client_id!r}", path, body)
        with self.lock:
            if client_id is not None and client_id in self.ids:
                self.refused.append((500, "Failed to store data.", path, body))
                return 500, "Failed to store data."
            self.created.append((key, obs))
            n = client_id if client_id is not None else len(self.created)
            self.ids[n] = len(self.created) - 1
        return 201, f"Observations({n if self.id_type == 'long' else repr(n)})"

    def get_observation(self, text):
        # GET <root>/v1.x/Observations(<id>) -> (status, entity or message)
        key = self._key(text)
        with self.lock:
            i = self.ids.get(key)
            return (200, dict(self.created[i][1], **{"@iot.id": key})) if i is not None else (404, "Nothing found.")

    def _refuse(self, status, message, path, body):
        with self.lock:
            self.refused.append((status, message, path, body))
        return status, message

    # ------------------------------------------------------------ HTTP

    def serve_http(self, root="/FROST-Server", port=0, tls=None):
        # tls: (server certificate file, key file) for https
        frost = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.server.requests.append((self.path, self.headers.get("Authorization")))
                if frost.fail_with:
                    return self._answer(frost.fail_with, "try again later")
                if not self.path.startswith(root + "/"):
                    return self._answer(404, "Nothing found.")
                if self.headers.get("Content-Type", "").split(";")[0] != "application/json":
                    return self._answer(400, "Content-Type must be application/json")
                status, message = frost.create(urllib.parse.unquote(self.path[len(root) + 1:]), body)
                if status == 201 and frost.drop_answers > 0:  # created, but the answer never arrives
                    frost.drop_answers -= 1
                    self.close_connection = True
                    return
                location = f"http://127.0.0.1:{self.server.server_port}{root}/v1.1/{message}" if status == 201 else None
                self._answer(status, message, location)

            def do_GET(self):
                self.server.requests.append((self.path, self.headers.get("Authorization")))
                m = re.fullmatch(re.escape(root) + r"/v1\.[01]/Observations\((.*)\)", urllib.parse.unquote(self.path))
                if not m:
                    return self._answer(404, "Nothing found.")
                status, entity = frost.get_observation(m.group(1))
                if status != 200:
                    return self._answer(status, entity)
                data = json.dumps(entity).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _answer(self, status, message, location=None):
                data = json.dumps({"code": status, "type": "error", "message": message}).encode() \
                    if status != 201 else b""
                self.send_response(status)
                if location:
                    self.send_header("Location", location)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*tls)
            server.socket = ctx.wrap_socket(server.socket, server_side=True)
        server.requests = []
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server

    # ------------------------------------------------------------ MQTT

    def listen_mqtt(self, port, tls=None, username=None, password=None):
        # FROST's embedded broker hands every publish to the create path; here a client on
        # a second mosquitto does, and records what FROST would have logged as failures.
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"frost-{port}", protocol=mqtt.MQTTv311)
        subscribed = threading.Event()
        c.on_connect = lambda c, u, f, rc, p: c.subscribe("#", qos=1)
        c.on_subscribe = lambda c, u, mid, rcs, p: subscribed.set()
        c.on_message = lambda c, u, msg: self.create(msg.topic, msg.payload)
        if tls:
            c.tls_set(**tls)
        if username:
            c.username_pw_set(username, password)
        c.connect("127.0.0.1", port, keepalive=10)
        c.loop_start()
        if not subscribed.wait(10):
            raise RuntimeError("the FROST stand-in did not subscribe")
        return c
