"""The landing page: the decision, the reason per detector in words, the history chart; checked
in a real headless Chromium at phone and desktop widths."""

from __future__ import annotations

import re
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from services import require_program
from test_daemon import replay

from neat_exporter.algorithms import available
from neat_exporter.config import config_from_mapping
from neat_exporter.daemon import Daemon
from neat_exporter.explain import Rule, detector_rules
from neat_exporter.landing import landing_page
from neat_exporter.server import make_app
from neat_exporter.snapshot import RECENT_CYCLES, DetectorView
from neat_exporter.web import serve_wsgi

# OTF with a low `otf`: a high overload time fraction, then the load drops below OTF's own
# utilization threshold, so the latest decision is "none" although input > threshold.
OTF_CONFIG = {
    "host": "compute1",
    "interval": 30,
    "source": {"type": "replay"},
    "algorithms": {
        "underload": {"name": "last_n_average_threshold", "params": {"threshold": 0.3, "n": 1}},
        "overload": {"name": "otf", "params": {"otf": 0.1, "threshold": 0.9, "limit": 3}},
    },
}
STEPS = [95, 95, 95, 95, 40, 40]  # % of a core, per VM: two VMs at 95 % are 0.95 of the host
WIDTHS = {"phone": (390, 2400), "desktop": (1280, 1800)}


@pytest.fixture(scope="module")
def otf_daemon() -> Daemon:
    config = config_from_mapping({**OTF_CONFIG, "listen": "127.0.0.1:0"})
    daemon = Daemon(config, replay({"vm-a": STEPS, "vm-<b>": STEPS}), clock=lambda: 1.8e9)
    for _ in STEPS:
        assert daemon.run_cycle()
    return daemon


def test_otf_says_why_a_high_fraction_is_not_an_overload(otf_daemon):
    snapshot = otf_daemon.snapshot
    assert snapshot.decision == "none"
    overload = snapshot.detectors["overload"]
    assert overload.input > overload.threshold  # what made readers think the page was wrong
    rules = detector_rules(otf_daemon.config.algorithms, otf_daemon.config.time_step)
    explanation = rules["overload"].explain(overload, snapshot.utilization)
    assert "only when the current utilization reaches 0.9" in explanation.rule
    held = {c.text: c.held for c in explanation.conditions}
    assert held == {
        "current utilization 0.4 ≥ 0.9": False,
        f"overload time fraction {overload.input:.3g} ≥ 0.1": True,
        "the history holds at least 3 values": True,
    }


def test_every_built_in_detector_is_explained_in_words():
    required = {"mad_threshold": {"threshold": 2.0, "limit": 3}}
    required["iqr_threshold"] = required["mad_threshold"]
    for kind in ("underload", "overload"):
        for name in available(kind)[kind]:
            entry = {"name": name, "params": required.get(name, {})}
            algorithms = config_from_mapping({"algorithms": {kind: entry}}).algorithms
            rule = detector_rules(algorithms, 300)[kind]
            explanation = rule.explain(DetectorView(0.5, 0.4, True, True), 0.5)
            assert "plugin" not in explanation.rule, (kind, name)


def test_a_plugin_detector_is_explained_by_its_input_and_threshold():
    explanation = Rule("overload", "mine").explain(DetectorView(0.7, 0.6, True, True), 0.7)
    assert explanation.rule == "mine is a plugin: it compared 0.7 with 0.6."
    assert [c.held for c in explanation.conditions] == [True]


def test_history_is_bounded_and_draws_every_cycle(otf_daemon):
    snapshot = otf_daemon.snapshot
    assert [c.decision for c in snapshot.recent] == ["none"] * 2 + ["overload"] * 2 + ["none"] * 2
    page = landing_page(snapshot, otf_daemon.config, None, "", 1.8e9)
    assert len(re.findall(r"<circle class='cycle overload'", page)) == 2
    assert "class='threshold-overload'" in page and "class='threshold-underload'" in page
    config = config_from_mapping({**OTF_CONFIG, "algorithms": {}})
    long_run = Daemon(config, replay({"vm-a": [50] * (RECENT_CYCLES + 5)}))
    for _ in range(RECENT_CYCLES + 5):
        long_run.run_cycle()
    assert len(long_run.snapshot.recent) == RECENT_CYCLES


class _Dom(HTMLParser):
    """Element ids, classes and text of a page, enough to assert on."""

    def __init__(self):
        super().__init__()
        self.ids: dict[str, dict[str, str]] = {}
        self.classes: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids[attrs["id"]] = attrs
        self.classes += (attrs.get("class") or "").split()
        if tag == "meta" and attrs.get("http-equiv") == "refresh":
            self.ids["refresh"] = attrs

    def handle_data(self, data):
        self.text.append(data)


# Loads the page in a frame WIDTH pixels wide (headless Chromium's window is at least 500) and
# writes, into its own DOM, how wide the page's content is against the frame: wider means a
# reader must scroll sideways.
LAYOUT_PROBE = """<!doctype html><html><body style='margin:0'>
<iframe id='page' src='/' style='border:0;width:WIDTHpx;height:100vh'></iframe>
<script>
document.getElementById('page').onload = function () {
  var root = this.contentDocument.documentElement;
  document.body.dataset.scrollWidth = root.scrollWidth;
  document.body.dataset.clientWidth = root.clientWidth;
};
</script></body></html>"""


def _with_layout_probe(app):
    def probed(environ, start_response):
        if environ.get("PATH_INFO") != "/layout-probe":
            return app(environ, start_response)
        width = int(environ["QUERY_STRING"].removeprefix("width="))
        start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
        return [LAYOUT_PROBE.replace("WIDTH", str(width)).encode()]

    return probed


def test_page_in_headless_chromium_at_phone_and_desktop_widths(otf_daemon, tmp_path):
    chromium = require_program("chromium")
    app = make_app(otf_daemon.registry, otf_daemon, clock=lambda: 1.8e9 + 4)
    server = serve_wsgi(_with_layout_probe(app), "127.0.0.1:0")

    def browse(width: int, height: int, *action: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [
                chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                f"--user-data-dir={tmp_path / 'profile'}", f"--window-size={width},{height}",
                *action,
            ],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    try:
        url = f"http://127.0.0.1:{server.address[1]}/"
        parsed = _Dom()
        parsed.feed(browse(*WIDTHS["desktop"], "--dump-dom", url).stdout)
        text = " ".join(" ".join(parsed.text).split())
        assert parsed.ids["decision"]["data-decision"] == "none"
        assert "background:#2e7d32" in parsed.ids["decision"]["style"]
        assert "Overload: otf — did not fire" in text
        assert "current utilization 0.4 ≥ 0.9" in text
        assert "cycle 4 s ago · this page refreshes itself every 30 s" in text
        assert parsed.ids["refresh"]["content"] == "30"
        assert "history" in parsed.ids  # the chart
        assert parsed.classes.count("cycle") == len(STEPS)
        assert "vm-&lt;b&gt;" not in text and "vm-<b>" in text  # escaped once, shown as is

        for width_name, (width, height) in WIDTHS.items():
            screenshot = tmp_path / f"landing-{width_name}.png"
            shot = browse(width, height, f"--screenshot={screenshot}", url)
            assert shot.returncode == 0 and _png_size(screenshot) == (width, height), shot.stderr
            print(f"landing page screenshot ({width_name}): {screenshot}")
            probe = browse(width, height, "--dump-dom", f"{url}layout-probe?width={width}")
            widths = re.search(r'data-scroll-width="(\d+)" data-client-width="(\d+)"', probe.stdout)
            assert widths, probe.stdout[-2000:]
            scroll_width, client_width = map(int, widths.groups())
            assert client_width == width
            assert scroll_width <= client_width, f"{width_name}: content is {scroll_width}px wide"
    finally:
        server.shutdown()


def _png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")
