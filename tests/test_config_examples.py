"""The example configuration files document exactly the declared keys, and are valid."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from neat_exporter.config import Config, effective_config, load_config
from neat_exporter.config.declare import declared_keys
from neat_exporter.errors import ConfigError
from neat_exporter.globalmanager.config import GlobalManagerFile, effective_settings, load_settings
from neat_exporter.globalmanager.power import build_power_backend

ROOT = Path(__file__).resolve().parent.parent
SECRETS = {"NEAT_GLOBAL_MANAGER_USERNAME": "admin", "NEAT_GLOBAL_MANAGER_PASSWORD": "pw"}


def example_keys(tree: dict[str, Any], leaves: set[str], prefix: str = "") -> set[str]:
    """The dotted keys of a YAML tree, not descending into declared values (``hosts: {...}``)."""
    found = set()
    for name, value in tree.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict) and key not in leaves:
            found |= example_keys(value, leaves, f"{key}.")
        else:
            found.add(key)
    return found


@pytest.mark.parametrize(
    ("example", "declaration"),
    [("config.example.yml", Config), ("global-manager.example.yml", GlobalManagerFile)],
)
def test_every_declared_key_is_in_the_example_and_nothing_else(example, declaration):
    declared = {key.dotted for key in declared_keys(declaration)}
    documented = example_keys(yaml.safe_load((ROOT / example).read_text()), declared)
    assert sorted(declared - documented) == [], f"keys missing from {example}"
    assert sorted(documented - declared) == [], f"keys in {example} that are not declared"


def test_the_examples_are_valid_and_show_the_defaults():
    assert effective_config(load_config(ROOT / "config.example.yml")) == effective_config(
        load_config(None)
    )
    settings = load_settings(ROOT / "global-manager.example.yml", {}, SECRETS)
    assert effective_settings(settings) == effective_settings(load_settings(None, {}, SECRETS))


def test_the_policy_example_is_made_of_declared_keys():
    """config.esv-best.example.yml is merged into a configuration: a few keys, all declared."""
    path = ROOT / "config.esv-best.example.yml"
    declared = {key.dotted for key in declared_keys(Config)}
    assert example_keys(yaml.safe_load(path.read_text()), declared) <= declared
    assert load_config(path).algorithms.overload.name == "threshold"


def test_the_commented_hosts_example_is_valid():
    """global-manager.example.yml's commented ``hosts:`` example, uncommented, is accepted: each
    host with its own backend (compute-1's password file exists only on a real controller)."""
    text = (ROOT / "global-manager.example.yml").read_text().split("\nhosts: {}\n", 1)[1]
    lines = [line[1:] for line in text.splitlines() if line.startswith("#  ")]
    hosts = yaml.safe_load("\n".join(lines))
    assert sorted(hosts) == ["compute-1", "compute-2", "compute-3"]
    environ = {**SECRETS, "BMC_2_PASSWORD": "pw"}
    for name, entry in hosts.items():
        (backend,) = entry
        overrides = {"power.backend": backend, "hosts": {name: entry}}
        if backend == "redfish":
            with pytest.raises(ConfigError, match=r"^hosts\.compute-1\.redfish\.password_file: "):
                load_settings(None, overrides, environ)
        else:
            settings = load_settings(None, overrides, environ)
            assert build_power_backend(backend, settings["hosts"]).targets[name]
