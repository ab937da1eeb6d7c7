import pytest

from tests.web.site import HOSTILE_ID, Site


@pytest.fixture
def live_site(tmp_path):
    site = Site(tmp_path, ["sew-01", "sew-02", HOSTILE_ID])
    yield site
    site.close()
