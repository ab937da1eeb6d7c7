# mqtts:// to a mosquitto that requires a client certificate and a password, with a CA
# made by the test. A plain mqtt:// URL or the wrong CA never gets a connection (no
# fallback to plain text), while frames are still stored and ACKed.
import datetime
import ipaddress
import subprocess
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway import config
from gateway.daemon import Gateway
from tests.gateway.conftest import NODES, Subscriber, write_config
from tests.support.broker import Mosquitto, free_port
from tests.support.udpnode import UdpNode

pytestmark = pytest.mark.integration


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject, key, issuer, issuer_key, ca=False, san=None):
    now = datetime.datetime.now(datetime.UTC)
    b = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if san:
        b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def make_pki(d, ca_name="citynode test CA"):
    d.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert(ca_name, ca_key, ca_name, ca_key, ca=True)
    out = {"ca": d / "ca.pem"}
    out["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for who, san in (("server", [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), ("client", None)):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _cert(f"citynode {who}", key, ca_name, ca_key, san=san)
        (d / f"{who}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (d / f"{who}.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                         serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
        out[who] = d / f"{who}.pem"
        out[who + "_key"] = d / f"{who}.key"
    return out


@pytest.fixture
def tls_broker(tmp_path):
    pki = make_pki(tmp_path / "pki")
    passwd = tmp_path / "pki" / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwd), "gw", "s3cret"], check=True, capture_output=True)
    conf = (f"cafile {pki['ca']}\ncertfile {pki['server']}\nkeyfile {pki['server_key']}\n"
            f"require_certificate true\npassword_file {passwd}\nallow_anonymous false\n")
    broker = Mosquitto(tmp_path / "mq", port=free_port(), extra_conf=conf).start()
    yield broker, pki
    broker.stop()


def mqtt_tls_lines(pki, ca=None):
    return (f'ca = "{ca or pki["ca"]}"\ncert = "{pki["client"]}"\nkey = "{pki["client_key"]}"\n'
            'username = "gw"\npassword = "s3cret"\n')


@pytest.mark.parametrize("publisher", ["thread", "process"])
def test_tls_with_client_certificate_and_password(tmp_path, tls_broker, publisher):
    broker, pki = tls_broker
    sub = Subscriber(broker.port, tls={"ca_certs": str(pki["ca"]), "certfile": str(pki["client"]),
                                       "keyfile": str(pki["client_key"])}, username="gw", password="s3cret")
    path = write_config(tmp_path / "gw", f"mqtts://127.0.0.1:{broker.port}",
                        mqtt_extra=mqtt_tls_lines(pki) + f'publisher = "{publisher}"\n')
    gw = Gateway(config.load(path)).start()
    try:
        node = UdpNode("sew-01", NODES["sew-01"], gw.udp_addresses[0])
        assert node.run(30, deadline_s=15)
        assert sub.wait(lambda: len(sub.keys_up()) == 30)
        assert sub.wait(lambda: gw.forwarder.connected, 2)
    finally:
        gw.stop()
        sub.close()


@pytest.mark.parametrize("how", ["plain-url", "wrong-ca"])
def test_no_plain_text_fallback(tmp_path, tls_broker, how):
    broker, pki = tls_broker
    if how == "plain-url":
        path = write_config(tmp_path / "gw", f"mqtt://127.0.0.1:{broker.port}", mqtt_extra='username = "gw"\n'
                            'password = "s3cret"\n', forecast="enabled = false")
    else:
        other = make_pki(tmp_path / "other", ca_name="someone else's CA")
        path = write_config(tmp_path / "gw", f"mqtts://127.0.0.1:{broker.port}",
                            mqtt_extra=mqtt_tls_lines(pki, ca=other["ca"]), forecast="enabled = false")
    gw = Gateway(config.load(path)).start()
    try:
        node = UdpNode("sew-02", NODES["sew-02"], gw.udp_addresses[0])
        assert node.run(10, deadline_s=10)  # still stored durably and ACKed
        time.sleep(1.0)
        assert not gw.forwarder.connected and gw.forwarder.connects == 0
        assert gw.counters()["outbox_depth"] == 10  # the frames, all kept (no forecast rows here)
    finally:
        gw.stop()
