"""Creating algorithms by name (placeholder: the algorithm library replaces this module)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def available(kind: str | None = None) -> dict[str, list[str]]:
    raise NotImplementedError


def build(
    kind: str,
    name: str,
    params: Mapping[str, Any] | None = None,
    *,
    time_step: float = 300,
    migration_time: float = 20.0,
) -> Any:
    raise NotImplementedError
