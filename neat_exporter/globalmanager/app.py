"""The global manager's WSGI app: Neat's ``PUT /``, ``/metrics``, ``/healthz`` and a landing page.

``PUT /`` is validated as ``neat/globals/manager.py`` does it, in the same order: no username or
password → 401; digests that do not match SHA-1 of the admin user and password → 403; a missing
``reason``, ``time`` or ``host``, a reason other than 0/1, or reason 1 without ``vm_uuids`` →
400; a time stamp more than 5 s old → 412. Where Neat answered 500 (a ``time`` or ``reason``
that is not a number) this answers 400, and fields of absurd size are 400 too. ``GET /`` shows
the landing page (Neat answered 405); every other method on ``/`` is 405.
"""

from __future__ import annotations

import hmac
import html
import json
import logging
import math
import time
from collections.abc import Callable, Iterable
from http import HTTPStatus
from urllib.parse import parse_qsl

from prometheus_client import CollectorRegistry, make_wsgi_app

from neat_exporter import __version__
from neat_exporter.actions import Credentials
from neat_exporter.globalmanager.service import GlobalManagerService
from neat_exporter.vocabulary import Reason

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1 << 20
MAX_HOST_CHARS = 255
MAX_VMS = 10_000
MAX_CLOCK_SKEW = 5.0  # Neat's: a request older than 5 s is refused with 412


class GlobalManagerApp:
    def __init__(
        self,
        service: GlobalManagerService,
        credentials: Credentials,
        registry: CollectorRegistry,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.service = service
        self._credentials = credentials
        self._clock = clock
        self._metrics_app = make_wsgi_app(registry)

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        method = environ.get("REQUEST_METHOD", "GET")
        if path == "/":
            if method == "PUT":
                return self._put(environ, start_response)
            if method in ("GET", "HEAD"):
                return _respond(start_response, 200, self._landing(), "text/html; charset=utf-8")
            return _respond(start_response, 405, "method not allowed", extra=[("Allow", "PUT")])
        if path == "/metrics":
            return self._metrics_app(environ, start_response)
        if path == "/healthz":
            return _respond(start_response, 200, "ok")
        if path == "/api/status":
            return _respond(start_response, 200, json.dumps(self.status()), "application/json")
        return _respond(start_response, 404, "not found")

    # --- PUT / ----------------------------------------------------------------------------

    def _put(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        started = time.monotonic()
        status, message, request = self._validate(environ)
        if status == 200:
            answer = self.service.handle(request.host, request.reason, request.vm_uuids)
            status, message = answer.status, answer.message
            label = request.reason.label
            self.service.metrics.request_duration.labels(label).observe(time.monotonic() - started)
        else:
            label = request.reason.label if request is not None else "invalid"
            self.service.audit.event("refused", code=status, detail=message)
            log.warning("refused a request: %d %s", status, message)
        self.service.metrics.requests.labels(label, str(status)).inc()
        return _respond(start_response, status, message)

    def _validate(self, environ: dict) -> tuple[int, str, _Request | None]:
        length = environ.get("CONTENT_LENGTH") or "0"
        if not length.isdigit():
            return 400, "bad Content-Length", None
        if int(length) > MAX_BODY_BYTES:
            return 413, f"body over {MAX_BODY_BYTES} bytes", None
        body = environ["wsgi.input"].read(int(length)) if int(length) else b""
        try:
            form = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        except (UnicodeDecodeError, ValueError):
            return 400, "body is not a form (application/x-www-form-urlencoded, UTF-8)", None
        if "username" not in form or "password" not in form:
            return 401, "username and password are required", None
        expected = self._credentials
        user_ok = hmac.compare_digest(form["username"].encode(), expected.username_sha1.encode())
        password_ok = hmac.compare_digest(
            form["password"].encode(), expected.password_sha1.encode()
        )
        if not (user_ok and password_ok):
            return 403, "username and/or password do not match", None
        if "reason" not in form or "time" not in form or "host" not in form:
            return 400, "reason, time and host are required", None
        try:
            sent = float(form["time"])
            reason_code = int(form["reason"])
        except ValueError:
            return 400, "time and reason must be numbers", None
        if reason_code not in (0, 1) or not math.isfinite(sent):
            return 400, "reason must be 0 (underload) or 1 (overload)", None
        reason = Reason(reason_code)
        host = form["host"]
        if not host or len(host) > MAX_HOST_CHARS or not host.isprintable():
            return 400, "host must be a printable name", None
        vm_uuids = [uuid for uuid in form.get("vm_uuids", "").split(",") if uuid]
        if reason is Reason.OVERLOAD and "vm_uuids" not in form:
            return 400, "reason 1 (overload) needs vm_uuids", None
        if len(vm_uuids) > MAX_VMS or not all(
            len(uuid) <= 64 and uuid.isprintable() for uuid in vm_uuids
        ):
            return 400, "vm_uuids must be at most 10000 printable identifiers", None
        request = _Request(host, reason, vm_uuids)
        if sent + MAX_CLOCK_SKEW < self._clock():
            return 412, "request older than 5 s: synchronise the clocks (NTP)", request
        return 200, "", request

    # --- status and landing page -----------------------------------------------------------

    def status(self) -> dict:
        """What the landing page shows, as JSON."""
        service = self.service
        fleet = service.fleet_for_display()
        sleeping = service.state.sleeping
        power = service.power_states()
        hosts = []
        for name in sorted(set(fleet.hosts if fleet else ()) | set(sleeping)):
            host = fleet.hosts.get(name) if fleet else None
            hosts.append(
                {
                    "host": name,
                    "state": "asleep" if name in sleeping else "active",
                    "power": str(power.get(name, "")),
                    "vms": len(host.vms) if host else 0,
                    "problems": [p.detail for p in host.problems] if host else [],
                }
            )
        plans = []
        for record in list(service.plans):
            plan = record.plan
            plans.append(
                {
                    "time": record.time,
                    "host": plan.host,
                    "reason": plan.reason.label,
                    "result": record.result,
                    "detail": plan.detail,
                    "wake": list(plan.wake),
                    "switch_off": list(plan.switch_off),
                    "power": list(record.power),
                    "migrations": [
                        {
                            "vm_uuid": r.migration.vm_uuid,
                            "source": r.migration.source,
                            "destination": r.migration.destination,
                            "outcome": r.outcome.value,
                            "seconds": round(r.seconds, 2),
                            "error": r.error,
                        }
                        for r in list(record.results)
                    ],
                    "planned": [
                        {"vm_uuid": m.vm_uuid, "destination": m.destination}
                        for m in plan.migrations
                    ],
                }
            )
        return {"executor": service.executor.name, "hosts": hosts, "plans": plans}

    def _landing(self) -> str:
        status = self.status()
        e = html.escape
        rows = "".join(
            f"<tr><td>{e(h['host'])}</td><td>{e(h['state'])}</td><td>{e(h['power'])}</td>"
            f"<td>{h['vms']}</td><td>{e('; '.join(h['problems']))}</td></tr>"
            for h in status["hosts"]
        )
        plans = "".join(
            f"<tr><td>{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(p['time']))}</td>"
            f"<td>{e(p['host'])}</td><td>{e(p['reason'])}</td><td>{e(p['result'])}</td>"
            f"<td>{e(p['detail'])}</td><td>"
            + "<br>".join(
                e(f"{m['vm_uuid']} {m['source']} → {m['destination']}: {m['outcome']}")
                + (f" ({e(m['error'])})" if m["error"] else "")
                for m in p["migrations"]
            )
            + "<br>".join(e(line) for line in p["power"])
            + "</td></tr>"
            for p in status["plans"]
        )
        return (
            "<!doctype html><html><head><meta charset='utf-8'>"
            "<title>Neat global manager</title></head><body>"
            f"<h1>Neat global manager</h1><p>neat-exporter {e(__version__)}, executor "
            f"<b>{e(status['executor'])}</b>. <a href='/metrics'>Metrics</a> · "
            "<a href='/healthz'>health</a> · <a href='/api/status'>status (JSON)</a></p>"
            "<h2>Hosts</h2><table border=1><tr><th>host</th><th>state</th><th>power</th>"
            f"<th>VMs</th><th>left out of placement because</th></tr>{rows}</table>"
            "<h2>Latest plans</h2><table border=1><tr><th>time (UTC)</th><th>host</th>"
            "<th>reason</th><th>result</th><th>detail</th><th>migrations and power</th></tr>"
            f"{plans}</table></body></html>"
        )


class _Request:
    __slots__ = ("host", "reason", "vm_uuids")

    def __init__(self, host: str, reason: Reason, vm_uuids: list[str]) -> None:
        self.host, self.reason, self.vm_uuids = host, reason, vm_uuids


def _respond(
    start_response: Callable,
    code: int,
    body: str,
    content_type: str = "text/plain; charset=utf-8",
    extra: Iterable[tuple[str, str]] = (),
) -> list[bytes]:
    data = body.encode() + (b"" if content_type.startswith("text/html") else b"\n")
    start_response(
        f"{code} {HTTPStatus(code).phrase}",
        [("Content-Type", content_type), ("Content-Length", str(len(data))), *extra],
    )
    return [data]
