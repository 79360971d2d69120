"""The web config in force, read again when it or a file it names changes, as exporter-toolkit
does: renewed certificates and changed users take effect without a restart.

A new version is taken only once it has settled (unchanged over one check interval, so that an
editor's or ``cat >``'s half-written file is not read mid-write), only when it is valid, and
only when it keeps every protection the running one has: a version without users, without TLS
or with weaker client certificate checks is refused and logged, since starting like that is a
different deployment (restart for it). Loading, hashing and building the middleware happen in
the watcher thread; requests only ever read the current version, never wait for a reload.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from neat_exporter.errors import ConfigError
from neat_exporter.web.config import WebConfig, load_web_config

log = logging.getLogger(__name__)

#: Seconds between checks whether the web config or a certificate it names has changed.
RELOAD_CHECK_INTERVAL = 1.0

_VERIFY_STRENGTH = {ssl.CERT_NONE: 0, ssl.CERT_OPTIONAL: 1, ssl.CERT_REQUIRED: 2}


def weakening(running: WebConfig, new: WebConfig) -> str | None:
    """Why ``new`` would protect less than ``running``, or None when it does not."""
    if running.tls is not None and new.tls is None:
        return "tls_server_config: turning TLS off needs a restart"
    if running.tls is None and new.tls is not None:
        return "tls_server_config: turning TLS on needs a restart"
    if running.basic_auth_users and not new.basic_auth_users:
        return "basic_auth_users: removing every user needs a restart"
    if running.tls is not None and new.tls is not None:
        if _VERIFY_STRENGTH[new.tls.verify_mode] < _VERIFY_STRENGTH[running.tls.verify_mode]:
            return "tls_server_config.client_auth_type: a weaker client check needs a restart"
        if running.client_allowed_sans and not new.client_allowed_sans:
            return "tls_server_config.client_allowed_sans: removing them needs a restart"
    return None


class LiveWebConfig:
    """A WSGI app behind the web config in force; :meth:`start` watches for new versions."""

    def __init__(self, config: WebConfig, app: Callable):
        self._app = app
        self._current = (config, config.wrap(app))  # swapped whole: requests read one version
        self._stamp = _file_stamp(config.files)
        self._pending: tuple | None = None  # a changed stamp seen once, waiting to settle
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def config(self) -> WebConfig:
        return self._current[0]

    def __call__(self, environ, start_response):
        return self._current[1](environ, start_response)

    def inline_app(self, environ) -> Callable | None:
        """The version in force, when it answers ``environ`` without blocking (see the server's
        ``inline_app``): never with basic auth, whose bcrypt check takes tens of milliseconds
        and may wait for other checks."""
        config, wrapped = self._current
        inner = getattr(self._app, "inline_app", None)
        if config.basic_auth_users or inner is None or inner(environ) is None:
            return None
        return wrapped

    def start(self) -> None:
        interval = RELOAD_CHECK_INTERVAL
        self._thread = threading.Thread(
            target=self._watch, args=(interval,), name="web-config", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop watching, after the check in progress (it may be hashing: never cut bcrypt's
        native code at exit)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _watch(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.check()
            except Exception:  # a bug here must not end the watching
                log.exception("checking the web config failed")

    def check(self) -> None:
        """Take a new version of the files if it has settled, is valid and weakens nothing."""
        stamp = _file_stamp(self.config.files)
        if stamp == self._stamp:
            self._pending = None
            return
        if stamp != self._pending:
            self._pending = stamp  # still being written, perhaps: look again next time
            return
        self._stamp, self._pending = stamp, None  # log a bad version once, not every check
        try:
            config = load_web_config(self.config.path)
            reason = weakening(self.config, config)
            if reason:
                raise ConfigError("web_config", reason)
            wrapped = config.wrap(self._app)
        except ConfigError as error:
            log.error("web config changed but is refused, keeping the previous one: %s", error)
            return
        self._current = (config, wrapped)
        self._stamp = _file_stamp(config.files)  # it may name other files now
        log.info("web config %s reloaded", config.path)


def _file_stamp(files: Iterable[Path]) -> tuple:
    stamps = []
    for file in files:
        try:
            status = file.stat()
            stamps.append((status.st_mtime_ns, status.st_size, status.st_ino))
        except OSError:
            stamps.append(None)
    return tuple(stamps)
