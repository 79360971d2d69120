"""The words every layer shares, defined once below all of them.

The local manager's algorithm kinds and their configurations (what the configuration file, the
daemon, replay and the simulator name an algorithm by), how an algorithm is written on a command
line (``mhod otf=0.2``), and why a host asks the global manager for migrations (Neat's
``reason``: what the exporter, the bridge and the global manager send and read).
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from neat_exporter.algorithms import KINDS, build
from neat_exporter.errors import ConfigError

ALGORITHM_KINDS = tuple(kind for kind in KINDS if kind != "vm_placement")
"""The algorithms of the local manager, as the fields of :class:`AlgorithmSet` name them."""


@dataclass(frozen=True, slots=True)
class AlgorithmConfig:
    """An algorithm by name with its parameters, as configured."""

    name: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def validate(self, kind: str, time_step: float) -> None:
        """Build the algorithm once so a bad name or parameter fails at start, not mid-run. The
        migration time is a stand-in: the real one is known only at the first step."""
        build(kind, self.name, self.params, time_step=time_step, migration_time=1.0)


@dataclass(frozen=True, slots=True)
class AlgorithmSet:
    underload: AlgorithmConfig
    overload: AlgorithmConfig
    vm_selection: AlgorithmConfig

    def validate(self, time_step: float) -> None:
        """Build each algorithm once so bad names and parameters fail at start, not mid-run."""
        for kind in ALGORITHM_KINDS:
            getattr(self, kind).validate(kind, time_step)


class Reason(enum.IntEnum):
    """Neat's ``reason`` field: why a host asks for migrations; the lower-case name is the
    label metrics and alerts use."""

    UNDERLOAD = 0
    OVERLOAD = 1

    @property
    def label(self) -> str:
        return self.name.lower()


# --- algorithms written on a command line ------------------------------------------------------

SPEC_FLAGS = {
    "underload": "--underload",
    "overload": "--overload",
    "vm_selection": "--vm-selection",
}


@dataclass(frozen=True)
class AlgorithmSpec:
    """An algorithm given on the command line: ``NAME``, ``NAME key=value ...`` (values in YAML
    syntax: ``otf=0.2 state_config=[1.0]``) or ``NAME:{JSON params}``."""

    kind: str
    text: str
    name: str
    params: Mapping[str, Any]


def parse_spec(kind: str, text: str) -> AlgorithmSpec:
    flag = SPEC_FLAGS[kind]
    text = text.strip()
    if not text:
        raise ConfigError(flag, "empty; give an algorithm name, e.g. 'mhod otf=0.2'")
    json_form = ":" in text.split()[0]
    head, _, rest = text.partition(":" if json_form else " ")
    name = head.strip()
    params: Any
    if json_form:
        try:
            params = json.loads(rest) if rest.strip() else {}
        except json.JSONDecodeError as error:
            raise ConfigError(flag, f"{text!r}: parameters are not JSON: {error}") from None
        if not isinstance(params, dict):
            raise ConfigError(flag, f"{text!r}: parameters must be a JSON object")
    else:
        params = {}
        for item in rest.split():
            key, equals, value = item.partition("=")
            if not equals or not key:
                raise ConfigError(flag, f"{text!r}: expected key=value, got {item!r}")
            try:
                params[key] = yaml.safe_load(value)
            except yaml.YAMLError:
                raise ConfigError(flag, f"{text!r}: cannot read the value of {key}") from None
    return AlgorithmSpec(kind=kind, text=" ".join(text.split()), name=name, params=params)
