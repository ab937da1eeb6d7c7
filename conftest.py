# With pytest-xdist (`make test` runs two workers): everything that boots the emulated Pico goes
# to one worker, in one group. Each emulated Pico takes a whole core, and its session fixture
# (the flashed template every Pico test boots from) is then made once; the other tests share
# the second core with it.
import pytest

PICO_MODULES = ("test_pico_fs.py", "test_pico_rig.py", "test_reflash_pico.py")


def pytest_collection_modifyitems(config, items):
    if not config.pluginmanager.hasplugin("xdist"):
        return
    for item in items:
        path = item.path
        if item.get_closest_marker("pico") or path.name in PICO_MODULES or "hil_tests" in path.parts:
            item.add_marker(pytest.mark.xdist_group("pico"))
