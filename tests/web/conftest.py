import pytest

from tests.web.site import Site


@pytest.fixture
def live_site(tmp_path):
    site = Site(tmp_path, ["sew-01", "sew-02", "sew-03"], hostile_firmware="sew-02")
    yield site
    site.close()
