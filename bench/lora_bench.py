# LoRa end to end on two emulated Picos (hil_tests/lora_acceptance.py): a node with a LoRa
# link and a radio modem, each with the emulated SX1262 HAT on the simulated air, the real
# gateway and mosquitto. Prints the frames that reached MQTT (exactly once), the air's counts
# and the radios' (packets sent and heard: the ACKs came back over the air), then an operator's
# compact signed command over the air (`citynode command --wait`: applied); then three node Picos
# colliding on the air, every frame delivered once (a collided frame waits 10 min for its resend).
# About 3 + 15 minutes:
#   .venv/bin/python bench/lora_bench.py
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent

if __name__ == "__main__":
    sys.exit(subprocess.call([sys.executable, "-m", "pytest", "-q", "-s", "-k", "pico",
                              str(ROOT / "hil_tests" / "lora_acceptance.py")], cwd=str(ROOT)))
