# citynode wire protocol v1: SenML in CBOR, COSE_Mac0 (HMAC 256/64), COBS+CRC framing.
# Normative text: protocol/SPEC.md. Imports nothing from the rest of the repository.
from protocol.cbor import FrameError  # noqa: F401
from protocol.message import PROTOCOL_VERSION  # noqa: F401
