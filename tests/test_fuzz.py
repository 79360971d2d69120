"""Property-based fuzzing of everything that parses outside input: bad input must end in one of
the user-facing errors (neat_exporter.errors, or the source's SourceError), never in another
exception, and what is accepted must be sane."""

from __future__ import annotations

import io
import json
import math
import string

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from neat_exporter.actions import MigrationRequester
from neat_exporter.algorithms.registry import available
from neat_exporter.bridge import WEBHOOK_PATH, Bridge, parse_webhook
from neat_exporter.config import Config, config_from_mapping, effective_config, load_config
from neat_exporter.errors import ConfigError, InputError, NeatExporterError
from neat_exporter.identifiers import is_vm_uuid
from neat_exporter.neat_files import parse_values
from neat_exporter.sources.base import SourceError
from neat_exporter.sources.directory import DirectorySource
from neat_exporter.traces import parse_trace
from neat_exporter.web import WebConfig, load_web_config

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
    | st.sampled_from(["", "0", "-1", "1e999", "nan", ":9840", "http://x/", "a" * 300])
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)


def sometimes(keys: list[str], values) -> st.SearchStrategy[dict]:
    """Mappings holding some of ``keys`` (so the fuzzing reaches deep validation) and, now and
    then, a stray key."""
    return st.fixed_dictionaries({}, optional=dict.fromkeys(keys, values)) | st.dictionaries(
        st.sampled_from([*keys, "unknown", ""]), values, max_size=3
    )


ALGORITHM_NAMES = sorted({name for names in available().values() for name in names})
algorithm_entries = st.fixed_dictionaries(
    {},
    optional={
        "name": st.sampled_from(ALGORITHM_NAMES) | scalars,
        "params": st.dictionaries(
            st.sampled_from(["threshold", "n", "limit", "otf", "last_n", "param", "length", "x"]),
            scalars | st.lists(st.floats(0, 2), max_size=4),
            max_size=3,
        )
        | json_values,
    },
)
config_mappings = sometimes(
    [
        "host", "listen", "web_config_file", "log_level", "interval", "time_step",
        "history_length", "history_dir", "host_cpu_usable_by_vms", "network_migration_bandwidth",
    ],
    scalars,
) | st.fixed_dictionaries(
    {},
    optional={
        "source": sometimes(["type", "libvirt", "directory", "replay"], json_values),
        "algorithms": sometimes(["underload", "overload", "vm_selection"], algorithm_entries),
        "global_manager": sometimes(["mode", "url", "timeout", "retries", "cooldown"], scalars),
        "bridge": sometimes(["listen", "queue_size", "dedup_ttl", "max_payload_bytes"], scalars),
    },
)  # fmt: skip


def _leaves(tree, path=""):
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _leaves(value, f"{path}.{key}" if path else str(key))
    else:
        yield path, tree


SECRET_KEYS = ("password", "token", "username")


def _check_config(config: Config) -> None:
    effective = effective_config(config)
    assert config.interval > 0 and config.history_length >= 1
    for key, value in _leaves(effective):
        if key.endswith(SECRET_KEYS):
            assert value in ("<redacted>", "<unset>", None), key
    printed = yaml.safe_dump(effective)
    for secret in (config.global_manager.password, config.bridge.bearer_token):
        value = secret.get_secret_value() if secret else ""
        assert len(value) < 12 or value not in printed


def _valid_or_clear_error(load) -> None:
    """``load()`` gives a sane configuration or raises an error with a message."""
    try:
        config = load()
    except NeatExporterError as error:
        assert str(error)
        return
    _check_config(config)


@FUZZ
@given(config_mappings)
def test_config_mappings(mapping):
    _valid_or_clear_error(lambda: config_from_mapping(mapping, environ={}))


@FUZZ
@given(st.text(max_size=400) | config_mappings.map(yaml.safe_dump))
def test_config_files(tmp_path, text):
    path = tmp_path / "config.yml"
    path.write_text(text, encoding="utf-8")
    _valid_or_clear_error(lambda: load_config(path, environ={}))


NEAT_OPTIONS = [
    "local_manager_interval", "data_collector_interval", "data_collector_data_length",
    "host_cpu_usable_by_vms", "network_migration_bandwidth", "local_data_directory",
    "global_manager_host", "global_manager_port", "os_admin_user", "os_admin_password",
    "algorithm_underload_detection_factory", "algorithm_underload_detection_parameters",
    "algorithm_overload_detection_factory", "algorithm_overload_detection_parameters",
    "algorithm_vm_selection_factory", "algorithm_vm_selection_parameters", "log_level",
]  # fmt: skip
neat_values = (
    st.sampled_from(
        [
            "300", "-5", "0", "abc", "1.5", "0.9", "/var/lib/neat", "controller", "60080",
            "neat.locals.overload.mhod.core.mhod_factory", "neat.locals.underload.trivial.x",
            '{"threshold": 0.8, "n": 2}', '{"threshold": "high"}', "[1, 2]", "{", "%(x)s",
        ]
    )
    | st.text(alphabet=string.printable.replace("\n", "").replace("\r", ""), max_size=30)
)  # fmt: skip


@FUZZ
@given(
    st.lists(st.tuples(st.sampled_from(NEAT_OPTIONS), neat_values), max_size=8),
    st.sampled_from(["[DEFAULT]", "[DEFAULT]\n[DEFAULT]", "[other]"]),
)
def test_neat_conf_import(tmp_path, options, header):
    path = tmp_path / "neat.conf"
    path.write_text(header + "\n" + "".join(f"{key} = {value}\n" for key, value in options))
    _valid_or_clear_error(lambda: load_config(path, environ={}))


number_lines = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-(10**6), 10**30).map(str),
    st.text(max_size=12),
    st.sampled_from(["", " ", "1_000", "0x10", "١٢", "\x00", "12\r", "nan", "-0"]),
)


@FUZZ
@given(st.lists(number_lines, max_size=30).map("\n".join))
def test_trace_parser(text):
    try:
        values = parse_trace(text, "trace")
    except InputError as error:
        assert str(error).startswith("trace")
        return
    assert values.size > 0 and np.all(np.isfinite(values)) and values.min() >= 0


@FUZZ
@given(
    st.binary(max_size=300)
    | st.lists(number_lines, max_size=30).map(lambda s: "\n".join(s).encode())
)
def test_history_file_reader(content):
    content = content.encode() if isinstance(content, str) else content
    loaded = parse_values(content, ceiling_mhz=8000)
    assert all(math.isfinite(v) and 0 <= v <= 8000 for v in loaded.values)
    lines = [line for line in content.split(b"\n") if line.strip()]
    assert len(loaded.values) + loaded.dropped == len(lines)


file_names = st.text(
    alphabet=st.characters(blacklist_characters="/\x00", blacklist_categories=["Cs"]),
    min_size=1,
    max_size=40,
).filter(lambda name: name not in {".", ".."} and len(name.encode()) < 200) | st.uuids().map(str)


@FUZZ
@given(
    st.dictionaries(file_names, st.binary(max_size=80), max_size=6),
    st.none() | st.binary(max_size=80),
)
def test_directory_source(tmp_path_factory, vm_files, host_file):
    root = tmp_path_factory.mktemp("neat")
    (root / "vms").mkdir()
    for name, content in vm_files.items():
        (root / "vms" / name).write_bytes(content)
    if host_file is not None:
        (root / "host").write_bytes(host_file)
    source = DirectorySource(root, host_cpu_mhz=8000, host="compute1")
    try:
        reading = source.collect()
    except SourceError as error:
        assert str(error)
        return
    finally:
        source.close()
    assert set(reading.vms) == {name for name in vm_files if is_vm_uuid(name)}
    assert reading.rejected_vms == sum(
        not is_vm_uuid(name) and not name.startswith(".") for name in vm_files
    )
    for vm in reading.vms.values():
        assert vm.cpu_mhz is None or (math.isfinite(vm.cpu_mhz) and vm.cpu_mhz >= 0)


# --- webhook payloads -------------------------------------------------------------------------

label_sets = st.dictionaries(
    st.sampled_from(["neat_reason", "host", "vm_uuid", "alertname", "x" * 300])
    | st.text(max_size=8),
    st.sampled_from(["underload", "overload", "compute1", "", "a" * 5000]) | json_values,
    max_size=5,
)
alerts = st.fixed_dictionaries(
    {},
    optional={
        "status": st.sampled_from(["firing", "resolved", "pending"]) | scalars,
        "labels": label_sets | json_values,
        "annotations": json_values,
        "startsAt": st.sampled_from(["2024-01-01T00:00:00Z", "yesterday"]) | scalars,
        "fingerprint": st.text(max_size=20) | scalars,
    },
)
payloads = st.fixed_dictionaries(
    {},
    optional={
        "version": st.sampled_from(["4", "3", 4]) | scalars,
        "status": st.sampled_from(["firing", "resolved"]) | scalars,
        "alerts": st.lists(alerts, max_size=5) | json_values,
        "groupKey": st.text(max_size=20) | scalars,
        "receiver": scalars,
    },
)
webhook_bodies = (
    payloads.map(lambda p: json.dumps(p).encode())
    | json_values.map(lambda v: json.dumps(v).encode())
    | st.binary(max_size=200)
)


@FUZZ
@given(webhook_bodies)
def test_webhook_parser(body):
    try:
        parsed = parse_webhook(body)
    except InputError as error:
        assert str(error)
        return
    assert all(alert.status in ("firing", "resolved") for alert in parsed)


@pytest.fixture(scope="module")
def bridge_app():
    config = config_from_mapping(
        {"global_manager": {"mode": "dry_run"}, "bridge": {"max_payload_bytes": 4096}},
        environ={},
    )
    registry = CollectorRegistry()
    requester = MigrationRequester(config.global_manager, registry, queue_size=4)
    return Bridge(config.bridge, requester, registry)


def call(app, body: bytes, content_length: str | None) -> int:
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": WEBHOOK_PATH,
        "wsgi.input": io.BytesIO(body),
        "CONTENT_TYPE": "application/json",
    }
    if content_length is not None:
        environ["CONTENT_LENGTH"] = content_length
    statuses = []
    response = b"".join(
        app(environ, lambda status, headers, exc_info=None: statuses.append(status))
    )
    json.loads(response)  # every answer is a JSON document
    return int(statuses[0].split()[0])


@FUZZ
@given(webhook_bodies, st.sampled_from([None, "", "-1", "abc", "99999999", "exact", "short"]))
def test_webhook_endpoint(bridge_app, body, length):
    if length == "exact":
        length = str(len(body))
    elif length == "short":
        length = str(len(body) // 2)
    status = call(bridge_app, body, length)
    assert status in (200, 400, 411, 413), status


# --- web config -------------------------------------------------------------------------------

web_configs = sometimes(
    ["tls_server_config", "basic_auth_users", "http_server_config", "rate_limit"],
    json_values
    | sometimes(["cert_file", "key_file", "client_auth_type", "min_version", "http2"], scalars)
    | st.dictionaries(st.text(max_size=8), st.sampled_from(["$2b$10$short", "plain"]), max_size=2),
)


@FUZZ
@given(st.text(max_size=300) | web_configs.map(yaml.safe_dump))
def test_web_config_files(tmp_path, text):
    path = tmp_path / "web.yml"
    path.write_text(text, encoding="utf-8")
    try:
        config = load_web_config(path)
    except ConfigError as error:
        assert error.key.startswith("web_config")
        return
    assert isinstance(config, WebConfig)


def test_fuzzing_reaches_accepted_inputs(tmp_path):
    """The properties above would pass vacuously if everything were refused; a few known-good
    inputs show each parser accepts what it should."""
    assert config_from_mapping({"interval": 60}, environ={}).interval == 60
    assert parse_trace("1\n2\n", "t").tolist() == [1.0, 2.0]
    good = {"version": "4", "status": "firing", "alerts": []}
    assert parse_webhook(json.dumps(good).encode()) == []
    (tmp_path / "web.yml").write_text("basic_auth_users: {}\n")
    assert load_web_config(tmp_path / "web.yml").tls is None
