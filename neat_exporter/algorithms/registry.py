"""Creating algorithms by name, as Neat's configuration names its factories.

Names are Neat's factory names without ``_factory`` (``mhod``, ``last_n_average_threshold``,
...); ``threshold`` and ``last_n_average_threshold`` exist for both underload and overload, the
kind decides. Neat's dotted paths (``neat.locals.overload.mhod.core.mhod_factory``) are
accepted too, so an existing ``neat.conf`` works unchanged.

Third-party algorithms are found through the entry-point group ``neat_exporter.algorithms``
with names ``<kind>.<name>``; the entry point is a factory with Neat's signature
``factory(time_step, migration_time, params)`` returning Neat's ``(result, state)`` callable.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from importlib.metadata import entry_points
from typing import Any

from neat_exporter.algorithms import overload, placement, selection, underload
from neat_exporter.algorithms.base import KINDS, Detection
from neat_exporter.algorithms.params import as_history
from neat_exporter.errors import ParameterError

ENTRY_POINT_GROUP = "neat_exporter.algorithms"

_BUILTIN: dict[str, dict[str, type]] = {
    kind: {algorithm.name: algorithm for algorithm in algorithms}
    for kind, algorithms in (
        ("underload", underload.ALGORITHMS),
        ("overload", overload.ALGORITHMS),
        ("vm_selection", selection.ALGORITHMS),
        ("vm_placement", placement.ALGORITHMS),
    )
}

# Neat's modules and the kind of the factories they hold.
_NEAT_MODULES = {
    "neat.locals.underload.trivial": "underload",
    "neat.locals.overload.trivial": "overload",
    "neat.locals.overload.statistics": "overload",
    "neat.locals.overload.otf": "overload",
    "neat.locals.overload.mhod.core": "overload",
    "neat.locals.vm_selection.algorithms": "vm_selection",
    "neat.globals.vm_placement.bin_packing": "vm_placement",
}


def _plugins(kind: str) -> dict[str, Any]:
    found = {}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        plugin_kind, _, name = entry.name.partition(".")
        if plugin_kind == kind and name:
            found[name] = entry
    return found


def available(kind: str | None = None) -> dict[str, list[str]]:
    """Algorithm names per kind (built-in and plug-in), or for one kind."""
    kinds = KINDS if kind is None else (_check_kind(kind),)
    return {k: sorted({*_BUILTIN[k], *_plugins(k)}) for k in kinds}


def _check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ParameterError(str(kind), None, f"unknown algorithm kind (known: {', '.join(KINDS)})")
    return kind


def _short_name(kind: str, name: str) -> str:
    """Neat's factory name or dotted path -> the registry's name for ``kind``."""
    if not isinstance(name, str) or not name:
        raise ParameterError(kind, None, f"algorithm name must be a non-empty string, got {name!r}")
    module, _, function = name.rpartition(".")
    if module:
        module_kind = _NEAT_MODULES.get(module)
        if module_kind is None:
            raise ParameterError(f"{kind}.{name}", None, "unknown algorithm (not a Neat module)")
        if module_kind != kind:
            raise ParameterError(f"{kind}.{name}", None, f"is a {module_kind} algorithm")
    return function.removesuffix("_factory")


def build(
    kind: str,
    name: str,
    params: Mapping[str, Any] | None = None,
    *,
    time_step: float = 300,
    migration_time: float = 20.0,
) -> Any:
    """Create the algorithm ``name`` of ``kind`` with ``params``.

    Raises ParameterError naming the algorithm (and the parameter) for an unknown name, a
    missing or unknown parameter, or a value of the wrong type or out of range.
    """
    _check_kind(kind)
    short = _short_name(kind, name)
    builtin = _BUILTIN[kind].get(short)
    if builtin is not None:
        return builtin(params, time_step=time_step, migration_time=migration_time)
    entry = _plugins(kind).get(short)
    if entry is None:
        known = ", ".join(available(kind)[kind])
        raise ParameterError(f"{kind}.{short}", None, f"unknown algorithm (known: {known})")
    return _build_plugin(kind, short, entry, params, time_step, migration_time)


def _build_plugin(
    kind: str,
    name: str,
    entry: Any,
    params: Mapping[str, Any] | None,
    time_step: float,
    migration_time: float,
) -> Any:
    algorithm = f"{kind}.{name}"
    try:
        factory = entry.load()
        function = factory(time_step, migration_time, dict(params or {}))
    except ParameterError:
        raise
    except Exception as error:
        raise ParameterError(algorithm, None, f"plug-in {entry.value} failed: {error!r}") from None
    if not callable(function):
        raise ParameterError(algorithm, None, f"plug-in {entry.value} did not return a callable")
    if kind in ("underload", "overload"):
        return PluginDetector(kind, name, function)
    if kind == "vm_selection":
        return PluginSelector(name, function)
    return PluginPlacer(name, function)


class PluginDetector:
    """A plug-in detector with the built-ins' interface; it explains nothing (input and
    threshold None, always ready)."""

    def __init__(self, kind: str, name: str, function: Callable[..., tuple[Any, Any]]):
        self.kind, self.name, self.function = kind, name, function

    def evaluate(self, utilization: Sequence[float], state: Any = None) -> Detection:
        history = as_history(utilization).tolist()
        decision, state = self.function(history, state)
        return Detection(bool(decision), state)

    def __call__(self, utilization: Sequence[float], state: Any = None) -> tuple[bool, Any]:
        detection = self.evaluate(utilization, state)
        return detection.decision, detection.state


class PluginSelector:
    kind = "vm_selection"

    def __init__(self, name: str, function: Callable[..., tuple[Any, Any]]):
        self.name, self.function = name, function

    def __call__(self, vms_cpu_mhz, vms_ram_mb, state: Any = None) -> tuple[list[str], Any]:
        selected, state = self.function(vms_cpu_mhz, vms_ram_mb, state)
        return [str(uuid) for uuid in (selected or [])], state


class PluginPlacer:
    kind = "vm_placement"

    def __init__(self, name: str, function: Callable[..., tuple[Any, Any]]):
        self.name, self.function = name, function

    def __call__(self, *args: Any, **kwargs: Any) -> tuple[dict[str, str], Any]:
        mapping, state = self.function(*args, **kwargs)
        return dict(mapping or {}), state
