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

import bcrypt
import helm_python as helm
import kubernetes_validate
import pytest
import requests
import yaml
import yamllint.config as yamllint_config
import yamllint.linter as yamllint_linter
from pki import PKI
from services import Libvirtd, require_program

from neat_exporter.config import config_from_mapping
from neat_exporter.web import load_web_config, serve_wsgi

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "neat-exporter"
KUBE_VERSION = "1.30.0"
RELEASE, NAMESPACE = "rel", "monitoring"

# Distinctive secrets, so a leak into any other object is found by a plain substring search.
USERNAME, PASSWORD, TOKEN = "neat-admin-3f9a", "pw-7c1e-not-for-configmaps", "tok-52b8-bridge"
SCRAPE_PASSWORD = "scrape-pw-a4d0"
SCRAPE_HASH = bcrypt.hashpw(SCRAPE_PASSWORD.encode(), bcrypt.gensalt(4)).decode()
TLS_KEY = "-----BEGIN PRIVATE KEY-----\nkey-e61c-web-config\n-----END PRIVATE KEY-----\n"
WEB_DIR = "/etc/neat-exporter/web"
# How the monitors reach the scrape credentials and the CA: Secret references, never contents.
SCRAPE = {
    "tlsConfig": {
        "ca": {"secret": {"name": "neat-exporter-ca", "key": "ca.crt"}},
        "serverName": "neat-exporter",
    },
    "basicAuth": {
        "username": {"name": "neat-scrape", "key": "username"},
        "password": {"name": "neat-scrape", "key": "password"},
    },
}

EVERYTHING = {
    "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
    "podMonitor": {"enabled": True},
    "prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
    "dashboards": {"enabled": True, "annotations": {"grafana_folder": "Neat"}},
    "credentials": {"username": USERNAME, "password": PASSWORD},
    "config": {"global_manager": {"mode": "dry_run"}, "interval": 60},
    "exporter": {"tolerations": [{"operator": "Exists", "effect": "NoSchedule"}]},
    "bridge": {"enabled": True, "bearerToken": TOKEN},
    # A web config made by the chart: TLS and basic auth for the exporter; the bridge keeps its
    # bearer token on plain HTTP (Alertmanager cannot send both in one Authorization header).
    "webConfig": {
        "enabled": True,
        "clientAuth": True,
        "bridge": False,
        "config": {
            "tls_server_config": {"cert_file": "tls.crt", "key_file": "tls.key"},
            "basic_auth_users": {"prometheus": SCRAPE_HASH},
        },
        "files": {"tls.crt": "-----BEGIN CERTIFICATE-----\n...\n", "tls.key": TLS_KEY},
        "scrape": SCRAPE,
    },
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
    "web-config-existing-secret": {
        "podMonitor": {"enabled": True},
        "serviceMonitor": {"enabled": True},
        "bridge": {"enabled": True, "bearerToken": TOKEN},
        "webConfig": {
            "enabled": True,
            "existingSecret": "neat-web-config",
            "certificateSecret": "neat-tls",
            "scrape": {"tlsConfig": {"insecureSkipVerify": True}},
        },
    },
    "global-manager": {
        "credentials": {"username": USERNAME, "password": PASSWORD},
        "serviceMonitor": {"enabled": True},
        "config": {"global_manager": {"mode": "on"}},
        "globalManager": {
            "enabled": True,
            "persistence": {"enabled": True, "storageClass": "fast", "size": "2Gi"},
            "secretFiles": "neat-bmc",
            "config": {
                "prometheus": {"url": "http://prometheus-operated.monitoring.svc:9090"},
                "executor": {
                    "type": "libvirt",
                    "libvirt": {"uri_template": "qemu+tls://{host}/system", "max_total": 4},
                },
                "policy": {"cooldown": 1800, "never_switch_off": ["compute-0*"]},
                "hosts": {
                    "compute-1": {
                        "redfish": {
                            "url": "https://bmc-1.example",
                            "system_id": "1",
                            "username": "admin",
                            "password_file": "/etc/neat-exporter/secrets/bmc-1.password",
                        }
                    }
                },
            },
        },
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
        for secret in (USERNAME, PASSWORD, TOKEN, SCRAPE_HASH, TLS_KEY, "key-e61c-web-config"):
            assert secret not in text, f"{secret!r} leaked into {obj['kind']}"
            encoded = base64.b64encode(secret.encode()).decode()
            assert encoded not in text, f"{secret!r} (base64) leaked into {obj['kind']}"
    web = secret_data(objects, f"{RELEASE}-neat-exporter-web-config")
    assert yaml.safe_load(web.pop("web-config.yml")) == EVERYTHING["webConfig"]["config"]
    assert web == EVERYTHING["webConfig"]["files"]
    others = [
        o
        for o in objects
        if o["kind"] == "Secret" and not o["metadata"]["name"].endswith("-web-config")
    ]
    stored = {base64.b64decode(v).decode() for s in others for v in s["data"].values()}
    assert stored == {USERNAME, PASSWORD, TOKEN}
    for obj in objects:
        for container in (
            obj.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
        ):
            assert "env" not in container  # files only, never the environment


def secret_data(objects: list[dict], name: str) -> dict[str, str]:
    (secret,) = [o for o in objects if o["kind"] == "Secret" and o["metadata"]["name"] == name]
    return {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}


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
    assert groups, "alerts/*.rules.yml holds no rule groups"
    rule = only(manifests(EVERYTHING), "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert rule["spec"]["groups"] == groups
    alerts = {r["alert"] for g in groups for r in g["rules"] if "alert" in r}
    rendered = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r}
    assert alerts and rendered == alerts


def test_runbook_base_url_turns_runbook_paths_into_links():
    base = "https://git.example.com/ops/neat_exporter/blob/v1"
    values = {"prometheusRule": {"enabled": True, "runbookBaseUrl": base + "/"}}
    rendered = only(manifests(values), "PrometheusRule")["spec"]["groups"]
    urls = {
        rule["alert"]: rule["annotations"]["runbook_url"]
        for group in rendered
        for rule in group["rules"]
        if "runbook_url" in rule.get("annotations", {})
    }
    paths = {
        rule["alert"]: rule["annotations"]["runbook_url"]
        for group in alert_groups()
        for rule in group["rules"]
        if "runbook_url" in rule.get("annotations", {})
    }
    assert paths and urls == {alert: f"{base}/{path}" for alert, path in paths.items()}
    # Everything else about the rules is unchanged.
    for group in rendered:
        for rule in group["rules"]:
            rule.get("annotations", {}).pop("runbook_url", None)
    for group in (groups := alert_groups()):
        for rule in group["rules"]:
            rule.get("annotations", {}).pop("runbook_url", None)
    assert rendered == groups
    with helm.Chart.load(str(CHART)) as chart, pytest.raises(helm.HelmValuesError):
        chart.validate_schema({"prometheusRule": {"runbookBaseUrl": "docs.example.com"}})


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
        return pod.stdout.readline().strip()

    try:
        first = probe()
        if not first:  # only the mount setup may be missing: a later silent probe is a failure
            pytest.skip(f"cannot bind-mount in a private namespace here: {pod.stderr.read()}")
        assert first == "ok ok"  # read-only mounts do not stop a unix-socket connect
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


def container_of(objects: list[dict], kind: str, component: str) -> tuple[dict, dict]:
    pod = only(objects, kind, component)["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return pod, container


@pytest.mark.parametrize(
    ("name", "secrets", "components"),
    [
        ("everything", [f"{RELEASE}-neat-exporter-web-config"], {"exporter"}),
        ("web-config-existing-secret", ["neat-web-config", "neat-tls"], {"exporter", "bridge"}),
    ],
)
def test_web_config_secret_is_mounted_read_only_and_named_in_the_config(name, secrets, components):
    objects = manifests(VALUE_SETS[name])
    for kind, component in (("DaemonSet", "exporter"), ("Deployment", "bridge")):
        pod, container = container_of(objects, kind, component)
        config = rendered_config(objects, component)
        mounts = {m["name"]: m for m in container["volumeMounts"]}
        if component not in components:
            assert "web-config" not in mounts and "web_config_file" not in config
            continue
        # The whole folder, read-only: a subPath mount would never see a renewed certificate.
        assert mounts["web-config"] == {
            "name": "web-config",
            "mountPath": WEB_DIR,
            "readOnly": True,
        }
        sources = volumes_by_name(pod)["web-config"]["projected"]["sources"]
        assert sources == [{"secret": {"name": name}} for name in secrets]
        # One mechanism: the configuration file names it, the command line stays as it was.
        assert config["web_config_file"] == f"{WEB_DIR}/web-config.yml"
        assert not any("web.config" in arg for arg in container["args"])
        environ = {
            "NEAT_GLOBAL_MANAGER_USERNAME": "u",
            "NEAT_GLOBAL_MANAGER_PASSWORD": "p",
            "NEAT_BRIDGE_TOKEN": "t",
        }
        loaded = config_from_mapping(config, "rendered", environ=environ)
        assert loaded.web_config_file == f"{WEB_DIR}/web-config.yml"


def endpoints(objects: list[dict]) -> dict[str, dict]:
    found = {}
    for kind, key in (("ServiceMonitor", "endpoints"), ("PodMonitor", "podMetricsEndpoints")):
        for monitor in (o for o in objects if o["kind"] == kind):
            component = monitor["metadata"]["labels"]["app.kubernetes.io/component"]
            (found[f"{kind}/{component}"],) = monitor["spec"][key]
    return found


def test_monitors_scrape_https_with_secret_references():
    scraped = endpoints(manifests(EVERYTHING))
    for name in ("ServiceMonitor/exporter", "PodMonitor/exporter"):
        endpoint = scraped[name]
        assert endpoint["scheme"] == "https"
        assert endpoint["tlsConfig"] == SCRAPE["tlsConfig"]
        assert endpoint["basicAuth"] == SCRAPE["basicAuth"]
    # webConfig.bridge is off there: the bridge stays on plain HTTP with its bearer token.
    bridge = scraped["ServiceMonitor/bridge"]
    assert "scheme" not in bridge and "tlsConfig" not in bridge

    scraped = endpoints(manifests(VALUE_SETS["web-config-existing-secret"]))
    assert set(scraped) == {
        "ServiceMonitor/exporter",
        "PodMonitor/exporter",
        "ServiceMonitor/bridge",
    }
    for endpoint in scraped.values():
        assert endpoint["scheme"] == "https"
        assert endpoint["tlsConfig"] == {"insecureSkipVerify": True}
        assert "basicAuth" not in endpoint
    assert (
        "scheme"
        not in endpoints(manifests({"serviceMonitor": {"enabled": True}}))[
            "ServiceMonitor/exporter"
        ]
    )


def test_probes_use_https_or_only_tcp_when_clients_must_authenticate():
    objects = manifests(VALUE_SETS["web-config-existing-secret"])
    for kind, component in (("DaemonSet", "exporter"), ("Deployment", "bridge")):
        _, container = container_of(objects, kind, component)
        for probe in ("livenessProbe", "readinessProbe"):
            assert container[probe]["httpGet"] == {
                "path": "/healthz",
                "port": "http",
                "scheme": "HTTPS",
            }
    assert only(objects, "Service", "exporter")["spec"]["ports"][0]["appProtocol"] == "https"

    # Basic auth: an HTTP probe would get 401, and credentials do not go into the pod spec.
    objects = manifests(EVERYTHING)
    _, container = container_of(objects, "DaemonSet", "exporter")
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["tcpSocket"] == {"port": "http"}
        assert "httpGet" not in container[probe]
    assert container["livenessProbe"]["initialDelaySeconds"] == 10  # the rest is kept
    _, bridge = container_of(objects, "Deployment", "bridge")
    assert bridge["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}


def web_config_values(pki: PKI, **config) -> dict:
    """Chart values for a chart-made web config with TLS, a client CA and basic auth."""
    return {
        "webConfig": {
            "enabled": True,
            "clientAuth": True,
            "config": {
                "tls_server_config": {
                    "cert_file": "tls.crt",
                    "key_file": f"{WEB_DIR}/tls.key",  # absolute names under the folder work too
                    "client_ca_file": "client-ca.crt",
                    "client_auth_type": "VerifyClientCertIfGiven",
                },
                "basic_auth_users": {"prometheus": SCRAPE_HASH},
                **config,
            },
            "files": {
                "tls.crt": pki.pem("server.crt"),
                "tls.key": pki.pem("server.key"),
                "client-ca.crt": pki.pem("client-ca.crt"),
            },
        }
    }


def test_chart_made_web_config_is_served_by_the_exporter(tmp_path):
    """The rendered Secret, written out as the kubelet would, serves HTTPS and basic auth."""
    pki = PKI(tmp_path / "pki")
    objects = manifests(web_config_values(pki))
    files = secret_data(objects, f"{RELEASE}-neat-exporter-web-config")
    folder = tmp_path / "web"
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text)
    # The pod's mount path, as the absolute key_file names it, is this folder here.
    config_file = folder / "web-config.yml"
    config_file.write_text(files["web-config.yml"].replace(WEB_DIR, str(folder)))
    web = load_web_config(config_file)
    assert web.tls is not None and set(web.basic_auth_users) == {"prometheus"}

    def metrics(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"neat_up 1\n"]

    server = serve_wsgi(metrics, "127.0.0.1:0", str(config_file))
    try:
        url = f"https://127.0.0.1:{server.address[1]}/metrics"
        ca = pki.path("server-ca.crt")
        assert requests.get(url, verify=ca, timeout=5).status_code == 401
        answer = requests.get(url, verify=ca, auth=("prometheus", SCRAPE_PASSWORD), timeout=5)
        assert answer.status_code == 200 and answer.text == "neat_up 1\n"
    finally:
        server.shutdown()


@pytest.mark.parametrize(
    ("web", "message"),
    [
        ({"tls": False}, r"webConfig\.tls is false but webConfig\.config has tls_server_config"),
        ({"clientAuth": False}, r"webConfig\.clientAuth must be true"),
        ({"bridge": True}, r"webConfig\.bridge: the bridge's bearer token"),
        ({"existingSecret": "mine"}, r"either existingSecret or config/files"),
        ({"config": {}, "files": {}}, r"needs webConfig\.existingSecret or webConfig\.config"),
    ],
)
def test_web_config_values_that_cannot_work_are_refused_by_name(web, message):
    values = json.loads(json.dumps(EVERYTHING))
    values["webConfig"].update(web)
    with (
        helm.Chart.load(str(CHART)) as chart,
        pytest.raises(helm.HelmRenderError, match=message),
    ):
        chart.render(values, name=RELEASE)


def test_web_config_schema_refuses_secrets_and_paths_it_cannot_take():
    with helm.Chart.load(str(CHART)) as chart:
        for bad in (
            {"config": {"web_config_file": "/etc/web.yml"}},  # set by the chart
            {"webConfig": {"config": {"basic_auth_users": {"prometheus": "plain-password"}}}},
            {"webConfig": {"config": {"tls_server_confg": {}}}},
            {"webConfig": {"files": {"web-config.yml": "x"}}},
            {"webConfig": {"files": {"../tls.key": "x"}}},
            {"webConfig": {"scrape": {"tlsConfig": {"keyFile": "/etc/key"}}}},
            {"webConfig": {"scrape": {"tlsConfig": {"ca": {"secret": {"name": "ca"}}}}}},
            {"webConfig": {"scrape": {"basicAuth": {"username": "prometheus"}}}},
            {"webConfig": {"scrape": {"basicAuth": {"username": SCRAPE["basicAuth"]["username"]}}}},
        ):
            with pytest.raises(helm.HelmValuesError):
                chart.validate_schema(bad)


def test_tls_values_in_the_deployment_guide_render():
    guide = (ROOT / "docs" / "deploy.md").read_text()
    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", guide, flags=re.DOTALL)]
    values = next(b for b in blocks if "webConfig" in b)
    with helm.Chart.load(str(CHART)) as chart:
        chart.validate_schema(values)
    objects = manifests({**values, "serviceMonitor": {"enabled": True}})
    pod, _ = container_of(objects, "DaemonSet", "exporter")
    sources = volumes_by_name(pod)["web-config"]["projected"]["sources"]
    assert {"secret": {"name": "neat-exporter-tls"}} in sources
    assert endpoints(objects)["ServiceMonitor/exporter"]["scheme"] == "https"


# --- the global manager ----------------------------------------------------------------------

GM = VALUE_SETS["global-manager"]
GM_STATE = "/var/lib/neat-global-manager"


def test_global_manager_is_off_by_default():
    for values in (VALUE_SETS["defaults"], EVERYTHING):
        objects = manifests(values)
        labels = [o["metadata"]["labels"].get("app.kubernetes.io/component") for o in objects]
        assert "global-manager" not in labels


def test_global_manager_runs_once_recreated_and_locked_down():
    objects = manifests(GM)
    deployment = only(objects, "Deployment", "global-manager")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod, container = container_of(objects, "Deployment", "global-manager")
    assert container["command"] + container["args"] == [
        "neat-exporter",
        "global-manager",
        "--config",
        "/etc/neat-exporter/config.yml",
    ]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["ports"] == [{"name": "http", "containerPort": 60080, "protocol": "TCP"}]
    service = only(objects, "Service", "global-manager")
    assert service["spec"]["ports"][0]["port"] == 60080
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    # The notes tell where to point the exporters.
    url = f"http://{service['metadata']['name']}.{NAMESPACE}.svc:60080/"
    assert f"Global manager (libvirt): {url}" in render(GM)["neat-exporter/templates/NOTES.txt"]


def test_global_manager_config_is_accepted_by_its_own_parser(tmp_path):
    """The rendered file, read by the global manager's loader and by its --check-config."""
    from neat_exporter.globalmanager.config import load_settings

    objects = manifests(GM)
    config = rendered_config(objects, "global-manager")
    assert config["listen"] == ":60080"
    assert config["state_file"] == f"{GM_STATE}/state.json"
    assert config["audit_log"] == f"{GM_STATE}/audit.jsonl"
    # The credential files are where the shared Secret is mounted, under the names it gives.
    pod, container = container_of(objects, "Deployment", "global-manager")
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    items = volumes_by_name(pod)["credentials"]["secret"]["items"]
    assert {f"{mounts['credentials']}/{item['path']}" for item in items} == {
        config["username_file"],
        config["password_file"],
    }
    assert mounts["state"] == GM_STATE
    # As the pod would read it: the Secret's files under a folder standing in for the mount.
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "username").write_text(USERNAME)
    (credentials / "password").write_text(PASSWORD)
    local = dict(config, username_file=str(credentials / "username"))
    local["password_file"] = str(credentials / "password")
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(local))
    settings = load_settings(path, environ={})
    assert settings.username.get_secret_value() == USERNAME
    assert settings.password.get_secret_value() == PASSWORD
    assert settings["executor.type"] == "libvirt"
    assert settings["executor.libvirt.uri_template"] == "qemu+tls://{host}/system"
    assert settings["executor.libvirt.max_total"] == 4
    assert settings["prometheus.url"] == "http://prometheus-operated.monitoring.svc:9090"
    assert settings["policy.never_switch_off"] == ("compute-0*",)
    argv = [sys.executable, "-m", "neat_exporter", "global-manager", "--config", str(path)]
    check = subprocess.run([*argv, "--check-config"], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    assert PASSWORD not in check.stdout + check.stderr


def test_global_manager_default_config_is_accepted(tmp_path):
    """The chart's defaults alone: dry_run, no power backend."""
    from neat_exporter.globalmanager.config import load_settings

    values = {"globalManager": {"enabled": True}, "credentials": {"existingSecret": "creds"}}
    config = rendered_config(manifests(values), "global-manager")
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(config))
    environ = {"NEAT_GLOBAL_MANAGER_USERNAME": "u", "NEAT_GLOBAL_MANAGER_PASSWORD": "p"}
    settings = load_settings(path, environ=environ)
    assert settings["executor.type"] == "dry_run"
    assert settings["power.backend"] == "none"


def test_global_manager_state_volume():
    objects = manifests(GM)
    pod, _ = container_of(objects, "Deployment", "global-manager")
    claim = only(objects, "PersistentVolumeClaim", "global-manager")
    assert volumes_by_name(pod)["state"] == {
        "name": "state",
        "persistentVolumeClaim": {"claimName": claim["metadata"]["name"]},
    }
    assert claim["spec"]["storageClassName"] == "fast"
    assert claim["spec"]["resources"]["requests"]["storage"] == "2Gi"
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    existing = json.loads(json.dumps(GM))
    existing["globalManager"]["persistence"]["existingClaim"] = "gm-state"
    objects = manifests(existing)
    assert not [o for o in objects if o["kind"] == "PersistentVolumeClaim"]
    pod, _ = container_of(objects, "Deployment", "global-manager")
    assert volumes_by_name(pod)["state"]["persistentVolumeClaim"] == {"claimName": "gm-state"}
    values = {"globalManager": {"enabled": True}, "credentials": {"existingSecret": "creds"}}
    pod, _ = container_of(manifests(values), "Deployment", "global-manager")
    assert "emptyDir" in volumes_by_name(pod)["state"]


def test_global_manager_secret_files_are_mounted_read_only():
    pod, container = container_of(manifests(GM), "Deployment", "global-manager")
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["secret-files"] == {
        "name": "secret-files",
        "mountPath": "/etc/neat-exporter/secrets",
        "readOnly": True,
    }
    assert volumes_by_name(pod)["secret-files"]["secret"]["secretName"] == "neat-bmc"
    assert "env" not in container


def test_global_manager_is_scraped_as_the_rules_expect():
    (endpoint,) = only(manifests(GM), "ServiceMonitor", "global-manager")["spec"]["endpoints"]
    assert endpoint["relabelings"] == [{"targetLabel": "job", "replacement": "neat-global-manager"}]
    rules = (ROOT / "alerts" / "neat-global-manager.rules.yml").read_text()
    assert 'up{job="neat-global-manager"}' in rules


def test_global_manager_served_with_the_web_config():
    values = json.loads(json.dumps(GM))
    values["webConfig"] = {
        "enabled": True,
        "globalManager": True,
        "existingSecret": "neat-web-config",
        "scrape": {"tlsConfig": {"insecureSkipVerify": True}},
    }
    objects = manifests(values)
    _, container = container_of(objects, "Deployment", "global-manager")
    assert config_file(objects) == f"{WEB_DIR}/web-config.yml"
    assert container["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    (endpoint,) = only(objects, "ServiceMonitor", "global-manager")["spec"]["endpoints"]
    assert endpoint["scheme"] == "https"
    # Off by default even with a web config: its clients would need https.
    values["webConfig"].pop("globalManager")
    assert "web_config_file" not in rendered_config(manifests(values), "global-manager")


def config_file(objects: list[dict]) -> str:
    return rendered_config(objects, "global-manager")["web_config_file"]


def test_global_manager_without_credentials_is_refused_by_name():
    with (
        helm.Chart.load(str(CHART)) as chart,
        pytest.raises(helm.HelmRenderError, match=r"globalManager\.enabled needs credentials"),
    ):
        chart.render({"globalManager": {"enabled": True}}, name=RELEASE)


def test_global_manager_schema_refuses_what_the_chart_sets_and_inline_secrets():
    with helm.Chart.load(str(CHART)) as chart:
        for bad in (
            {"globalManager": {"config": {"listen": ":1"}}},
            {"globalManager": {"config": {"state_file": "/tmp/state"}}},
            {"globalManager": {"config": {"password_file": "/tmp/pw"}}},
            {"globalManager": {"config": {"hosts": {"c1": {"redfish": {"password": "x"}}}}}},
            {"globalManager": {"config": {"prometheus": {"url": "prometheus:9090"}}}},
            {"globalManager": {"replicas": 2}},
            {"globalManager": {"persistence": {"size": "lots"}}},
        ):
            with pytest.raises(helm.HelmValuesError):
                chart.validate_schema(bad)
        chart.validate_schema(GM)


def test_global_manager_values_in_the_deployment_guide_render_and_parse(tmp_path):
    from neat_exporter.globalmanager.config import load_settings

    guide = (ROOT / "docs" / "deploy.md").read_text()
    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", guide, flags=re.DOTALL)]
    values = next(b for b in blocks if "globalManager" in b)
    base = next(b for b in blocks if "serviceMonitor" in b)
    merged = {**base, **values, "config": {**base["config"], **values["config"]}}
    with helm.Chart.load(str(CHART)) as chart:
        chart.validate_schema(merged)
    objects = manifests(merged)
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(rendered_config(objects, "global-manager")))
    environ = {"NEAT_GLOBAL_MANAGER_USERNAME": "u", "NEAT_GLOBAL_MANAGER_PASSWORD": "p"}
    settings = load_settings(path, environ=environ)
    assert settings["executor.type"] == "dry_run"
    # The exporters' URL is the global manager's Service, at its port, in the guide's release.
    service = only(objects, "Service", "global-manager")
    url = rendered_config(objects, "exporter")["global_manager"]["url"]
    name = service["metadata"]["name"].replace(RELEASE, "neat", 1)
    port = service["spec"]["ports"][0]["port"]
    assert url == f"http://{name}.{NAMESPACE}.svc:{port}/"
    assert only(objects, "ServiceMonitor", "global-manager")
