# Fixtures shared by every test folder. Folder-specific fixtures live in each folder's conftest.
import pytest

from tests.support.broker import Mosquitto


@pytest.fixture
def mosquitto(tmp_path):
    # A real mosquitto on a free loopback port, stopped after the test.
    broker = Mosquitto(tmp_path / "mosquitto").start()
    yield broker
    broker.stop()
