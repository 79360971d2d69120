"""The Helm chart: lint, render with several value sets, schema-check the manifests, and check
the objects that matter (socket directory mount, single-source rules and dashboards, secrets)."""

from __future__ import annotations

import base64
import functools
import json
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

helm = pytest.importorskip("helm_python", reason="helm-python-sdk is in the test extra")
kubernetes_validate = pytest.importorskip("kubernetes_validate")
yamllint_config = pytest.importorskip("yamllint.config")
yamllint_linter = pytest.importorskip("yamllint.linter")

from services import Libvirtd, require_program  # noqa: E402

from neat_exporter.config import config_from_mapping  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "neat-exporter"
KUBE_VERSION = "1.30.0"
RELEASE, NAMESPACE = "rel", "monitoring"

# Distinctive secrets, so a leak into any other object is found by a plain substring search.
USERNAME, PASSWORD, TOKEN = "neat-admin-3f9a", "pw-7c1e-not-for-configmaps", "tok-52b8-bridge"

EVERYTHING = {
    "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
    "podMonitor": {"enabled": True},
    "prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
    "dashboards": {"enabled": True, "annotations": {"grafana_folder": "Neat"}},
    "credentials": {"username": USERNAME, "password": PASSWORD},
    "config": {"global_manager": {"mode": "dry_run"}, "interval": 60},
    "exporter": {"tolerations": [{"operator": "Exists", "effect": "NoSchedule"}]},
    "bridge": {"enabled": True, "bearerToken": TOKEN},
}
VALUE_SETS = {
    "defaults": {},
    "everything": EVERYTHING,
    "bridge-only": {
        "exporter": {"enabled": False},
        "dashboards": {"enabled": False},
        "bridge": {"enabled": True, "existingSecret": "bridge-token"},
        "credentials": {"existingSecret": "neat-credentials"},
    },
    "existing-secret-no-history": {
        "credentials": {"existingSecret": "neat-credentials", "usernameKey": "user"},
        "exporter": {"history": {"enabled": False}},
        "config": {"global_manager": {"mode": "on"}},
    },
}
YAMLLINT = yamllint_config.YamlLintConfig(
    "extends: default\n"
    "rules:\n"
    "  document-start: disable\n"
    "  line-length: {max: 120, allow-non-breakable-inline-mappings: true}\n"
    "  indentation: {spaces: 2, indent-sequences: whatever}\n"
    "  truthy: {check-keys: false}\n"
)


def render(values: dict) -> dict[str, str]:
    return dict(_render(json.dumps(values, sort_keys=True)))


@functools.cache
def _render(values_json: str) -> tuple[tuple[str, str], ...]:
    with helm.Chart.load(str(CHART)) as chart:
        rendered = chart.render(json.loads(values_json), name=RELEASE, namespace=NAMESPACE)
    return tuple(rendered.items())


def manifests(values: dict) -> list[dict]:
    objects = []
    for name, text in render(values).items():
        if name.endswith(".yaml"):
            objects += [doc for doc in yaml.safe_load_all(text) if doc]
    return objects


def only(objects: list[dict], kind: str, component: str | None = None) -> dict:
    found = [
        o
        for o in objects
        if o["kind"] == kind
        and (
            component is None
            or o["metadata"]["labels"].get("app.kubernetes.io/component") == component
        )
    ]
    assert len(found) == 1, f"expected one {kind} ({component}), got {len(found)}"
    return found[0]


def volumes_by_name(pod_spec: dict) -> dict[str, dict]:
    return {v["name"]: v for v in pod_spec["volumes"]}


@pytest.mark.parametrize("name", VALUE_SETS)
def test_lint_strict_has_no_warnings(name):
    result = helm.lint(
        str(CHART),
        VALUE_SETS[name],
        strict=True,
        namespace=NAMESPACE,
        kube_version=f"v{KUBE_VERSION}",
    )
    assert result["errors"] == []
    # Severity 1 is informational ("icon is recommended"); 2 and above are warnings/errors.
    assert [m for m in result["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("name", VALUE_SETS)
def test_rendered_manifests_pass_kubernetes_schemas(name):
    objects = manifests(VALUE_SETS[name])
    assert objects
    checked = 0
    for obj in objects:
        if obj["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # CRDs: not in the bundled schemas; checked by assertions below
        kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
        checked += 1
    assert checked


@pytest.mark.parametrize("name", VALUE_SETS)
def test_rendered_manifests_pass_yamllint(name):
    for template, text in render(VALUE_SETS[name]).items():
        if not template.endswith(".yaml") or not text.strip():
            continue
        problems = list(yamllint_linter.run(text, YAMLLINT))
        assert problems == [], f"{template}: {[str(p) for p in problems]}"


def test_chart_sources_pass_yamllint():
    for path in [CHART / "Chart.yaml", CHART / "values.yaml"]:
        problems = list(yamllint_linter.run(path.read_text(), YAMLLINT))
        assert problems == [], f"{path.name}: {[str(p) for p in problems]}"


def test_daemonset_mounts_the_libvirt_socket_directory_read_only():
    objects = manifests({})
    daemonset = only(objects, "DaemonSet")
    pod = daemonset["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    sockets = mounts["libvirt-sockets"]
    assert sockets["readOnly"] is True
    assert sockets["mountPath"] == "/var/run/libvirt"
    assert "subPath" not in sockets
    host_path = volumes_by_name(pod)["libvirt-sockets"]["hostPath"]
    assert host_path["path"] == "/var/run/libvirt"
    assert host_path["type"].startswith("Directory")  # never the socket file itself


def test_daemonset_is_locked_down_and_probed():
    pod = only(manifests({}), "DaemonSet")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] + container["args"] == [
        "neat-exporter",
        "run",
        "--config",
        "/etc/neat-exporter/config.yml",
    ]
    assert container["image"] == "ghcr.io/neat-exporter/neat-exporter:0.1.0"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert container["resources"]["requests"] and container["resources"]["limits"]
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert pod["nodeSelector"] == {"openstack-compute-node": "enabled"}
    history = volumes_by_name(pod)["history"]["hostPath"]
    assert history == {"path": "/var/lib/neat-exporter", "type": "DirectoryOrCreate"}
    (init,) = pod["initContainers"]
    assert init["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN"]}


def test_tolerations_and_node_selector_come_from_values():
    values = {
        "exporter": {
            "nodeSelector": {"node-role/compute": "true"},
            "tolerations": [{"key": "compute", "operator": "Exists"}],
        }
    }
    pod = only(manifests(values), "DaemonSet")["spec"]["template"]["spec"]
    # Helm merges maps: the default label stays unless set to null.
    assert pod["nodeSelector"] == {"node-role/compute": "true", "openstack-compute-node": "enabled"}
    values["exporter"]["nodeSelector"]["openstack-compute-node"] = None
    pod = only(manifests(values), "DaemonSet")["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"node-role/compute": "true"}
    assert pod["tolerations"] == [{"key": "compute", "operator": "Exists"}]


def rendered_config(objects: list[dict], component: str) -> dict:
    return yaml.safe_load(only(objects, "ConfigMap", component)["data"]["config.yml"])


def test_exporter_config_is_valid_for_the_exporter():
    objects = manifests(EVERYTHING)
    config = rendered_config(objects, "exporter")
    assert config["listen"] == ":9840"
    assert config["history_dir"] == "/var/lib/neat-exporter"
    assert config["interval"] == 60
    gm = config["global_manager"]
    assert gm["mode"] == "dry_run"
    assert gm["username_file"] == "/etc/neat-exporter/credentials/username"
    assert gm["password_file"] == "/etc/neat-exporter/credentials/password"
    # The exporter's own loader accepts it (the environment stands in for the mounted files).
    environ = {"NEAT_GLOBAL_MANAGER_USERNAME": "u", "NEAT_GLOBAL_MANAGER_PASSWORD": "p"}
    loaded = config_from_mapping(config, "rendered", environ=environ)
    assert loaded.global_manager.mode == "dry_run"
    assert loaded.source.type == "libvirt"
    # ... and the files it names are where the Secret is mounted, under the names it gives.
    pod = only(objects, "DaemonSet")["spec"]["template"]["spec"]
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    secret_volume = volumes_by_name(pod)["credentials"]["secret"]
    paths = {f"{mounts['credentials']}/{item['path']}" for item in secret_volume["items"]}
    assert paths == {gm["username_file"], gm["password_file"]}


def test_bridge_config_is_valid_for_the_exporter():
    objects = manifests(EVERYTHING)
    config = rendered_config(objects, "bridge")
    assert config["bridge"]["listen"] == ":9841"
    assert config["bridge"]["bearer_token_file"] == "/etc/neat-exporter/bridge/token"
    environ = {
        "NEAT_GLOBAL_MANAGER_USERNAME": "u",
        "NEAT_GLOBAL_MANAGER_PASSWORD": "p",
        "NEAT_BRIDGE_TOKEN": "t",
    }
    loaded = config_from_mapping(config, "rendered", environ=environ)
    assert loaded.bridge.listen == ":9841"
    deployment = only(objects, "Deployment", "bridge")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["command"] + container["args"][:1] == ["neat-exporter", "bridge"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    service = only(objects, "Service", "bridge")
    assert service["spec"]["ports"][0]["port"] == 9841


def test_secrets_never_appear_outside_secrets():
    objects = manifests(EVERYTHING)
    for obj in objects:
        text = json.dumps(obj)
        if obj["kind"] == "Secret":
            continue
        for secret in (USERNAME, PASSWORD, TOKEN):
            assert secret not in text, f"{secret!r} leaked into {obj['kind']}"
            encoded = base64.b64encode(secret.encode()).decode()
            assert encoded not in text, f"{secret!r} (base64) leaked into {obj['kind']}"
    secrets = [o for o in objects if o["kind"] == "Secret"]
    stored = {base64.b64decode(v).decode() for s in secrets for v in s["data"].values()}
    assert stored == {USERNAME, PASSWORD, TOKEN}
    for obj in objects:
        for container in (
            obj.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
        ):
            assert "env" not in container  # files only, never the environment


def test_existing_secret_is_used_and_no_secret_is_rendered():
    objects = manifests(VALUE_SETS["bridge-only"])
    assert [o for o in objects if o["kind"] == "Secret"] == []
    assert [o for o in objects if o["kind"] == "DaemonSet"] == []
    pod = only(objects, "Deployment", "bridge")["spec"]["template"]["spec"]
    volumes = volumes_by_name(pod)
    assert volumes["credentials"]["secret"]["secretName"] == "neat-credentials"
    assert volumes["token"]["secret"]["secretName"] == "bridge-token"


def test_credentials_schema_forbids_secrets_in_config():
    with helm.Chart.load(str(CHART)) as chart:
        for bad in (
            {"config": {"global_manager": {"password": "x"}}},
            {"config": {"listen": ":1"}},
            {"exporter": {"port": "9840"}},
            {"servicemonitor": {"enabled": True}},
        ):
            with pytest.raises(helm.HelmValuesError):
                chart.validate_schema(bad)
        chart.validate_schema(EVERYTHING)


def alert_groups() -> list[dict]:
    groups = []
    for path in sorted((ROOT / "alerts").glob("*.rules.yml")):
        groups += yaml.safe_load(path.read_text())["groups"]
    return groups


def test_prometheus_rule_holds_every_alert_of_the_repository():
    groups = alert_groups()
    if not groups:
        pytest.skip("alerts/*.rules.yml holds no rule groups yet")
    rule = only(manifests(EVERYTHING), "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert rule["spec"]["groups"] == groups
    alerts = {r["alert"] for g in groups for r in g["rules"] if "alert" in r}
    rendered = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r}
    assert alerts and rendered == alerts


def test_dashboards_configmap_holds_every_dashboard_unchanged():
    committed = {p.name: p.read_text() for p in (ROOT / "dashboards").glob("*.json")}
    assert {"neat-host.json", "neat-fleet.json"} <= committed.keys()
    configmap = only(
        [o for o in manifests({}) if o["metadata"]["name"].endswith("-dashboards")], "ConfigMap"
    )
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["data"] == committed


def test_chart_reads_alerts_and_dashboards_through_symlinks():
    """One source: files/ holds links to the repository's folders, not copies."""
    for name in ("alerts", "dashboards"):
        link = CHART / "files" / name
        assert link.is_symlink(), f"{link} must be a symlink to ../../../{name}"
        assert link.resolve() == (ROOT / name).resolve()
    copies = [
        p
        for pattern in ("*.rules.yml", "neat-*.json")
        for p in CHART.rglob(pattern)
        if "files" not in p.relative_to(CHART).parts
    ]
    assert copies == []


def test_monitors_select_the_exporter_pods():
    objects = manifests(EVERYTHING)
    pod_labels = only(objects, "DaemonSet")["spec"]["template"]["metadata"]["labels"]
    service = only(objects, "Service", "exporter")
    for monitor in (only(objects, "ServiceMonitor", "exporter"), only(objects, "PodMonitor")):
        selector = monitor["spec"]["selector"]["matchLabels"]
        assert selector.items() <= pod_labels.items()
        assert monitor["spec"]["jobLabel"] == "app.kubernetes.io/name"
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert only(objects, "ServiceMonitor", "exporter")["spec"]["selector"][
        "matchLabels"
    ].items() <= (service["metadata"]["labels"].items())
    bridge_monitor = only(objects, "ServiceMonitor", "bridge")
    bridge_service = only(objects, "Service", "bridge")
    assert bridge_monitor["spec"]["selector"]["matchLabels"].items() <= (
        bridge_service["metadata"]["labels"].items() | bridge_service["spec"]["selector"].items()
    )


def leaf_keys(values: dict, prefix: str = "") -> set[str]:
    keys = set()
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            keys |= leaf_keys(value, f"{dotted}.")
        else:
            keys.add(dotted)
    return keys


def test_readme_documents_every_value():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    readme = (CHART / "README.md").read_text()
    documented = set(re.findall(r"^\| `([^`]+)` \|", readme, flags=re.MULTILINE))
    # Maps documented as a whole (resources, probes, security contexts) count for their leaves.
    missing = {
        key
        for key in leaf_keys(values)
        if not any(key == d or key.startswith(f"{d}.") for d in documented)
    }
    assert missing == set()
    leaves = leaf_keys(values)
    unknown = {d for d in documented if not any(k == d or k.startswith(f"{d}.") for k in leaves)}
    assert unknown == set()


def test_packaged_chart_carries_the_linked_files(tmp_path):
    """`helm package` stores the files behind the links, so a packaged chart stands alone."""
    archive = Path(helm.package(str(CHART), destination=str(tmp_path)))
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
        assert not [m.name for m in tar.getmembers() if m.issym()]
    packaged = {n.split("/", 1)[1] for n in names}
    # Only what the templates read: .helmignore keeps the generator and rule tests out.
    assert {n for n in packaged if n.startswith("files/")} == {
        *(f"files/dashboards/{p.name}" for p in (ROOT / "dashboards").glob("*.json")),
        *(f"files/alerts/{p.name}" for p in (ROOT / "alerts").glob("*.rules.yml")),
    }
    with helm.Chart.load_archive(archive.read_bytes()) as chart:
        rendered = chart.render(
            {"prometheusRule": {"enabled": bool(alert_groups())}}, name=RELEASE, namespace=NAMESPACE
        )
    template = "neat-exporter/templates/dashboards.yaml"
    assert rendered[template] == render({})[template]


def test_values_in_the_deployment_guide_are_accepted():
    guide = (ROOT / "docs" / "deploy.md").read_text()
    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", guide, flags=re.DOTALL)]
    values = next(b for b in blocks if "serviceMonitor" in b)
    bridge = next(b for b in blocks if set(b) == {"bridge"})
    with helm.Chart.load(str(CHART)) as chart:
        chart.validate_schema(values)
        chart.validate_schema({**values, **bridge})
    objects = manifests({**values, **bridge})
    environ = {"NEAT_GLOBAL_MANAGER_USERNAME": "u", "NEAT_GLOBAL_MANAGER_PASSWORD": "p"}
    loaded = config_from_mapping(rendered_config(objects, "exporter"), "guide", environ=environ)
    assert loaded.algorithms.overload.name == "otf"
    assert only(objects, "PrometheusRule")["metadata"]["labels"]["release"] == (
        "kube-prometheus-stack"
    )


# What a pod sees through the chart's read-only hostPath mount of the socket *directory*, versus
# a mount of the socket file, when libvirt restarts: one line per input line, "<dir> <file>".
SOCKET_PROBE = """
import sys, libvirt
libvirt.registerErrorHandler(lambda *args: None, None)
def connects(socket):
    try:
        libvirt.openReadOnly(f"test+unix:///default?socket={socket}").close()
        return "ok"
    except libvirt.libvirtError:
        return "refused"
for _ in sys.stdin:
    print(connects(sys.argv[1]), connects(sys.argv[2]), flush=True)
"""


@pytest.mark.services
def test_read_only_socket_directory_mount_survives_a_libvirt_restart(tmp_path):
    pytest.importorskip("libvirt", reason="libvirt-python is in the libvirt extra")

    unshare = require_program("unshare")
    libvirtd = Libvirtd(tmp_path / "libvirtd")
    sockets = libvirtd.socket.parent
    directory_mount, file_mount = tmp_path / "pod-run-libvirt", tmp_path / "pod-libvirt-sock-ro"
    directory_mount.mkdir()
    file_mount.touch()
    # A private mount namespace stands in for the pod: bind mounts, then remounted read-only.
    script = (
        f"mount --bind {sockets} {directory_mount}"
        f" && mount -o remount,bind,ro {directory_mount}"
        f" && mount --bind {sockets / 'libvirt-sock-ro'} {file_mount}"
        f" && mount -o remount,bind,ro {file_mount}"
        f' && exec "$0" -c "$1" {directory_mount / "libvirt-sock-ro"} {file_mount}'
    )
    argv = [unshare, "--mount", "--propagation", "private", "sh", "-c", script]
    pod = subprocess.Popen(
        [*argv, sys.executable, SOCKET_PROBE],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def probe() -> str:
        pod.stdin.write("\n")
        pod.stdin.flush()
        line = pod.stdout.readline().strip()
        if not line:
            pytest.skip(f"cannot bind-mount in a private namespace here: {pod.stderr.read()}")
        return line

    try:
        assert probe() == "ok ok"  # read-only mounts do not stop a unix-socket connect
        libvirtd.kill()  # libvirt restarts and creates its sockets anew
        libvirtd.start()
        assert probe() == "ok refused"  # the directory shows the new socket; the file is stale
    finally:
        pod.stdin.close()
        pod.wait(10)
        libvirtd.stop()


def test_half_given_credentials_are_refused_by_name():
    with (
        helm.Chart.load(str(CHART)) as chart,
        pytest.raises(helm.HelmRenderError, match=r"credentials\.password is required"),
    ):
        chart.render({"credentials": {"username": USERNAME}}, name=RELEASE)


def test_alertmanager_route_in_the_deployment_guide_is_valid(tmp_path):
    amtool = require_program("amtool")
    guide = (ROOT / "docs" / "deploy.md").read_text()
    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", guide, flags=re.DOTALL)]
    config = next(b for b in blocks if "alertmanager" in b)["alertmanager"]["config"]
    # The guide shows only what to add; give the route its usual default receiver.
    config["route"]["receiver"] = "default"
    config["receivers"].append({"name": "default"})
    (tmp_path / "alertmanager.yml").write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [amtool, "check-config", str(tmp_path / "alertmanager.yml")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (route,) = config["route"]["routes"]
    assert route["receiver"] == "neat-bridge" and "neat_reason" in route["matchers"][0]
    url = config["receivers"][0]["webhook_configs"][0]["url"]
    bridge = only(manifests({"bridge": {"enabled": True}}), "Service", "bridge")
    port = bridge["spec"]["ports"][0]["port"]
    assert url == f"http://neat-neat-exporter-bridge.monitoring.svc:{port}/webhook"


def test_history_can_be_turned_off():
    objects = manifests(VALUE_SETS["existing-secret-no-history"])
    pod = only(objects, "DaemonSet")["spec"]["template"]["spec"]
    assert "history" not in volumes_by_name(pod) and "initContainers" not in pod
    assert "history_dir" not in rendered_config(objects, "exporter")
