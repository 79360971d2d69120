"""/metrics with the snapshot's series encoded by the cycle: the same content as
prometheus_client's own encoders, in both formats, plain or gzip, always-current counters, and no
encoding of the snapshot at scrape time."""

from __future__ import annotations

import gzip
import math
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om
from prometheus_client.parser import text_string_to_metric_families as parse_text
from served import served

from neat_exporter import exposition
from neat_exporter.config import config_from_mapping
from neat_exporter.daemon import Daemon
from neat_exporter.exposition import Exposition, GaugeRows, MetricsApp, _Families
from neat_exporter.metrics import snapshot_families
from neat_exporter.server import make_app
from neat_exporter.sources import open_source

OPENMETRICS = "application/openmetrics-text;version=1.0.0"
FORMATS = [
    ("text/plain", parse_text, generate_latest),
    (OPENMETRICS, parse_om, generate_openmetrics),
]


def scrape(app, accept: str, gzipped: bool) -> tuple[dict, str]:
    headers = {}

    def start_response(status, response_headers):
        headers.update(response_headers, status=status)

    environ = {
        "PATH_INFO": "/metrics",
        "REQUEST_METHOD": "GET",
        "HTTP_ACCEPT": accept,
        "HTTP_ACCEPT_ENCODING": "gzip" if gzipped else "",
    }
    body = b"".join(app(environ, start_response))
    assert int(headers["Content-Length"]) == len(body)
    if gzipped:
        assert headers["Content-Encoding"] == "gzip"
        body = gzip.decompress(body)
    return headers, body.decode()


def samples(text: str, parse) -> set:
    return {
        (sample.name, tuple(sorted(sample.labels.items())), sample.value)
        for family in parse(text)
        for sample in family.samples
        if not sample.name.endswith("_created")  # creation times differ between renderings
    }


@pytest.fixture
def daemon():
    config = config_from_mapping(
        {"source": {"type": "replay", "replay": {"vms": 50}}, "interval": 300}, environ={}
    )
    daemon = Daemon(config, open_source(config))
    daemon.run_cycle()
    return daemon


@pytest.mark.parametrize("gzipped", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize(("accept", "parse", "reference"), FORMATS, ids=["text", "openmetrics"])
def test_same_content_as_prometheus_client(daemon, accept, parse, reference, gzipped):
    app = make_app(daemon.registry, daemon)
    for _ in range(2):  # the first scrape encodes the snapshot, the second reuses it
        headers, text = scrape(app, accept, gzipped)
        expected = reference(served(daemon)).decode()
        assert samples(text, parse) == samples(expected, parse)
        assert headers["Content-Type"].split(";")[0] == accept.split(";")[0]
        if accept == OPENMETRICS:
            assert text.endswith("# EOF\n") and text.count("# EOF") == 1
        headers = [line for line in text.splitlines() if line.startswith(("# HELP", "# TYPE"))]
        assert len(headers) == len(set(headers))  # every family shown once
        assert "# TYPE neat_vm_cpu_usage_hertz gauge" in headers
        assert any(line.startswith("# TYPE neat_cycles") for line in headers)  # the live part


def test_the_snapshot_is_served_beside_the_live_registry_not_in_it(daemon):
    live = {family.name for family in daemon.registry.collect()}
    snapshot = {family.name for family in daemon.exposition.collect()}
    assert "neat_cycles" in live and "neat_vm_cpu_usage_hertz" in snapshot
    assert live.isdisjoint(snapshot)


def test_counters_are_current_and_a_new_snapshot_follows(daemon):
    extra = Counter("neat_test_events", "Events.", registry=daemon.registry)
    app = make_app(daemon.registry, daemon)
    scrape(app, OPENMETRICS, True)
    extra.inc(3)
    _, text = scrape(app, OPENMETRICS, True)
    assert "neat_test_events_total 3.0" in text  # not cached
    time.sleep(0.01)
    daemon.run_cycle()
    _, text = scrape(app, OPENMETRICS, True)  # the first scrape after a cycle shows it
    shown = {s.name: s.value for f in parse_om(text) for s in f.samples if not s.labels}
    assert shown["neat_last_cycle_timestamp_seconds"] == daemon.snapshot.time


@pytest.mark.parametrize("gzipped", [False, True], ids=["plain", "gzip"])
def test_scrapes_with_nothing_changed_answer_the_same_body(daemon, gzipped):
    extra = Counter("neat_test_events", "Events.", registry=daemon.registry)
    app = make_app(daemon.registry, daemon)
    environ = {
        "PATH_INFO": "/metrics",
        "REQUEST_METHOD": "GET",
        "HTTP_ACCEPT": OPENMETRICS,
        "HTTP_ACCEPT_ENCODING": "gzip" if gzipped else "",
    }
    first, second = (app(environ, lambda *_: None)[0] for _ in range(2))
    assert second is first  # neither encoded nor copied again
    extra.inc()
    third = app(environ, lambda *_: None)[0]
    assert third != first
    assert "neat_test_events_total 1.0" in (gzip.decompress(third) if gzipped else third).decode()
    time.sleep(0.01)
    daemon.run_cycle()  # a new snapshot, the rest unchanged but for the cycle's own counters
    assert app(environ, lambda *_: None)[0] != third


@pytest.mark.parametrize(("accept", "parse", "reference"), FORMATS, ids=["text", "openmetrics"])
def test_only_the_live_families_that_changed_are_encoded_again(
    daemon, monkeypatch, accept, parse, reference
):
    """The process's series change at every scrape, the loop's only with cycles: a scrape
    encodes what changed, not the whole live part."""
    extra = Counter("neat_test_events", "Events.", registry=daemon.registry)
    app = make_app(daemon.registry, daemon)
    encoded = []
    choose = exposition.choose_encoder

    def counting_choose(header: str):
        encoder, content_type = choose(header)

        def counting(collector):
            encoded.extend(family.name for family in collector.collect())
            return encoder(collector)

        return counting, content_type

    monkeypatch.setattr(exposition, "choose_encoder", counting_choose)
    scrape(app, accept, True)
    encoded.clear()
    extra.inc()
    _, text = scrape(app, accept, True)
    assert encoded == ["neat_test_events"]
    assert "neat_test_events_total 1.0" in text
    assert samples(text, parse) == samples(reference(served(daemon)).decode(), parse)


def test_only_scrapes_from_kept_encodings_are_answered_inline(daemon):
    app = make_app(daemon.registry, daemon)
    environ = {"PATH_INFO": "/metrics", "REQUEST_METHOD": "GET", "HTTP_ACCEPT": OPENMETRICS}
    assert app.inline_app(environ) is None  # the first scrape in a format encodes the snapshot
    scrape(app, OPENMETRICS, True)
    assert app.inline_app(environ) is app
    assert app.inline_app({**environ, "QUERY_STRING": "name[]=neat_cycles"}) is None
    assert app.inline_app({**environ, "PATH_INFO": "/"}) is None  # HTML built per request
    assert app.inline_app({**environ, "PATH_INFO": "/healthz"}) is app


@pytest.fixture
def encodings(monkeypatch) -> list[int]:
    """The number of families of every encoding of a snapshot, as it happens."""
    made = []

    def counting_encode(published, encoder):
        made.append(len(published.families))
        return original(published, encoder)

    original = exposition._encode
    monkeypatch.setattr(exposition, "_encode", counting_encode)
    return made


@pytest.mark.parametrize(("accept", "parse", "reference"), FORMATS, ids=["text", "openmetrics"])
def test_scrapes_after_a_cycle_do_not_encode(daemon, encodings, accept, parse, reference):
    app = make_app(daemon.registry, daemon)
    scrape(app, accept, True)  # the first scrape in a format encodes it, once
    assert len(encodings) == 1
    time.sleep(0.01)
    daemon.run_cycle()
    assert len(encodings) == 2  # the cycle encoded its snapshot in the format asked for
    for gzipped in (True, False):
        _, text = scrape(app, accept, gzipped)
        assert samples(text, parse) == samples(reference(served(daemon)).decode(), parse)
    assert len(encodings) == 2
    shown = {s.name: s.value for f in parse(text) for s in f.samples if not s.labels}
    assert shown["neat_last_cycle_timestamp_seconds"] == daemon.snapshot.time


def test_concurrent_first_scrapes_encode_once(encodings):
    registry = CollectorRegistry()
    families = snapshot_families(None)
    app = MetricsApp(registry, Exposition(families))
    threads = [threading.Thread(target=scrape, args=(app, "text/plain", True)) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert encodings == [len(families)]


@pytest.mark.parametrize("gzipped", [False, True], ids=["plain", "gzip"])
def test_filtered_scrape_as_prometheus_client(daemon, gzipped):
    app = make_app(daemon.registry, daemon)
    names = ["neat_source_up", "neat_vm_cpu_usage_hertz", "neat_cycles_total"]
    query = "&".join(f"name[]={name}" for name in names)
    environ = {
        "PATH_INFO": "/metrics",
        "REQUEST_METHOD": "GET",
        "QUERY_STRING": query,
        "HTTP_ACCEPT_ENCODING": "gzip" if gzipped else "",
    }
    headers = {}
    body = b"".join(app(environ, lambda status, h: headers.update(h, status=status)))
    assert headers["status"].startswith("200")
    text = (gzip.decompress(body) if gzipped else body).decode()
    # prometheus_client's own filter (restricted_registry) misses collectors that describe no
    # names, as the snapshot's does; this one selects from everything.
    everything = samples(generate_latest(served(daemon)).decode(), parse_text)
    assert samples(text, parse_text) == {sample for sample in everything if sample[0] in names}
    assert {name for name, *_ in samples(text, parse_text)} == set(names)


@pytest.mark.parametrize(("accept", "parse", "reference"), FORMATS, ids=["text", "openmetrics"])
def test_snapshot_encoding_is_byte_identical(daemon, accept, parse, reference):
    encoder = reference
    for _ in range(2):  # the second publish reuses the label and value text of the first
        _, kept = daemon.exposition.encoding(accept, encoder)
        families = _Families(daemon.exposition.collect())
        assert kept.body == encoder(families).removesuffix(b"# EOF\n")
        assert gzip.decompress(kept.gzip_head + kept.compressor.copy().flush()) == kept.body
        time.sleep(0.01)
        daemon.run_cycle()


def test_scrapes_build_no_metric_objects_for_rows(daemon, monkeypatch):
    app = make_app(daemon.registry, daemon)
    built = []
    metric = GaugeRows.metric
    monkeypatch.setattr(GaugeRows, "metric", lambda rows: built.append(rows) or metric(rows))
    for accept, *_ in FORMATS:
        _, text = scrape(app, accept, gzipped=True)
        assert 'neat_vm_info{domain="' in text
    assert built == []
    assert served(daemon).get_sample_value("neat_vm_memory_max_bytes", {"vm_uuid": "x"}) is None
    assert built  # other readers of the snapshot's families still see the rows, as families


def test_rows_need_names_the_encoders_keep():
    GaugeRows("neat_ok:ratio", "", ("vm_uuid", "_x"), [])
    for name, labels in [("neat-vm", ()), ("9neat", ()), ("neat", ("a.b",)), ("neat", ("__x",))]:
        with pytest.raises(ValueError, match="legacy"):
            GaugeRows(name, "", labels, [])


VALUES = (
    st.sampled_from([math.nan, math.inf, -math.inf, 1e21, 1e-7, -0.0, 0.0, 0, 1, 2**53 + 1, True])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.integers(-(2**60), 2**60)
)
LABEL_VALUES = st.sampled_from(['a"b', "c\\d", "e\nf", "", "ünï", "x"]) | st.text(max_size=20)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(LABEL_VALUES, LABEL_VALUES, VALUES), max_size=8),
    st.text(max_size=30),
)
def test_rows_are_byte_identical_to_prometheus_client(rows, documentation):
    exposition = Exposition([])
    values = [value for *_, value in rows]
    # The second publish pairs the same label sets and values differently: from the kept text.
    for paired in (values, values[::-1]):
        label_sets = [(uuid, name) for uuid, name, _ in rows]
        labelled = list(zip(label_sets, paired, strict=True))
        families = [
            GaugeRows("neat_vm_test_ratio", documentation, ("vm_uuid", "instance_name"), labelled),
            GaugeRows("neat_host_test_ratio", documentation, (), [((), v) for v in paired[:1]]),
            GaugeMetricFamily("neat_test_other", documentation, value=paired[0] if rows else 1),
        ]
        exposition.publish(families)
        for content_type, _, encoder in FORMATS:
            _, kept = exposition.encoding(content_type, encoder)
            expected = encoder(_Families(exposition.collect())).removesuffix(b"# EOF\n")
            assert kept.body == expected
