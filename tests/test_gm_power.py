"""The global manager's power backends against real BMC emulators (bmc.py): sushy-tools' Redfish
emulator and virtualbmc with ipmitool, both switching libvirt domains that stand in for compute
hosts; the command backend with real programs; and the configuration that builds them."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

import pytest
from bmc import RedfishEmulator, VirtualBMC, free_udp_port
from libvirt_fixtures import wait_until_halted
from libvirt_hosts import LibvirtHosts, skip_unless_hosts_can_run
from pki import PKI
from services import find_program, free_port

from neat_exporter.errors import ConfigError
from neat_exporter.globalmanager.config import effective_settings, load_settings
from neat_exporter.globalmanager.power import PowerError, PowerState, build_power_backend
from neat_exporter.globalmanager.power.base import PowerTiming
from neat_exporter.globalmanager.power.command import CommandPower, CommandTarget
from neat_exporter.globalmanager.power.config import Shutdown
from neat_exporter.globalmanager.power.ipmi import SHUTDOWN_COMMANDS, IpmiPower, IpmiTarget
from neat_exporter.globalmanager.power.redfish import (
    SHUTDOWN_RESET_TYPES,
    RedfishPower,
    RedfishTarget,
)

USER, PASSWORD = "admin", "bmc-s3cret-Pa55"
WRONG_PASSWORD = "not-the-password-42"
FAST = PowerTiming(timeout=20, poll_interval=0.2, request_timeout=5)
BMC_HOST = "bmc-host"
# A shell would run `touch evil` and `id`; without one it is just a file name.
EVIL_HOST = "x;touch${IFS}evil;$(id)"


@dataclass
class Bmcs:
    """Three "compute hosts" (persistent domains on one libvirt host): redfish-node and
    stubborn-node behind the Redfish emulator, ipmi-node behind its virtual BMC."""

    hosts: LibvirtHosts
    redfish_url: str
    redfish_ca: str
    """The CA that signed the Redfish emulator's certificate (it serves HTTPS)."""
    pki: PKI
    ipmi_port: int
    vm: dict[str, str]  # compute host name -> domain UUID

    def running(self, node: str) -> bool:
        return self.hosts.running_on(self.vm[node]) == [BMC_HOST]

    def wait_until_listening(self, node: str) -> None:
        """A guest hears the power button once it idles (~0.3 s after power-on)."""
        with self.hosts.connect(BMC_HOST) as conn:
            wait_until_halted(conn, [self.vm[node]])


@pytest.fixture(scope="module")
def bmcs(tmp_path_factory) -> Iterator[Bmcs]:
    skip_unless_hosts_can_run()
    workdir = tmp_path_factory.mktemp("bmcs")
    with contextlib.ExitStack() as stack, ThreadPoolExecutor() as pool:
        # The emulators start while the libvirt host does; they reach it only when asked.
        vbmc_started = pool.submit(VirtualBMC, workdir / "vbmc")
        hosts = stack.enter_context(LibvirtHosts(workdir / "hosts", [BMC_HOST]))
        uri = hosts.uri(BMC_HOST)
        pki = PKI(workdir / "pki")
        tls = (pki.path("server.crt"), pki.path("server.key"), pki.path("server-ca.crt"))
        redfish_started = pool.submit(
            RedfishEmulator, workdir / "redfish", uri, USER, PASSWORD, tls
        )
        # Guests that obey the ACPI power button, and one that ignores it.
        loads = {"redfish-node": "graceful", "ipmi-node": "graceful", "stubborn-node": "idle"}
        vm = {node: hosts.start_vm(BMC_HOST, node, load) for node, load in loads.items()}
        vbmc = vbmc_started.result()
        stack.callback(vbmc.stop)
        redfish = redfish_started.result()
        stack.callback(redfish.stop)
        port = vbmc.add("ipmi-node", uri, USER, PASSWORD)
        yield Bmcs(hosts, redfish.url, redfish.verify, pki, port, vm)


def redfish(
    bmcs: Bmcs, password: str = PASSWORD, system: str = "redfish-node", **options
) -> RedfishPower:
    options = {"timing": FAST, "verify": bmcs.redfish_ca, **options}
    target = RedfishTarget(bmcs.redfish_url, system, USER, password, **options)
    return RedfishPower({"node": target})


def ipmi(bmcs: Bmcs, password: str = PASSWORD, **options) -> IpmiPower:
    if find_program("ipmitool") is None:
        pytest.skip("ipmitool is not installed (make test installs it as root)")
    target = IpmiTarget(
        "127.0.0.1", USER, password, port=bmcs.ipmi_port, **{"timing": FAST, **options}
    )
    return IpmiPower({"node": target})


@pytest.mark.parametrize("backend", [redfish, ipmi])
def test_off_and_on_through_the_bmc_switch_the_domain(bmcs, backend):
    power = backend(bmcs, shutdown="force")
    node = f"{power.name}-node"
    power.power_on("node")  # whatever an earlier test left
    assert power.power_state("node") == PowerState.ON and bmcs.running(node)

    power.power_off("node")
    assert power.power_state("node") == PowerState.OFF
    assert not bmcs.running(node)
    started = time.monotonic()
    power.power_off("node")  # already off: nothing to do
    assert time.monotonic() - started < 1

    power.power_on("node")
    assert power.power_state("node") == PowerState.ON
    assert bmcs.running(node)


@pytest.mark.parametrize("backend", [redfish, ipmi])
def test_a_graceful_shutdown_asks_the_guest_and_waits_for_off(bmcs, backend):
    power = backend(bmcs, shutdown="graceful")
    node = f"{power.name}-node"
    power.power_on("node")
    bmcs.wait_until_listening(node)
    power.power_off("node")
    assert power.power_state("node") == PowerState.OFF and not bmcs.running(node)
    power.power_on("node")


def test_a_host_that_never_reaches_the_state_times_out(bmcs):
    """A graceful shutdown only asks; this guest never answers the ACPI button."""
    patient = PowerTiming(timeout=1.5, poll_interval=0.2, request_timeout=5)
    power = redfish(bmcs, system="stubborn-node", shutdown="graceful", timing=patient)
    started = time.monotonic()
    with pytest.raises(PowerError, match=r"^node: still on 1.5 s after asking for off$"):
        power.power_off("node")
    assert 1.5 <= time.monotonic() - started < 8
    assert bmcs.running("stubborn-node")


@pytest.mark.parametrize("backend", [redfish, ipmi])
def test_wrong_credentials_are_a_clear_error_without_the_secret(bmcs, backend):
    power = backend(bmcs, password=WRONG_PASSWORD)
    for action in (power.power_state, power.power_off):
        with pytest.raises(PowerError) as error:
            action("node")
        message = str(error.value)
        print(message)
        assert message.startswith("node: ") and "\n" not in message
        assert WRONG_PASSWORD not in message and PASSWORD not in message
    assert bmcs.running(f"{power.name}-node")


def test_redfish_names_refused_credentials_and_unknown_systems(bmcs):
    with pytest.raises(PowerError, match="refused the credentials"):
        redfish(bmcs, password=WRONG_PASSWORD).power_state("node")
    with pytest.raises(PowerError, match="has no system 'no-such-system'"):
        redfish(bmcs, system="no-such-system").power_state("node")
    with pytest.raises(PowerError, match="no Redfish BMC configured"):
        redfish(bmcs).power_state("other")


def test_redfish_over_https_checks_the_bmc_certificate(bmcs):
    """Every Redfish test here goes over HTTPS, verified against the emulator's CA; with the
    system's CAs or another CA the BMC is refused."""
    for verify in (True, bmcs.pki.path("rogue-ca.crt")):
        with pytest.raises(PowerError, match="cannot reach the Redfish BMC") as error:
            redfish(bmcs, system="stubborn-node", verify=verify).power_state("node")
        print(error.value)
        assert "certificate verify failed" in str(error.value)
        assert PASSWORD not in str(error.value)


def test_a_bmc_that_is_down_is_a_clear_error_in_bounded_time():
    timing = PowerTiming(timeout=5, poll_interval=0.2, request_timeout=2)
    backends = [
        RedfishPower(
            {
                "node": RedfishTarget(
                    f"http://127.0.0.1:{free_port()}", "1", USER, PASSWORD, timing=timing
                )
            }
        )
    ]
    if find_program("ipmitool"):
        backends.append(
            IpmiPower(
                {"node": IpmiTarget("127.0.0.1", USER, PASSWORD, free_udp_port(), timing=timing)}
            )
        )
    for power in backends:
        started = time.monotonic()
        with pytest.raises(PowerError) as error:
            power.power_on("node")
        print(error.value)
        assert str(error.value).startswith("node: ") and PASSWORD not in str(error.value)
        assert time.monotonic() - started < timing.request_timeout + 1


# --- the command backend, with real programs -------------------------------------------------


def command_power(tmp_path: Path, **timing) -> CommandPower:
    """A "host" is on while the file <tmp_path>/<host>.on exists."""
    flag = f"{tmp_path}/{{host}}.on"
    target = CommandTarget(
        sleep=("rm", "-f", "--", flag),
        wake=("touch", "--", flag),
        state=("test", "-e", flag),
        timing=PowerTiming(**{"timeout": 5, "poll_interval": 0.05, **timing}),
    )
    return CommandPower({"h1": target, EVIL_HOST: target})


def test_command_backend_runs_its_templates_and_polls_the_state(tmp_path):
    power = command_power(tmp_path)
    assert power.power_state("h1") == PowerState.OFF
    power.power_on("h1")
    assert (tmp_path / "h1.on").exists() and power.power_state("h1") == PowerState.ON
    power.power_off("h1")
    assert not (tmp_path / "h1.on").exists() and power.power_state("h1") == PowerState.OFF


def test_a_host_name_never_reaches_a_shell_or_becomes_an_option(tmp_path):
    power = command_power(tmp_path)
    power.power_on(EVIL_HOST)  # one argument, no shell: a file of that name, nothing else
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{EVIL_HOST}.on"]
    for bad in ("-oProxyCommand=touch evil", "a b", "a\nb", ""):
        with pytest.raises(PowerError, match="not a usable host name"):
            power.power_on(bad)
    assert not (tmp_path / "evil").exists()


def test_command_failures_and_timeouts_are_power_errors(tmp_path):
    failing = CommandPower(
        {"h1": CommandTarget(sleep=("false",), wake=("sh", "-c", "echo no route >&2; exit 3"))}
    )
    with pytest.raises(PowerError, match=r"^h1: wake command failed: exit status 3: no route$"):
        failing.power_on("h1")
    assert failing.power_state("h1") == PowerState.UNKNOWN  # no state command
    slow = CommandPower(
        {
            "h1": CommandTarget(
                sleep=("sleep", "5"), wake=("true",), timing=PowerTiming(request_timeout=0.3)
            )
        }
    )
    with pytest.raises(PowerError, match=r"sleep command did not end within 0\.3 s"):
        slow.power_off("h1")
    never = command_power(tmp_path, timeout=0.3)
    never.targets["h1"] = CommandTarget(
        sleep=("true",), wake=("true",), state=("false",), timing=never.targets["h1"].timing
    )
    with pytest.raises(PowerError, match=r"still off 0\.3 s after asking for on"):
        never.power_on("h1")
    missing = CommandPower(
        {"h1": CommandTarget(sleep=("true",), wake=("true",), state=("/nonexistent/ping",))}
    )
    with pytest.raises(PowerError, match=r"^h1: cannot run the state command \(/nonexistent"):
        missing.power_state("h1")  # a broken configuration, not a host that is off


# --- configuration ---------------------------------------------------------------------------


GM_LOGIN = {"NEAT_GLOBAL_MANAGER_USERNAME": "gm", "NEAT_GLOBAL_MANAGER_PASSWORD": "gm-pw"}


def configured_power(backend: str, hosts: dict, environ: dict[str, str]):
    """The backend as the global manager builds it: from its checked configuration."""
    overrides = {"power.backend": backend, "hosts": hosts}
    settings = load_settings(None, overrides, {**GM_LOGIN, **environ})
    return build_power_backend(settings["power.backend"], settings["hosts"])


def test_configuration_builds_each_backend_with_secrets_from_files_and_environment(tmp_path):
    secret = tmp_path / "bmc.password"
    secret.write_text(PASSWORD + "\n")
    hosts = {
        "c1": {
            "redfish": {"url": "https://bmc-1.example", "system_id": "1", "username": USER,
                        "password_file": str(secret), "timeout": 60, "shutdown": "force"},
            "ipmi": {"address": "10.0.0.1", "username": USER, "password_env": "BMC_PW"},
            "command": {"sleep": ["ssh", "{host}", "systemctl", "suspend"],
                        "wake": ["wakeonlan", "aa:bb:cc:dd:ee:ff"]},
        }
    }  # fmt: skip
    red = configured_power("redfish", hosts, environ={})
    target = red.targets["c1"]
    assert (target.password, target.shutdown, target.timing.timeout) == (PASSWORD, "force", 60)
    assert PASSWORD not in repr(target)
    assert configured_power("ipmi", hosts, {"BMC_PW": "pw"}).targets["c1"].password == "pw"
    assert configured_power("command", hosts, {}).targets["c1"].state is None


@pytest.mark.parametrize(
    ("section", "key", "reason"),
    [
        ({"url": "https://b", "system_id": "1", "username": USER, "password": PASSWORD},
         "hosts.c1.redfish.password", "not inline"),
        ({"url": "https://b", "system_id": "1", "username": USER, "password_env": "UNSET_VAR"},
         "hosts.c1.redfish.password_env", "UNSET_VAR is not set"),
        ({"url": "ftp://b", "system_id": "1"}, "hosts.c1.redfish.url", "http"),
        ({"url": f"https://admin:{PASSWORD}@b", "system_id": "1"}, "hosts.c1.redfish.url",
         "credentials do not belong in the URL"),
        ({"url": "https://b", "system_id": "../x"}, "hosts.c1.redfish.system_id", "not a Redfish"),
        ({"url": "https://b", "system_id": "1", "user": "x"}, "hosts.c1.redfish.user",
         "unknown key"),
        ({"url": "https://b", "system_id": "1", "username": USER, "password_file": "/nonexistent",
          "shutdown": "force"}, "hosts.c1.redfish.password_file", "cannot read"),
        ({"url": "https://b", "system_id": "1", "username": USER, "password_env": "PW",
          "timeout": -1}, "hosts.c1.redfish.timeout", "greater than 0"),
    ],
)  # fmt: skip
def test_configuration_errors_name_the_key_and_never_the_secret(section, key, reason):
    with pytest.raises(ConfigError) as error:
        configured_power("redfish", {"c1": {"redfish": section}}, environ={"PW": PASSWORD})
    assert error.value.key == key and reason in error.value.reason, str(error.value)
    assert PASSWORD not in str(error.value)


@pytest.mark.parametrize(
    ("backend", "hosts", "key"),
    [
        ("ipmi", {"c1": {"redfish": {}}}, "hosts.c1.ipmi"),
        ("ipmi", {"c1": {"ipmi": {"address": "-oX", "username": "u", "password_env": "PW"}}},
         "hosts.c1.ipmi.address"),
        ("command", {"c1": {"command": {"sleep": "ssh {host} suspend", "wake": ["true"]}}},
         "hosts.c1.command.sleep"),
        ("command", {"c1": {"command": {"sleep": ["{host}"], "wake": ["true"]}}},
         "hosts.c1.command.sleep"),
        ("command", {"-c1": {"command": {"sleep": ["true"], "wake": ["true"]}}}, "hosts.-c1"),
        ("wol", {}, "power.backend"),
    ],
)  # fmt: skip
def test_configuration_refuses_what_could_run_the_wrong_thing(backend, hosts, key):
    with pytest.raises(ConfigError) as error:
        configured_power(backend, hosts, environ={"PW": PASSWORD})
    assert error.value.key == key, str(error.value)


REDFISH = {"url": "https://b", "system_id": "1"}
IPMI = {"address": "10.0.0.1"}


@pytest.mark.parametrize(
    ("backend", "section", "key", "reason"),
    [
        ("redfish", {**REDFISH, "password_env": "PW"}, "hosts.c1.redfish.username",
         "give exactly one of username, username_file, username_env"),
        ("redfish", {**REDFISH, "username": USER, "username_env": "PW", "password_env": "PW"},
         "hosts.c1.redfish.username", "exactly one"),
        ("ipmi", {**IPMI, "username": USER}, "hosts.c1.ipmi.password",
         "give exactly one of password_file, password_env"),
        ("ipmi", {**IPMI, "username": USER, "password_env": "PW", "password_file": "/x"},
         "hosts.c1.ipmi.password", "exactly one"),
        ("ipmi", {**IPMI, "username": USER, "password_env": "EMPTY"}, "hosts.c1.ipmi.password_env",
         "the password is empty"),
        ("ipmi", {**IPMI, "username": "", "password_env": "PW"}, "hosts.c1.ipmi.username",
         "the username is empty"),
        ("ipmi", {**IPMI, "username": USER, "password_env": "PW", "port": 70000},
         "hosts.c1.ipmi.port", "at most 65535"),
        ("ipmi", {**IPMI, "username": USER, "password_env": "PW", "shutdown": "reboot"},
         "hosts.c1.ipmi.shutdown", "must be one of graceful, force"),
        ("redfish", {**REDFISH, "username": USER, "password_env": "PW", "verify": 1},
         "hosts.c1.redfish.verify", "a CA bundle file"),
        ("redfish", {**REDFISH, "system_id": "a\nb", "username": USER, "password_env": "PW"},
         "hosts.c1.redfish.system_id", "not a Redfish system id"),
        ("ipmi", {"address": "10.0.0.1 -oX", "username": USER, "password_env": "PW"},
         "hosts.c1.ipmi.address", "not an address"),
        ("command", {"sleep": [], "wake": ["true"]}, "hosts.c1.command.sleep", "non-empty list"),
        ("command", {"sleep": ["true"], "wake": ["wakeonlan", "a\0b"]}, "hosts.c1.command.wake",
         "every argument must be a string"),
        ("command", {"sleep": ["true"], "wake": ["true"], "poll_interval": 0},
         "hosts.c1.command.poll_interval", "greater than 0"),
    ],
)  # fmt: skip
def test_each_check_of_a_section_names_its_key(backend, section, key, reason):
    with pytest.raises(ConfigError) as error:
        configured_power(backend, {"c1": {backend: section}}, {"PW": PASSWORD, "EMPTY": " "})
    assert error.value.key == key and reason in error.value.reason, str(error.value)
    assert PASSWORD not in str(error.value)


def test_login_from_files_or_environment_and_system_id_written_as_a_number(tmp_path):
    (tmp_path / "user").write_text(USER + "\n")
    (tmp_path / "password").write_text(PASSWORD + "\n")
    section = {"url": "https://b", "system_id": 7, "username_file": str(tmp_path / "user"),
               "password_file": str(tmp_path / "password"), "verify": str(tmp_path / "ca.pem"),
               "request_timeout": 3}  # fmt: skip
    target = configured_power("redfish", {"c1": {"redfish": section}}, {}).targets["c1"]
    assert (target.username, target.password, target.system_id) == (USER, PASSWORD, "7")
    assert target.verify == str(tmp_path / "ca.pem")
    assert target.timing == PowerTiming(timeout=300, poll_interval=2, request_timeout=3)
    section = {"address": "bmc-1", "username_env": "BMC_USER", "password_env": "BMC_PW"}
    environ = {"BMC_USER": USER, "BMC_PW": PASSWORD}
    target = configured_power("ipmi", {"c1": {"ipmi": section}}, environ).targets["c1"]
    assert (target.username, target.password, target.port) == (USER, PASSWORD, 623)


def test_the_sections_of_other_backends_are_not_read():
    """A host may keep its other backends' sections (their secrets unset) for a later switch;
    the chosen backend's section is still checked whole."""
    hosts = {"c1": {"ipmi": {"address": "-oX", "password_env": "UNSET"},
                    "command": {"sleep": ["true"], "wake": ["true"]}}}  # fmt: skip
    assert configured_power("command", hosts, {}).targets["c1"].sleep == ("true",)
    hosts["c1"]["wol"] = {}
    with pytest.raises(ConfigError, match=r"^hosts\.c1\.wol: unknown key \(known here: redfish"):
        configured_power("command", hosts, {})


def test_check_config_shows_the_hosts_sections_with_their_secrets_redacted(tmp_path):
    (tmp_path / "password").write_text(PASSWORD)
    config = tmp_path / "gm.yml"
    config.write_text(
        "power: {backend: redfish}\n"
        "hosts:\n"
        "  c1: {redfish: {url: 'https://b', system_id: '1', username: admin,\n"
        f"                password_file: {tmp_path / 'password'}}}}}\n"
        "  c2: {redfish: {url: 'https://b', system_id: '2', username: admin,\n"
        "                password_env: BMC_PASSWORD}}\n"
    )
    settings = load_settings(config, {}, {**GM_LOGIN, "BMC_PASSWORD": PASSWORD})
    shown = effective_settings(settings)
    assert shown["hosts"]["c1"]["redfish"]["password"] == "<redacted>"
    assert shown["hosts"]["c2"]["redfish"]["password_env"] == "BMC_PASSWORD"
    assert shown["hosts"]["c2"]["redfish"]["timeout"] == PowerTiming().timeout
    assert PASSWORD not in str(shown) + repr(settings)


def test_the_declared_shutdown_modes_are_those_both_bmc_backends_know():
    modes = set(get_args(Shutdown))
    assert modes == set(SHUTDOWN_COMMANDS) == set(SHUTDOWN_RESET_TYPES) == {"graceful", "force"}


def test_a_host_name_that_cannot_be_printed_is_refused_escaped():
    with pytest.raises(ConfigError) as error:
        configured_power("command", {"c\x1b[2J": {"command": {"sleep": ["a"], "wake": ["b"]}}}, {})
    assert error.value.key == "hosts.'c\\x1b[2J'" and "\x1b" not in str(error.value)
