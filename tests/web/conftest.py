import pytest

from gateway.web.history import History
from tests.web.site import Site


@pytest.fixture
def live_site(tmp_path):
    site = Site(tmp_path, ["sew-01", "sew-02", "sew-03"], hostile_firmware="sew-02")
    yield site
    site.close()


@pytest.fixture
def forecast_site(tmp_path):
    site = Site(tmp_path, ["sew-05"], rising=("sew-05",), stale_after_s=600)
    yield site
    site.close()


@pytest.fixture
def history(tmp_path):
    h = History(tmp_path / "history.sqlite", flush_s=0.1).start()
    yield h
    h.close()
