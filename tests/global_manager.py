"""A stand-in for OpenStack Neat's global manager REST API, for tests.

It validates requests exactly as ``neat/globals/manager.py`` does (``get_params`` then
``validate_params``): ``time`` and ``reason`` are converted first (a non-number is a 500), then
missing username/password -> 401, wrong digests -> 403, missing reason/time/host, a reason other
than 0/1 or reason 1 without vm_uuids -> 400, a time stamp more than 5 s old -> 412, else 200 with
an empty body. Other methods on ``/`` -> 405. Like Neat's wsgiref server it handles one request at
a time. Accepted requests are recorded; tests can also make it slow or answer fixed statuses.

The real global manager (``neat-exporter global-manager``) answers the exporter and the bridge in
tests/test_e2e_global_manager.py; this fake stays for the client's own tests, which need a peer
that refuses, stalls or vanishes on demand.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import parse_qsl

from neat_exporter.config import GlobalManagerConfig

USER, PASSWORD = "admin", "s3cret-Pa55"


@dataclass(frozen=True)
class AcceptedRequest:
    host: str
    reason: int
    vm_uuids: list[str] | None
    time: float
    received: float


def sha1(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


def client_config(url: str, mode: str = "on", **kwargs) -> GlobalManagerConfig:
    """The ``global_manager`` section pointing at ``url``, with fast timeouts and no retries."""
    values = dict(timeout=1.0, retries=0, cooldown=600, username=USER, password=PASSWORD)
    values.update(kwargs)
    return GlobalManagerConfig(mode=mode, url=url, username_file=None, password_file=None, **values)


class GlobalManager:
    """Serves on 127.0.0.1:<free port> in a thread; use as a context manager or call stop()."""

    def __init__(self, user: str = USER, password: str = PASSWORD):
        self.hashed_username = sha1(user)
        self.hashed_password = sha1(password)
        self.accepted: list[AcceptedRequest] = []
        self.statuses: list[int] = []  # every status answered, in order
        self.forced_statuses: deque[int] = deque()  # answered before any validation, one each
        self.delay = 0.0  # seconds to "process" an accepted request before answering
        self.clock = time.time
        self._lock = threading.Lock()
        self._httpd = HTTPServer(("127.0.0.1", 0), self._handler())
        self.port = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def __enter__(self) -> GlobalManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def answer(self, method: str, path: str, body: bytes) -> int:
        """Neat's status for one request (recording it when accepted)."""
        if forced := self._pop_forced():
            return forced
        if path != "/":
            return 404
        if method != "PUT":
            return 405
        params = dict(parse_qsl(body.decode("latin-1"), keep_blank_values=True))
        try:  # get_params converts before validate_params looks at anything
            if "time" in params:
                params["time"] = float(params["time"])
            if "reason" in params:
                params["reason"] = int(params["reason"])
        except ValueError:
            return 500
        if "vm_uuids" in params:
            params["vm_uuids"] = str(params["vm_uuids"]).split(",")
        if "username" not in params or "password" not in params:
            return 401
        if params["username"] != self.hashed_username or params["password"] != self.hashed_password:
            return 403
        if "reason" not in params or "time" not in params or "host" not in params:
            return 400
        if params["reason"] not in (0, 1):
            return 400
        if params["reason"] == 1 and "vm_uuids" not in params:
            return 400
        if params["time"] + 5 < self.clock():
            return 412
        if self.delay:
            time.sleep(self.delay)
        with self._lock:
            self.accepted.append(
                AcceptedRequest(
                    params["host"],
                    params["reason"],
                    params.get("vm_uuids"),
                    params["time"],
                    time.time(),
                )
            )
        return 200

    def _pop_forced(self) -> int | None:
        with self._lock:
            return self.forced_statuses.popleft() if self.forced_statuses else None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        manager = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                status = manager.answer(self.command, self.path, body)
                with manager._lock:
                    manager.statuses.append(status)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_PUT = do_GET = do_POST = do_DELETE = _serve

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler
