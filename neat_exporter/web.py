"""Serving a WSGI app on an address, shared by the exporter and the bridge.

TLS, client certificates and basic auth come from a web config file in the format of the
Prometheus exporter-toolkit (``--web.config.file``), applied here so that every endpoint of every
server gets them the same way. What Python's ``ssl`` module can and cannot do differently from
Go's ``crypto/tls`` is described in docs/security.md.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
import re
import secrets
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

import bcrypt

from neat_exporter.config_files import load_yaml_file
from neat_exporter.errors import ConfigError
from neat_exporter.parsing import parse_duration, parse_listen_address

log = logging.getLogger(__name__)

#: Seconds a client may take to finish the TLS handshake, then to send its request. A client
#: that stalls only holds its own worker thread, and only this long.
HANDSHAKE_TIMEOUT = 10.0
REQUEST_TIMEOUT = 30.0
#: Connections served at once; more wait in the listen backlog (then are dropped).
MAX_CONNECTIONS = 128

_ROOT = "web_config"
_TLS = f"{_ROOT}.tls_server_config"
_FILE_KEYS = ("cert_file", "key_file", "client_ca_file")
#: Seconds between checks whether the web config or a certificate it names has changed.
RELOAD_CHECK_INTERVAL = 1.0

_TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
# exporter-toolkit's client_auth_type values (Go's tls.ClientAuthType). Python's ssl cannot
# accept a client certificate without verifying it, so the two "unverified" policies verify
# against client_ca_file too: stricter than Go, never weaker.
_CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "RequestClientCert": ssl.CERT_OPTIONAL,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAnyClientCert": ssl.CERT_REQUIRED,
    "RequireClientCert": ssl.CERT_REQUIRED,  # old spelling exporter-toolkit still accepts
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
_SAN_TYPES = {"DNS", "IP Address", "email", "URI"}
_TLS_HANDSHAKE = b"\x16"  # the first byte of every TLS connection
# What Go's net/http answers on a TLS port, so a scrape configured with http:// says why.
_PLAIN_HTTP_ANSWER = (
    b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Connection: close\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"
)
_SECURITY_HEADERS = {
    "Content-Security-Policy": None,
    "X-Frame-Options": {"deny", "sameorigin"},
    "X-Content-Type-Options": {"nosniff"},
    "X-XSS-Protection": None,
    "Strict-Transport-Security": None,
}
_BCRYPT_HASH = re.compile(rb"^\$2[abxy]\$\d\d\$[./A-Za-z0-9]{53}$")


@dataclass(frozen=True)
class WebConfig:
    """A validated web config file: what to wrap the socket and the app in."""

    path: str
    files: tuple[Path, ...] = ()  # the config file and the files it names, watched for changes
    tls: ssl.SSLContext | None = None
    client_allowed_sans: frozenset[str] = frozenset()
    basic_auth_users: Mapping[str, bytes] = field(default_factory=dict)
    headers: tuple[tuple[str, str], ...] = ()
    rate_limit: tuple[float, int] | None = None  # (seconds between requests, burst)

    def wrap(self, app: Callable) -> Callable:
        """``app`` behind this config's rate limit, basic auth and response headers."""
        if self.basic_auth_users:
            app = BasicAuth(app, self.basic_auth_users)
        if self.rate_limit:
            app = RateLimit(app, *self.rate_limit)
        if self.headers:
            app = _with_headers(app, self.headers)
        return app


def load_web_config(path: str | os.PathLike) -> WebConfig:
    """Read and validate an exporter-toolkit web config file.

    Relative file names inside it are relative to the file's own folder, as in exporter-toolkit.
    Raises ConfigError naming the bad key (``web_config.tls_server_config.cert_file: ...``)."""
    path = Path(path)
    document = load_yaml_file(path, _ROOT)
    document = _mapping(document if document is not None else {}, _ROOT)
    _only_keys(
        document,
        _ROOT,
        {"tls_server_config", "http_server_config", "basic_auth_users", "rate_limit"},
    )
    tls_section = document.get("tls_server_config")
    tls, allowed_sans = _tls_context(tls_section, path.parent)
    users = _basic_auth_users(document.get("basic_auth_users"))
    headers = _http_server_config(document.get("http_server_config"))
    rate_limit = _rate_limit(document.get("rate_limit"))
    files = [path]
    if tls:
        files += [path.parent / tls_section[name] for name in _FILE_KEYS if tls_section.get(name)]
    return WebConfig(str(path), tuple(files), tls, allowed_sans, users, headers, rate_limit)


def _mapping(value: object, key: str) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(key, f"expected a mapping, got {type(value).__name__}")
    return value


def _only_keys(document: dict, key: str, allowed: set[str]) -> None:
    for name in document:
        if name not in allowed:
            raise ConfigError(f"{key}.{name}", f"unknown key (known: {', '.join(sorted(allowed))})")


def _string(document: dict, key: str, name: str) -> str | None:
    value = document.get(name)
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"{key}.{name}", f"expected a string, got {type(value).__name__}")
    return value or None


def _existing_file(document: dict, name: str, base: Path) -> Path | None:
    value = _string(document, _TLS, name)
    if value is None:
        return None
    file = base / value
    if not file.is_file():
        raise ConfigError(f"{_TLS}.{name}", f"no such file: {file}")
    if not os.access(file, os.R_OK):
        raise ConfigError(f"{_TLS}.{name}", f"not readable: {file}")
    return file


def _pem_source(document: dict, name: str, base: Path) -> tuple[str, str] | None:
    """(key naming it, PEM text) from ``<name>_file`` or the inline ``<name>``."""
    inline = _string(document, _TLS, name)
    file = _existing_file(document, f"{name}_file", base)
    if inline and file:
        raise ConfigError(f"{_TLS}.{name}", f"give at most one of {name} and {name}_file")
    if file:
        return f"{_TLS}.{name}_file", file.read_text(errors="replace")
    return (f"{_TLS}.{name}", inline) if inline else None


def _tls_context(section: object, base: Path) -> tuple[ssl.SSLContext | None, frozenset[str]]:
    if section is None or section == {}:
        return None, frozenset()
    section = _mapping(section, _TLS)
    _only_keys(
        section,
        _TLS,
        {
            "cert", "key", "client_ca", "cert_file", "key_file", "client_ca_file",
            "client_auth_type", "client_allowed_sans", "min_version", "max_version",
            "cipher_suites", "prefer_server_cipher_suites", "curve_preferences",
        },
    )  # fmt: skip
    cert = _pem_source(section, "cert", base)
    key = _pem_source(section, "key", base)
    client_ca = _pem_source(section, "client_ca", base)
    if cert is None:
        raise ConfigError(f"{_TLS}.cert_file", "missing (needed with tls_server_config)")
    if key is None:
        raise ConfigError(f"{_TLS}.key_file", "missing (needed with tls_server_config)")
    for unsupported in ("cipher_suites", "curve_preferences"):
        if section.get(unsupported):
            raise ConfigError(
                f"{_TLS}.{unsupported}",
                "not supported: Go names do not map to OpenSSL's; OpenSSL's defaults are used",
            )

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _tls_version(section, "min_version", "TLS12")
    context.maximum_version = _tls_version(section, "max_version", "TLS13")
    if context.minimum_version > context.maximum_version:
        raise ConfigError(f"{_TLS}.min_version", "is above max_version")
    prefer_server = section.get("prefer_server_cipher_suites", True)
    if not isinstance(prefer_server, bool):
        raise ConfigError(f"{_TLS}.prefer_server_cipher_suites", "expected true or false")
    if not prefer_server:
        context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    _load_certificate(context, cert, key)

    auth_name = _string(section, _TLS, "client_auth_type") or "NoClientCert"
    if auth_name not in _CLIENT_AUTH:
        raise ConfigError(
            f"{_TLS}.client_auth_type", f"unknown {auth_name!r} (known: {', '.join(_CLIENT_AUTH)})"
        )
    context.verify_mode = _CLIENT_AUTH[auth_name]
    if client_ca and auth_name == "NoClientCert":
        raise ConfigError(f"{_TLS}.client_auth_type", "client CA given without a client auth type")
    if auth_name != "NoClientCert":
        if client_ca is None:
            raise ConfigError(
                f"{_TLS}.client_ca_file",
                f"needed with client_auth_type {auth_name}: Python's ssl verifies every client"
                " certificate it accepts",
            )
        ca_key, ca_pem = client_ca
        try:
            context.load_verify_locations(cadata=ca_pem)
        except (ssl.SSLError, ValueError) as error:
            raise ConfigError(ca_key, f"not a PEM certificate bundle ({error})") from None
    return context, _allowed_sans(section, context.verify_mode)


def _tls_version(section: dict, name: str, default: str) -> ssl.TLSVersion:
    value = _string(section, _TLS, name) or default
    if value not in _TLS_VERSIONS:
        raise ConfigError(
            f"{_TLS}.{name}", f"unknown {value!r} (known: {', '.join(_TLS_VERSIONS)})"
        )
    return _TLS_VERSIONS[value]


def _load_certificate(context: ssl.SSLContext, cert: tuple[str, str], key: tuple[str, str]) -> None:
    """Load the server certificate and key, blaming the right key when either is bad."""
    cert_key, cert_pem = cert
    key_key, key_pem = key
    if "ENCRYPTED" in key_pem:
        raise ConfigError(key_key, "is encrypted; give an unencrypted PEM key (file mode 0600)")
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=cert_pem)
    except (ssl.SSLError, ValueError):
        raise ConfigError(cert_key, "not a PEM certificate") from None
    # load_cert_chain reads files only; inline PEM goes through a private temporary file.
    with tempfile.TemporaryDirectory(prefix="neat-exporter-tls-") as private:
        cert_path = Path(private) / "cert.pem"
        key_path = Path(private) / "key.pem"
        for file, text in ((cert_path, cert_pem), (key_path, key_pem)):
            descriptor = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as stream:
                stream.write(text)
        try:
            context.load_cert_chain(cert_path, key_path, password=lambda: b"")
        except ssl.SSLError as error:
            raise ConfigError(
                key_key, f"not a PEM private key matching the certificate ({error.reason})"
            ) from None


def _allowed_sans(section: dict, verify_mode: ssl.VerifyMode) -> frozenset[str]:
    key = f"{_TLS}.client_allowed_sans"
    sans = section.get("client_allowed_sans") or []
    if not isinstance(sans, list) or not all(isinstance(s, str) and s for s in sans):
        raise ConfigError(key, "expected a list of names")
    if sans and verify_mode != ssl.CERT_REQUIRED:
        raise ConfigError(
            key, "needs client_auth_type RequireAndVerifyClientCert or RequireAnyClientCert"
        )
    return frozenset(sans)


def _basic_auth_users(section: object) -> dict[str, bytes]:
    key = f"{_ROOT}.basic_auth_users"
    if section is None:
        return {}
    users = {}
    for name, hashed in _mapping(section, key).items():
        if not isinstance(name, str) or not name or ":" in name:
            raise ConfigError(key, f"bad user name {name!r} (non-empty, no ':')")
        hashed = hashed.encode() if isinstance(hashed, str) else b""
        if not _BCRYPT_HASH.match(hashed):
            # The value is a secret: name the user, never echo what was given.
            raise ConfigError(f"{key}.{name}", 'not a bcrypt hash (htpasswd -nBC 10 "")')
        users[name] = hashed
    return users


def _http_server_config(section: object) -> tuple[tuple[str, str], ...]:
    key = f"{_ROOT}.http_server_config"
    if section is None:
        return ()
    section = _mapping(section, key)
    _only_keys(section, key, {"http2", "headers"})
    if not isinstance(section.get("http2", True), bool):
        raise ConfigError(f"{key}.http2", "expected true or false")
    headers = _mapping(section.get("headers") or {}, f"{key}.headers")
    result = []
    for name, value in headers.items():
        if name not in _SECURITY_HEADERS:
            raise ConfigError(
                f"{key}.headers.{name}", f"unknown header (known: {', '.join(_SECURITY_HEADERS)})"
            )
        if not isinstance(value, str) or "\n" in value or "\r" in value:
            raise ConfigError(f"{key}.headers.{name}", "expected a one-line string")
        allowed = _SECURITY_HEADERS[name]
        if value and allowed and value.lower() not in allowed:
            raise ConfigError(f"{key}.headers.{name}", f"expected one of {', '.join(allowed)}")
        if value:
            result.append((name, value))
    return tuple(result)


def _rate_limit(section: object) -> tuple[float, int] | None:
    key = f"{_ROOT}.rate_limit"
    if section is None:
        return None
    section = _mapping(section, key)
    _only_keys(section, key, {"interval", "burst"})
    interval = parse_duration(section.get("interval", "0s"), f"{key}.interval")
    burst = section.get("burst", 0)
    if not isinstance(burst, int) or isinstance(burst, bool) or burst < 0:
        raise ConfigError(f"{key}.burst", "expected a whole number >= 0")
    if interval == 0:
        return None
    return interval, max(burst, 1)


# --- WSGI middleware -------------------------------------------------------------------------


def _with_headers(app: Callable, headers: tuple[tuple[str, str], ...]) -> Callable:
    def with_headers(environ, start_response):
        def add_headers(status, response_headers, exc_info=None):
            return start_response(status, [*response_headers, *headers], exc_info)

        return app(environ, add_headers)

    return with_headers


def _plain_response(start_response, status: str, body: bytes, extra=()) -> Iterable[bytes]:
    start_response(
        status,
        [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body))), *extra],
    )
    return [body]


class BasicAuth:
    """HTTP basic auth against bcrypt hashes, as exporter-toolkit's ``basic_auth_users``.

    bcrypt is slow on purpose (~70 ms at cost 10), so a verified password is remembered as a
    keyed digest: later requests with the same credentials cost one HMAC, compared in constant
    time. Only one bcrypt check runs at a time, so a flood of wrong passwords costs at most one
    core, and unknown users are checked against a dummy hash so that timing does not tell which
    user names exist."""

    def __init__(self, app: Callable, users: Mapping[str, bytes], realm: str = "neat-exporter"):
        self._app = app
        self._users = dict(users)
        self._challenge = ("WWW-Authenticate", f'Basic realm="{realm}", charset="UTF-8"')
        self._digest_key = secrets.token_bytes(32)
        self._verified: dict[str, bytes] = {}
        self._bcrypt_lock = threading.Lock()
        cost = next(iter(self._users.values()))[4:6].decode() if self._users else "10"
        self._dummy_hash = bcrypt.hashpw(b"dummy", bcrypt.gensalt(int(cost)))

    def __call__(self, environ, start_response):
        credentials = _basic_credentials(environ.get("HTTP_AUTHORIZATION", ""))
        if credentials and self.check(*credentials):
            environ["REMOTE_USER"] = credentials[0]
            return self._app(environ, start_response)
        return _plain_response(
            start_response, "401 Unauthorized", b"Unauthorized\n", [self._challenge]
        )

    def check(self, username: str, password: bytes) -> bool:
        digest = hmac.new(self._digest_key, password, hashlib.sha256).digest()
        known = self._verified.get(username)
        if known is not None and hmac.compare_digest(known, digest):
            return True
        hashed = self._users.get(username)
        with self._bcrypt_lock:
            matches = _checkpw(password, hashed or self._dummy_hash)
        if matches and hashed is not None:
            self._verified[username] = digest
            return True
        return False


def _checkpw(password: bytes, hashed: bytes) -> bool:
    try:
        return bcrypt.checkpw(password, hashed)
    except ValueError:  # bcrypt refuses passwords longer than 72 bytes
        return False


def _basic_credentials(header: str) -> tuple[str, bytes] | None:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or len(encoded) > 4096:
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
        username, sep, password = decoded.partition(b":")
        return (username.decode(), password) if sep else None
    except (binascii.Error, UnicodeDecodeError):
        return None


class RateLimit:
    """A token bucket over all requests: one token per ``interval`` s, at most ``burst``."""

    def __init__(self, app: Callable, interval: float, burst: int):
        self._app = app
        self._interval = interval
        self._burst = burst
        self._tokens = float(burst)
        self._updated = time.monotonic()
        self._lock = threading.Lock()

    def __call__(self, environ, start_response):
        with self._lock:
            now = time.monotonic()
            elapsed, self._updated = now - self._updated, now
            self._tokens = min(self._burst, self._tokens + elapsed / self._interval)
            allowed = self._tokens >= 1
            if allowed:
                self._tokens -= 1
        if not allowed:
            return _plain_response(start_response, "429 Too Many Requests", b"Too Many Requests\n")
        return self._app(environ, start_response)


# --- the server ------------------------------------------------------------------------------


class _LiveWebConfig:
    """The web config, read again when it or a file it names changes, as exporter-toolkit does:
    renewed certificates and changed users take effect without a restart. An invalid new
    version is logged and the last good one kept. Whether TLS is on is fixed at start."""

    def __init__(self, config: WebConfig, app: Callable):
        self._app = app
        self._lock = threading.Lock()
        self._checked = time.monotonic()
        self._install(config)

    def _install(self, config: WebConfig) -> None:
        self.config = config
        self._wrapped = config.wrap(self._app)
        self._stamp = _file_stamp(config.files)

    def current(self) -> WebConfig:
        if time.monotonic() - self._checked < RELOAD_CHECK_INTERVAL:
            return self.config
        with self._lock:
            if time.monotonic() - self._checked >= RELOAD_CHECK_INTERVAL:
                self._checked = time.monotonic()
                self._reload_if_changed()
        return self.config

    def _reload_if_changed(self) -> None:
        stamp = _file_stamp(self.config.files)
        if stamp == self._stamp:
            return
        self._stamp = stamp  # log a broken version once, not on every connection
        try:
            config = load_web_config(self.config.path)
            if (config.tls is None) != (self.config.tls is None):
                raise ConfigError(f"{_TLS}", "turning TLS on or off needs a restart")
        except ConfigError as error:
            log.error("web config changed but is invalid, keeping the previous one: %s", error)
            return
        self._install(config)
        log.info("web config %s reloaded", config.path)

    def __call__(self, environ, start_response):
        self.current()
        return self._wrapped(environ, start_response)


def _file_stamp(files: Iterable[Path]) -> tuple:
    stamps = []
    for file in files:
        try:
            status = file.stat()
            stamps.append((status.st_mtime_ns, status.st_size, status.st_ino))
        except OSError:
            stamps.append(None)
    return tuple(stamps)


class _QuietHandler(WSGIRequestHandler):
    timeout = REQUEST_TIMEOUT

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s - %s", self.address_string(), format % args)


class _Server(ThreadingMixIn, WSGIServer):
    """One thread per connection, at most MAX_CONNECTIONS of them; with ``tls`` the handshake
    runs in that thread under HANDSHAKE_TIMEOUT, so a client that never completes it (or sends
    a bad certificate) costs only its own connection."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], web: _LiveWebConfig | None):
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self._web = web
        self.tls = bool(web and web.config.tls)
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(address, _QuietHandler)

    def process_request(self, request, client_address):
        if not self._slots.acquire(timeout=5):
            log.warning("too many connections; dropping one from %s", client_address[0])
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except RuntimeError:  # cannot start a thread
            self._slots.release()
            self.shutdown_request(request)

    def process_request_thread(self, request, client_address):
        try:
            connection = self._secure(request, client_address) if self.tls else request
            if connection is not None:
                request = connection
                self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)
            self._slots.release()

    def _secure(self, request: socket.socket, client_address) -> ssl.SSLSocket | None:
        config = self._web.current()
        request.settimeout(HANDSHAKE_TIMEOUT)
        try:
            if request.recv(1, socket.MSG_PEEK) not in (_TLS_HANDSHAKE, b""):
                request.recv(65536)  # read it, so that closing does not reset the answer away
                request.sendall(_PLAIN_HTTP_ANSWER)
                return None
            connection = config.tls.wrap_socket(request, server_side=True)
        except (OSError, ValueError) as error:  # ssl.SSLError and timeouts are OSErrors
            log.debug("TLS handshake with %s failed: %s", client_address[0], error)
            return None
        allowed = config.client_allowed_sans
        if allowed and not allowed.intersection(_peer_sans(connection)):
            log.info("client certificate from %s has no allowed SAN", client_address[0])
            connection.close()
            return None
        return connection

    def handle_error(self, request, client_address) -> None:
        # Clients hanging up or timing out are routine: not worth more than a debug line.
        log.debug("error serving %s", client_address[0], exc_info=True)


def _peer_sans(connection: ssl.SSLSocket) -> set[str]:
    certificate = connection.getpeercert() or {}
    return {value for kind, value in certificate.get("subjectAltName", ()) if kind in _SAN_TYPES}


class Server:
    """A running server; ``address`` is the bound (host, port), useful when port 0 was asked."""

    def __init__(self, httpd: _Server):
        self._httpd = httpd
        # A short poll makes shutdown (SIGTERM, tests) quick; idle wake-ups cost nothing measurable.
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.1}, name="http", daemon=True
        )
        self._thread.start()

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._httpd.server_address[:2]
        return host, port

    @property
    def tls(self) -> bool:
        return self._httpd.tls

    def shutdown(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def serve_wsgi(
    app, listen: str, web_config_file: str | None = None, *, listen_key: str = "listen"
) -> Server:
    """Start serving ``app`` in a background thread and return at once.

    ``web_config_file`` (exporter-toolkit format) adds TLS, client certificates, basic auth,
    response headers and a rate limit. ConfigError when it is invalid or the address is taken.
    """
    host, port = parse_listen_address(listen, listen_key)
    web = load_web_config(web_config_file) if web_config_file else None
    live = _LiveWebConfig(web, app) if web else None
    try:
        httpd = _Server((host, port), live)
    except OSError as error:
        raise ConfigError(listen_key, f"cannot listen on {listen}: {error.strerror}") from None
    httpd.set_app(live or app)
    if web:
        log.info(
            "serving on %s:%d with %s%s", host, httpd.server_address[1],
            "TLS" if web.tls else "plain HTTP",
            f", basic auth for {len(web.basic_auth_users)} user(s)" if web.basic_auth_users else "",
        )  # fmt: skip
    return Server(httpd)
