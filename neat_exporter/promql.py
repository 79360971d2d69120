"""A small client for the Prometheus HTTP API (instant and range queries).

Works against anything that speaks that API: Prometheus itself, Thanos Query, Mimir,
VictoriaMetrics. Every failure (connection, HTTP status, an answer that is not the API's, a query
error) raises :class:`PrometheusError` with one line naming the server and the reason.

    api = PrometheusAPI("http://localhost:9090")
    for sample in api.query('neat_host_info'):
        sample.labels["host"], sample.value
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import requests

from neat_exporter.errors import InputError, innermost_cause


class PrometheusError(InputError):
    """Prometheus could not be asked, or refused the query."""


@dataclass(frozen=True)
class Sample:
    """One series of an instant vector: its labels, the value and the sample's time stamp."""

    labels: Mapping[str, str]
    value: float
    timestamp: float


@dataclass(frozen=True)
class RangeSeries:
    """One series of a range query: its labels and (time stamp, value) pairs, oldest first."""

    labels: Mapping[str, str]
    values: tuple[tuple[float, float], ...]


def quote(value: str) -> str:
    """A PromQL string literal (its escapes are JSON's), safe for any label value."""
    return json.dumps(value)


class PrometheusAPI:
    """Queries one Prometheus-compatible endpoint; ``url`` is its base (``http://host:9090``)."""

    def __init__(
        self, url: str, timeout: float = 10.0, session: requests.Session | None = None
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.session = session or requests.Session()

    def query(self, expr: str, at: float | None = None) -> list[Sample]:
        """The instant vector of ``expr`` (at ``at``, or Prometheus' now)."""
        params: dict[str, Any] = {"query": expr}
        if at is not None:
            params["time"] = at
        data = self._get("query", params, expr)
        if data.get("resultType") != "vector":
            raise PrometheusError(
                f"Prometheus at {self.url}: {expr!r} gave a {data.get('resultType')}, "
                "not an instant vector"
            )
        try:
            return [
                Sample(dict(series["metric"]), float(series["value"][1]), float(series["value"][0]))
                for series in data.get("result", [])
            ]
        except (KeyError, IndexError, TypeError, ValueError) as error:
            raise PrometheusError(self._malformed(expr, error)) from None

    def query_raw(self, expr: str, at: float | None = None) -> list[RangeSeries]:
        """The raw samples of a range selector (``metric[5m]``) at ``at``: a range vector."""
        params: dict[str, Any] = {"query": expr}
        if at is not None:
            params["time"] = at
        data = self._get("query", params, expr)
        if data.get("resultType") != "matrix":
            raise PrometheusError(
                f"Prometheus at {self.url}: {expr!r} gave a {data.get('resultType')}, "
                "not a range vector"
            )
        return self._matrix(data, expr)

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[RangeSeries]:
        """The matrix of ``expr`` from ``start`` to ``end`` every ``step`` seconds."""
        params = {"query": expr, "start": start, "end": end, "step": step}
        return self._matrix(self._get("query_range", params, expr), expr)

    def _get(self, endpoint: str, params: Mapping[str, Any], expr: str) -> dict[str, Any]:
        where = f"Prometheus at {self.url}"
        try:
            response = self.session.get(
                f"{self.url}/api/v1/{endpoint}", params=params, timeout=self.timeout
            )
        except requests.RequestException as error:
            raise PrometheusError(f"{where}: cannot query: {innermost_cause(error)}") from None
        try:
            body = response.json()
        except ValueError:
            raise PrometheusError(
                f"{where}: HTTP {response.status_code} and not a Prometheus API answer "
                "(is this the Prometheus base URL?)"
            ) from None
        if not isinstance(body, dict) or body.get("status") != "success":
            error = body.get("error", "no error message") if isinstance(body, dict) else body
            kind = body.get("errorType", "error") if isinstance(body, dict) else "error"
            raise PrometheusError(f"{where}: query {expr!r} failed: {kind}: {error}")
        data = body.get("data")
        if not isinstance(data, dict):
            raise PrometheusError(f"{where}: answer without data for {expr!r}")
        return data

    def _matrix(self, data: Mapping[str, Any], expr: str) -> list[RangeSeries]:
        try:
            return [
                RangeSeries(
                    dict(series["metric"]),
                    tuple((float(t), float(v)) for t, v in series["values"]),
                )
                for series in data.get("result", [])
            ]
        except (KeyError, TypeError, ValueError) as error:
            raise PrometheusError(self._malformed(expr, error)) from None

    def _malformed(self, expr: str, error: Exception) -> str:
        return f"Prometheus at {self.url}: malformed answer to {expr!r} ({error!r:.80})"

    def close(self) -> None:
        self.session.close()
