# `citynode demo` prints its status page URL, and that page shows the demo's nodes live.
import json
import re
import subprocess
import sys
import time
import urllib.request

from tests.web.test_api import get


def test_demo_serves_its_status_page():
    proc = subprocess.Popen([sys.executable, "-m", "tools.cli", "demo", "--duration", "12", "--nodes", "2",
                             "--web", "127.0.0.1:0"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        url = None
        deadline = time.monotonic() + 30
        while url is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            m = re.search(r"status page (http://127\.0\.0\.1:\d+/)", line)
            url = m and m.group(1)
        assert url, "demo did not print its status page URL"
        accepted = {}
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            status = json.loads(urllib.request.urlopen(url + "api/status", timeout=5).read())
            accepted = {n["id"]: n["accepted"] for n in status["nodes"]}
            if len(accepted) == 2 and min(accepted.values()) >= 3:
                break
            time.sleep(0.5)
        assert sorted(accepted) == ["sew-01", "sew-02"] and min(accepted.values()) >= 3, accepted
        code, _, page = get(url)
        assert code == 200 and b"citynode gateway" in page
        history = json.loads(get(url + "api/nodes/sew-01/history")[2])
        assert len(history["series"]["l"]) >= 3
    finally:
        proc.wait(40)
    assert proc.returncode == 0
