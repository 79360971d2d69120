"""The web config file, in the format of the Prometheus exporter-toolkit (``--web.config.file``):
TLS, client certificates, basic auth users, response headers and a rate limit, validated into a
:class:`WebConfig`. What Python's ``ssl`` module can and cannot do differently from Go's
``crypto/tls`` is described in docs/security.md.
"""

from __future__ import annotations

import os
import re
import ssl
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from neat_exporter.config.files import load_yaml_file, read_config_file
from neat_exporter.errors import ConfigError
from neat_exporter.parsing import parse_duration
from neat_exporter.web.auth import BasicAuth, RateLimit, with_headers

_ROOT = "web_config"
_TLS = f"{_ROOT}.tls_server_config"
_FILE_KEYS = ("cert_file", "key_file", "client_ca_file")
#: bcrypt costs accepted. exporter-toolkit's users hash with 10 to 12 (``htpasswd -nBC 10``);
#: each step doubles the time of a check (about 70 ms at 10 on a current core, 300 ms at 12),
#: and Go's bcrypt accepts up to 31, which takes days: a cost beyond this is refused, not run.
#: At 12, the few checks a flood can queue still end well within the 5 s a stop may take.
MIN_BCRYPT_COST = 4
MAX_BCRYPT_COST = 12

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
_SECURITY_HEADERS = {
    "Content-Security-Policy": None,
    "X-Frame-Options": {"deny", "sameorigin"},
    "X-Content-Type-Options": {"nosniff"},
    "X-XSS-Protection": None,
    "Strict-Transport-Security": None,
}
_BCRYPT_HASH = re.compile(rb"^\$2[abxy]\$(\d\d)\$[./A-Za-z0-9]{53}$")


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
        """``app`` behind this config's basic auth, rate limit and response headers.

        Authentication comes first, so that the rate limit is the authenticated clients' own:
        requests without valid credentials get their 401 without taking a token (they cost no
        bcrypt when they carry no password, and a bounded amount when they carry a wrong one).
        Builds the bcrypt dummy hashes: call it outside any lock requests wait for."""
        if self.rate_limit:
            app = RateLimit(app, *self.rate_limit)
        if self.basic_auth_users:
            app = BasicAuth(app, self.basic_auth_users)
        if self.headers:
            app = with_headers(app, self.headers)
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
    try:
        is_file = file.is_file()
    except OSError as error:  # a name too long for the file system, say
        raise ConfigError(f"{_TLS}.{name}", f"cannot read it: {error.strerror}") from None
    if not is_file:
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
        key = f"{_TLS}.{name}_file"
        return key, read_config_file(file, key)
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
        match = _BCRYPT_HASH.match(hashed)
        if not match:
            # The value is a secret: name the user, never echo what was given.
            raise ConfigError(f"{key}.{name}", 'not a bcrypt hash (htpasswd -nBC 10 "")')
        cost = int(match.group(1))
        if not MIN_BCRYPT_COST <= cost <= MAX_BCRYPT_COST:
            raise ConfigError(
                f"{key}.{name}",
                f"bcrypt cost {cost} is outside {MIN_BCRYPT_COST}..{MAX_BCRYPT_COST}"
                ' (htpasswd -nBC 10 "")',
            )
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
