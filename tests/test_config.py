"""The configuration: YAML, neat.conf, flags, environment secrets, check-config."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from neat_exporter.cli import main
from neat_exporter.config import config_from_mapping, load_config
from neat_exporter.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent

NEAT_CONF = """\
[DEFAULT]
log_directory = /var/log/neat
log_level = 3
sql_connection = mysql://neat:neatpassword@controller/neat
os_admin_user = admin
os_admin_password = s3cret-pw
global_manager_host = controller.example
global_manager_port = 60080
local_data_directory = /var/lib/neat
local_manager_interval = 300
data_collector_interval = 150
data_collector_data_length = 50
host_cpu_overload_threshold = 0.8
host_cpu_usable_by_vms = 0.9
network_migration_bandwidth = 12.5
algorithm_underload_detection_factory = neat.locals.underload.trivial.last_n_average_threshold_factory
algorithm_underload_detection_parameters = {"threshold": 0.4, "n": 3}
algorithm_overload_detection_factory = neat.locals.overload.mhod.core.mhod_factory
algorithm_overload_detection_parameters = {"state_config": [0.8], "otf": 0.1, "history_size": 500, "window_sizes": [30, 40, 50, 60, 70, 80, 90, 100], "bruteforce_step": 0.5, "learning_steps": 10}
algorithm_vm_selection_factory = neat.locals.vm_selection.algorithms.minimum_migration_time_max_cpu_factory
algorithm_vm_selection_parameters = {"last_n": 2}
"""  # noqa: E501 - neat.conf lines are as long as Neat ships them


def write(tmp_path: Path, text: str, name: str = "config.yml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_from_flags_alone():
    config = load_config(None, overrides={"source.libvirt.uri": "test:///default", "interval": 5})
    assert config.source.type == "libvirt"
    assert config.source.libvirt.uri == "test:///default"
    assert config.interval == 5
    assert config.time_step == 5  # follows the interval unless set
    assert config.listen == ":9840"
    assert config.history_length == 100
    assert config.algorithms.overload.name == "mhod"
    assert config.global_manager.mode == "off"


def test_yaml_file_and_flags_win(tmp_path):
    path = write(tmp_path, "interval: 60\nhistory_length: 10\nsource: {type: replay}\n")
    config = load_config(path, overrides={"interval": 5, "listen": None})
    assert config.interval == 5
    assert config.time_step == 5
    assert config.history_length == 10
    assert config.source.type == "replay"
    assert config.origin == str(path)


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        ("intervall: 5\n", "intervall", "unknown key"),
        ("interval: fast\n", "interval", "must be a number"),
        ("interval: 0\n", "interval", "greater than 0"),
        ("history_length: 2.5\n", "history_length", "integer"),
        ("listen: nowhere\n", "listen", "HOST:PORT"),
        ("host_cpu_usable_by_vms: 1.5\n", "host_cpu_usable_by_vms", "at most 1"),
        ("source: {type: xen}\n", "source.type", "libvirt, directory, replay"),
        ("source: {libvirt: {url: x}}\n", "source.libvirt.url", "unknown key"),
        ("source: 3\n", "source", "mapping"),
        ("global_manager: {mode: yes}\n", "global_manager.mode", "off, dry_run, on"),
        ("global_manager: {mode: on}\n", "global_manager.mode", 'quote it: mode: "on"'),
        ("global_manager: {mode: off}\n", "global_manager.mode", 'quote it: mode: "off"'),
        ("global_manager: {url: controller}\n", "global_manager.url", "http"),
        ("algorithms: {overload: {name: nope}}\n", "algorithms.overload.name", "nope"),
        (
            "algorithms: {underload: {name: threshold, params: {threshold: -1}}}\n",
            "algorithms.underload.params.threshold",
            ">= 0",
        ),
        (
            "algorithms: {vm_selection: {name: minimum_migration_time_max_cpu, params: {n: 1}}}\n",
            "algorithms.vm_selection.params.n",
            "unknown parameter",
        ),
        ("algorithms: {placement: {}}\n", "algorithms.placement", "unknown key"),
        ("ceilometer_series: 1\n", "ceilometer_series", "true or false"),
        ("watcher: {mode: on}\n", "watcher.mode", "off, on"),
        ('watcher: {mode: "on"}\n', "watcher.audits", "no alert or reason"),
        ("watcher: {audits: {a: b}}\n", "watcher.audits", "list of {match, audit}"),
        ("watcher: {audits: [{match: a}]}\n", "watcher.audits[0]", "match and audit"),
        ("watcher: {audits: [{match: a, audit: ''}]}\n", "watcher.audits[0].audit", "non-empty"),
        ("watcher: {clouds_yaml: /nonexistent}\n", "watcher.clouds_yaml", "no such file"),
        ("watcher: {url: watcher:9322}\n", "watcher.url", "http"),
        ("interval: [1\n", "config", "not valid YAML"),
        ("- 1\n- 2\n", "config", "mapping"),
        ('host: "compute1\\r\\nforged"\n', "host", "host name with '\\r'"),
    ],
)
def test_bad_configuration_names_the_key(tmp_path, text, key, reason):
    with pytest.raises(ConfigError) as error:
        load_config(write(tmp_path, text))
    assert error.value.key == key
    assert reason in error.value.reason


def test_unreadable_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yml")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path)  # a folder
    binary = tmp_path / "binary.yml"
    binary.write_bytes(b"\xff\xfe\x00interval")
    with pytest.raises(ConfigError, match="not a text file"):
        load_config(binary)


def test_neat_conf_is_accepted_as_is(tmp_path):
    config = load_config(write(tmp_path, NEAT_CONF, "neat.conf"))
    assert config.interval == 300
    assert config.time_step == 150
    assert config.history_length == 50
    assert config.host_cpu_usable_by_vms == 0.9
    assert config.network_migration_bandwidth == 12.5
    assert config.log_level == "debug"
    assert config.source.type == "directory"
    assert config.source.directory.path == "/var/lib/neat"
    assert config.algorithms.underload.name == "last_n_average_threshold"
    assert config.algorithms.underload.params == {"threshold": 0.4, "n": 3}
    assert config.algorithms.overload.name == "mhod"
    assert config.algorithms.vm_selection.name == "minimum_migration_time_max_cpu"
    assert config.global_manager.url == "http://controller.example:60080/"
    assert config.global_manager.username.get_secret_value() == "admin"
    assert config.global_manager.password.get_secret_value() == "s3cret-pw"
    assert config.global_manager.mode == "off"  # requests stay off until asked for


def test_neat_conf_bad_parameters_name_the_option(tmp_path):
    text = NEAT_CONF.replace('{"last_n": 2}', '{"last_n": 2')
    with pytest.raises(ConfigError) as error:
        load_config(write(tmp_path, text, "neat.conf"))
    assert error.value.key == "algorithm_vm_selection_parameters"
    text = NEAT_CONF.replace("local_manager_interval = 300", "local_manager_interval = soon")
    with pytest.raises(ConfigError) as error:
        load_config(write(tmp_path, text, "neat.conf"))
    assert error.value.key == "local_manager_interval"


def test_secrets_from_files_and_environment_wins(tmp_path):
    (tmp_path / "user").write_text("admin\n")
    (tmp_path / "pass").write_text("from-file\n")
    mapping = {
        "global_manager": {
            "mode": "on",
            "username_file": str(tmp_path / "user"),
            "password_file": str(tmp_path / "pass"),
        }
    }
    config = config_from_mapping(mapping, environ={})
    manager = config.global_manager
    assert manager.username.get_secret_value() == "admin"
    assert manager.password.get_secret_value() == "from-file"
    config = config_from_mapping(mapping, environ={"NEAT_GLOBAL_MANAGER_PASSWORD": "from-env"})
    assert config.global_manager.password.get_secret_value() == "from-env"
    assert "from-env" not in repr(config)
    bridge = config_from_mapping(
        {"bridge": {"basic_auth_username": "am"}},
        environ={"NEAT_BRIDGE_TOKEN": "tok", "NEAT_BRIDGE_PASSWORD": "pw"},
    ).bridge
    assert bridge.bearer_token.get_secret_value() == "tok"
    assert bridge.basic_auth_password.get_secret_value() == "pw"


def test_mode_on_needs_credentials(tmp_path):
    with pytest.raises(ConfigError) as error:
        config_from_mapping({"global_manager": {"mode": "on"}}, environ={})
    assert error.value.key == "global_manager.username_file"
    with pytest.raises(ConfigError, match="cannot read"):
        config_from_mapping(
            {"global_manager": {"password_file": str(tmp_path / "absent")}}, environ={}
        )


def test_check_config_prints_everything_with_secrets_redacted(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("NEAT_GLOBAL_MANAGER_USERNAME", "admin-user")
    monkeypatch.delenv("NEAT_GLOBAL_MANAGER_PASSWORD", raising=False)
    path = write(tmp_path, NEAT_CONF, "neat.conf")
    assert main(["check-config", str(path), "--interval", "30"]) == 0
    out = capsys.readouterr().out
    printed = yaml.safe_load(out)
    assert printed["interval"] == 30
    assert printed["time_step"] == 150
    assert printed["global_manager"]["username"] == "<redacted>"
    assert printed["global_manager"]["password"] == "<redacted>"
    assert printed["bridge"]["bearer_token"] == "<unset>"
    assert printed["algorithms"]["overload"]["params"]["window_sizes"][0] == 30
    assert "s3cret-pw" not in out
    assert "admin-user" not in out


def check_config(path: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "neat_exporter", "check-config", str(path)]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def test_check_config_error_exits_2_with_key_and_no_traceback(tmp_path):
    result = check_config(write(tmp_path, "source:\n  replay: {vms: 0}\n"))
    assert result.returncode == 2
    assert "source.replay.vms: must be at least 1" in result.stderr
    assert "Traceback" not in result.stderr


# --- hostile configuration files ------------------------------------------------------------------

# Nested aliases: a few hundred bytes that expand to a billion values.
ALIAS_BOMB = "a0: &a0 {k: v, l: w}\n" + "".join(
    f"a{i}: &a{i} {{{', '.join(f'k{j}: *a{i - 1}' for j in range(9))}}}\n" for i in range(1, 10)
)


def load_web(path):
    from neat_exporter.web import load_web_config

    return load_web_config(path)


@pytest.mark.parametrize("load", [load_config, load_web], ids=["config", "web_config"])
@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (ALIAS_BOMB, "aliases"),
        ("interval: " + "[" * 5000 + "]" * 5000 + "\n", "nested deeper than"),
        ("a: &a [*a]\n", "refers to itself"),
        ("# padding\n" * 120_000, "larger than"),
    ],
    ids=["alias-bomb", "deep-nesting", "recursive-alias", "too-large"],
)
def test_hostile_yaml_is_refused_at_once(tmp_path, load, text, reason):
    """The alias bomb took 53 s and 3.3 GB before it was refused; deep nesting was an uncaught
    RecursionError. Size, depth and alias expansion are bounded before anything is built."""
    path = write(tmp_path, text)
    started = time.monotonic()
    with pytest.raises(ConfigError) as error:
        load(path)
    assert time.monotonic() - started < 2
    assert reason in error.value.reason


def test_only_regular_files_are_read(tmp_path):
    """A configuration (or a secret file) that is a link to /dev/zero was read forever."""
    (tmp_path / "zero.yml").symlink_to("/dev/zero")
    (tmp_path / "password").symlink_to("/dev/zero")
    write(tmp_path, "global_manager: {password_file: %s}\n" % (tmp_path / "password"))
    for path in (tmp_path / "zero.yml", tmp_path / "config.yml"):
        result = check_config(path)
        assert result.returncode == 2
        assert "not a regular file" in result.stderr and "Traceback" not in result.stderr
    link = tmp_path / "linked.yml"
    link.symlink_to(write(tmp_path, "interval: 7\n", "real.yml"))  # ConfigMaps are links
    assert load_config(link).interval == 7


def test_a_neat_conf_line_without_equals_does_not_echo_its_value(tmp_path):
    path = write(tmp_path, "[DEFAULT]\nos_admin_user = admin\nos_admin_password s3cret\n", "n.conf")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert "line 3" in str(error.value)
    assert "s3cret" not in str(error.value) and "os_admin_password" not in str(error.value)


def test_a_yaml_error_near_an_inline_key_does_not_print_the_key(tmp_path):
    secret = "c2VjcmV0LWtleS1tYXRlcmlhbA"
    text = (
        "tls_server_config:\n  cert_file: server.crt\n  key: |\n"
        "    -----BEGIN PRIVATE KEY-----\n"
        "    MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\n"
        f"   {secret}: oops\n    -----END PRIVATE KEY-----\n"
    )
    for load in (load_web, load_config):
        with pytest.raises(ConfigError) as error:
            load(write(tmp_path, text))
        message = str(error.value)
        assert "not valid YAML (line 6" in message
        for leaked in (secret, "MIIE", "PRIVATE", "server.crt"):
            assert leaked not in message
    with pytest.raises(ConfigError) as error:  # a secret file given as the configuration
        load_config(write(tmp_path, "s3cret-pw\n", "password"))
    assert "s3cret" not in str(error.value)


# --- one declaration: problems, secrets and flags derived from it -------------------------------


def test_every_problem_is_one_line_naming_its_key(tmp_path, capsys):
    path = write(tmp_path, "interval: '300'\nsource: {replay: {vms: 0}}\nbridge: {listn: x}\n")
    assert main(["check-config", str(path)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        "neat-exporter check-config: error: interval: must be a number, got '300'",
        "neat-exporter check-config: error: source.replay.vms: must be at least 1, got 0",
        "neat-exporter check-config: error: bridge.listn: unknown key (known here: listen, "
        "bearer_token_file, basic_auth_username, basic_auth_password_file, queue_size, "
        "dedup_ttl, max_payload_bytes)",
    ]


def test_a_secret_written_in_the_file_is_refused_without_being_shown(tmp_path):
    for text, key in [
        ("bridge: {bearer_token: tok-in-the-file}\n", "bridge.bearer_token"),
        ("global_manager: {password: tok-in-the-file}\n", "global_manager.password"),
    ]:
        with pytest.raises(ConfigError) as error:
            load_config(write(tmp_path, text))
        assert error.value.key == key
        assert "_file or NEAT_" in error.value.reason
        assert "tok-in-the-file" not in str(error.value)
    config = config_from_mapping({}, environ={"NEAT_BRIDGE_TOKEN": "tok-from-env"})
    assert "tok-from-env" not in repr(config) and "tok-from-env" not in str(config.bridge)
    assert config.bridge.bearer_token.get_secret_value() == "tok-from-env"


def test_flags_are_the_declared_keys_of_each_command():
    from neat_exporter.cli import build_parser
    from neat_exporter.config import Config
    from neat_exporter.config.loading import flag_overrides
    from neat_exporter.globalmanager.config import GlobalManagerFile

    parser = build_parser()
    args = parser.parse_args(["bridge", "--listen", ":1", "--global-manager-mode", "dry_run"])
    assert {k: v for k, v in flag_overrides(args, Config, "bridge").items() if v} == {
        "bridge.listen": ":1",
        "global_manager.mode": "dry_run",
    }
    args = parser.parse_args(["run", "--interval", "5", "--data-dir", "/d", "--source", "replay"])
    given = {k: v for k, v in flag_overrides(args, Config, "run").items() if v}
    assert given == {"interval": 5.0, "source.directory.path": "/d", "source.type": "replay"}
    args = parser.parse_args(["global-manager", "--migrate-unsafe", "--executor", "libvirt"])
    overrides = flag_overrides(args, GlobalManagerFile, "global-manager")
    given = {k: v for k, v in overrides.items() if v}
    assert given == {"executor.libvirt.unsafe": True, "executor.type": "libvirt"}
    with pytest.raises(SystemExit):  # the choices are the declared ones
        parser.parse_args(["run", "--source", "xen"])
