"""Parameter validation for the algorithms and checks of the data they are given.

Every algorithm declares its parameters as a mapping ``name -> Param``; :func:`validate` turns
the user's mapping into a complete, checked one or raises one :class:`ParameterError` naming the
algorithm and the parameter. Data (utilization histories) that is not finite raises
:class:`InputError` instead: bad data is not a configuration mistake.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from neat_exporter.errors import InputError, ParameterError

REQUIRED = object()
"""Marks a parameter without a default."""

Check = Callable[[str, str, Any], Any]
"""``check(algorithm, parameter, value) -> cleaned value``; raises ParameterError."""


@dataclass(frozen=True, slots=True)
class Param:
    check: Check
    default: Any = REQUIRED


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)


def real(
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> Check:
    """A finite real number within [low, high] (ends excluded when ``*_open``)."""

    def check(algorithm: str, name: str, value: Any) -> float:
        if not _is_number(value):
            raise ParameterError(algorithm, name, f"must be a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise ParameterError(algorithm, name, f"must be finite, got {value!r}")
        if low is not None and (value < low or (low_open and value == low)):
            raise ParameterError(algorithm, name, f"must be {'>' if low_open else '>='} {low}")
        if high is not None and (value > high or (high_open and value == high)):
            raise ParameterError(algorithm, name, f"must be {'<' if high_open else '<='} {high}")
        return value

    return check


def integer(low: int | None = None) -> Check:
    """An integer >= low (floats with an integral value, as JSON may give, are accepted)."""

    def check(algorithm: str, name: str, value: Any) -> int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, numbers.Integral) or isinstance(value, bool | np.bool_):
            raise ParameterError(algorithm, name, f"must be an integer, got {value!r}")
        value = int(value)
        if low is not None and value < low:
            raise ParameterError(algorithm, name, f"must be >= {low}, got {value}")
        return value

    return check


def sequence_of(item: Check, *, min_length: int = 1, max_length: int | None = None) -> Check:
    """A list of items each passing ``item``; returned as a tuple."""

    def check(algorithm: str, name: str, value: Any) -> tuple:
        if isinstance(value, str | bytes) or not isinstance(value, Sequence | np.ndarray):
            raise ParameterError(algorithm, name, f"must be a list, got {value!r}")
        if len(value) < min_length:
            raise ParameterError(algorithm, name, f"must have at least {min_length} item(s)")
        if max_length is not None and len(value) > max_length:
            raise ParameterError(algorithm, name, f"must have at most {max_length} item(s)")
        return tuple(item(algorithm, f"{name}[{i}]", v) for i, v in enumerate(value))

    return check


def validate(
    algorithm: str, spec: Mapping[str, Param], params: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Complete ``params`` with the defaults of ``spec`` and check every value."""
    if params is None:
        params = {}
    if not isinstance(params, Mapping):
        raise ParameterError(algorithm, None, f"parameters must be a mapping, got {params!r}")
    unknown = sorted(str(key) for key in params if key not in spec)
    if unknown:
        known = ", ".join(spec) or "none"
        raise ParameterError(algorithm, unknown[0], f"unknown parameter (known: {known})")
    cleaned = {}
    for name, param in spec.items():
        if name in params:
            cleaned[name] = param.check(algorithm, name, params[name])
        elif param.default is REQUIRED:
            raise ParameterError(algorithm, name, "missing required parameter")
        else:
            cleaned[name] = param.default
    return cleaned


def as_history(values: Any, what: str = "utilization") -> np.ndarray:
    """A 1-D float array of finite values, oldest first; InputError naming ``what`` otherwise."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise InputError(f"{what}: not a sequence of numbers ({error})") from None
    if array.ndim != 1:
        raise InputError(f"{what}: must be a flat sequence of numbers, got shape {array.shape}")
    if not np.isfinite(array).all():
        bad = int(np.flatnonzero(~np.isfinite(array))[0])
        raise InputError(f"{what}: value {array[bad]!r} at index {bad} is not finite")
    return array


def as_histories(series: Mapping[str, Any], what: str) -> dict[str, np.ndarray]:
    """:func:`as_history` of every value, named ``what[key]`` in errors. Float arrays (what the
    daemon's history hands over) are checked all at once, not one by one."""
    values = list(series.values())
    arrays = all(
        isinstance(v, np.ndarray) and v.ndim == 1 and v.dtype == np.float64 for v in values
    )
    if arrays and (not values or np.isfinite(np.concatenate(values)).all()):
        return dict(zip(series, values, strict=True))
    return {key: as_history(value, f"{what}[{key!r}]") for key, value in series.items()}


def sequential_sum(values: np.ndarray) -> float:
    """Left-to-right float sum, as Python 2's ``sum`` (numpy's ``sum`` is pairwise and
    Python 3.12's is compensated; either can differ in the last bit and flip a tie)."""
    return float(np.cumsum(values)[-1]) if len(values) else 0.0
