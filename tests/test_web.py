"""TLS, client certificates and basic auth from an exporter-toolkit web config file, checked with
real TLS clients (requests, ssl) and certificates made for each test run."""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import bcrypt
import pytest
import requests
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pki import PKI, issue
from services import Process, free_port, wait_until

from neat_exporter.errors import ConfigError
from neat_exporter.web import BasicAuth, Limits, RateLimit, load_web_config, serve_wsgi
from neat_exporter.web import auth as web_auth
from neat_exporter.web import reload as web_reload

PASSWORD = "s3cret-pässword"
EXPORTER = [sys.executable, "-m", "neat_exporter"]


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> PKI:
    return PKI(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def password_hash() -> str:
    return bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(6)).decode()


def hello(environ, start_response):
    body = f"hello {environ.get('REMOTE_USER', 'anyone')}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


@pytest.fixture
def serve(tmp_path):
    """serve(config_dict) -> base URL of a server running ``hello`` with that web config."""
    servers = []

    def start(config: dict | None, app=hello, limits: Limits | None = None) -> str:
        config_file = None
        if config is not None:
            config_file = tmp_path / f"web-{len(servers)}.yml"
            config_file.write_text(yaml.safe_dump(config))
        server = serve_wsgi(
            app, "127.0.0.1:0", str(config_file) if config_file else None, limits=limits
        )
        servers.append(server)
        scheme = "https" if server.tls else "http"
        return f"{scheme}://127.0.0.1:{server.address[1]}"

    yield start
    for server in servers:
        server.shutdown()


def tls_config(pki: PKI, **extra) -> dict:
    return {
        "tls_server_config": {
            "cert_file": pki.path("server.crt"),
            "key_file": pki.path("server.key"),
            **extra,
        }
    }


def mtls_config(pki: PKI, auth_type="RequireAndVerifyClientCert", **extra) -> dict:
    return tls_config(
        pki, client_ca_file=pki.path("client-ca.crt"), client_auth_type=auth_type, **extra
    )


def refused(url: str, **kwargs) -> bool:
    """True when the TLS layer refuses the client (no HTTP status at all, so never a 500)."""
    try:
        requests.get(url, **{"timeout": 5, **kwargs})
    except (requests.exceptions.SSLError, requests.exceptions.ConnectionError):
        return True
    return False


# --- TLS --------------------------------------------------------------------------------------


def test_plain_http_without_a_web_config(serve):
    url = serve(None)
    assert requests.get(url, timeout=5).text == "hello anyone\n"


def test_tls_serves_clients_that_trust_the_ca_and_refuses_plain_http(serve, pki):
    url = serve(tls_config(pki))
    assert url.startswith("https://")
    assert requests.get(url, verify=pki.path("server-ca.crt"), timeout=5).ok
    assert refused(url, verify=pki.path("rogue-ca.crt"))  # the client's own check
    plain = requests.get(url.replace("https", "http"), timeout=5)
    assert plain.status_code == 400 and "HTTP request to an HTTPS server" in plain.text
    # The refused clients did not hurt the server.
    assert requests.get(url, verify=pki.path("server-ca.crt"), timeout=5).ok


def test_min_version_refuses_older_clients(serve, pki):
    url = serve(tls_config(pki, min_version="TLS13"))
    old = ssl.create_default_context(cafile=pki.path("server-ca.crt"))
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    port = int(url.rsplit(":", 1)[1])
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        pytest.raises(ssl.SSLError),
    ):
        old.wrap_socket(raw, server_hostname="127.0.0.1")
    assert requests.get(url, verify=pki.path("server-ca.crt"), timeout=5).ok


def test_inline_certificate_and_key(serve, pki):
    url = serve(
        {
            "tls_server_config": {
                "cert": Path(pki.path("server.crt")).read_text(),
                "key": Path(pki.path("server.key")).read_text(),
            }
        }
    )
    assert requests.get(url, verify=pki.path("server-ca.crt"), timeout=5).ok


def test_relative_file_names_are_relative_to_the_web_config(tmp_path, pki):
    config = tmp_path / "web.yml"
    for name in ("server.crt", "server.key"):
        (tmp_path / name).write_bytes(Path(pki.path(name)).read_bytes())
    config.write_text(
        yaml.safe_dump({"tls_server_config": {"cert_file": "server.crt", "key_file": "server.key"}})
    )
    assert load_web_config(config).tls is not None


# --- client certificates ----------------------------------------------------------------------


def test_require_and_verify_client_cert(serve, pki):
    url = serve(mtls_config(pki))
    ca = pki.path("server-ca.crt")
    assert requests.get(url, verify=ca, cert=pki.client("client"), timeout=5).ok
    assert refused(url, verify=ca)  # no certificate
    assert refused(url, verify=ca, cert=pki.client("rogue-client"))  # signed by another CA
    assert refused(url, verify=ca, cert=pki.client("server"))  # valid, but not a client CA's
    assert requests.get(url, verify=ca, cert=pki.client("client"), timeout=5).ok


def test_verify_client_cert_if_given(serve, pki):
    url = serve(mtls_config(pki, "VerifyClientCertIfGiven"))
    ca = pki.path("server-ca.crt")
    assert requests.get(url, verify=ca, timeout=5).ok
    assert requests.get(url, verify=ca, cert=pki.client("client"), timeout=5).ok
    assert refused(url, verify=ca, cert=pki.client("rogue-client"))


def test_client_allowed_sans(serve, pki):
    url = serve(mtls_config(pki, client_allowed_sans=["scraper.example"]))
    ca = pki.path("server-ca.crt")
    assert requests.get(url, verify=ca, cert=pki.client("client"), timeout=5).ok
    assert refused(url, verify=ca, cert=pki.client("other-client"))


def test_a_stalled_handshake_holds_only_its_own_connection(serve, pki):
    url = serve(mtls_config(pki), limits=Limits(handshake_timeout=0.5))
    port = int(url.rsplit(":", 1)[1])
    stalled = [socket.create_connection(("127.0.0.1", port)) for _ in range(5)]
    start = time.monotonic()
    assert requests.get(
        url, verify=pki.path("server-ca.crt"), cert=pki.client("client"), timeout=5
    ).ok
    assert time.monotonic() - start < 2
    for connection in stalled:  # the server gives up on each of them
        connection.settimeout(5)
        assert connection.recv(1) == b""
        connection.close()


def test_garbage_instead_of_a_handshake(serve, pki):
    url = serve(tls_config(pki))
    port = int(url.rsplit(":", 1)[1])
    for payload in (b"\x16\x03\x01\x00\x05hello", b"\x16" + b"\xff" * 4096):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            raw.sendall(payload)
            with contextlib.suppress(ConnectionResetError):
                assert not raw.recv(4096).startswith(b"HTTP")  # an alert or EOF
    for payload in (b"\x00" * 4096, b"GET / HTTP/1.0\r\n\r\n"):
        assert raw_request(port, payload).startswith(b"HTTP/1.0 400 Bad Request")
    assert requests.get(url, verify=pki.path("server-ca.crt"), timeout=5).ok


# --- basic auth -------------------------------------------------------------------------------


def test_basic_auth(serve, pki, password_hash):
    url = serve({**tls_config(pki), "basic_auth_users": {"prometheus": password_hash}})
    ca = pki.path("server-ca.crt")
    ok = requests.get(url, verify=ca, auth=("prometheus", PASSWORD.encode()), timeout=5)
    assert ok.status_code == 200 and ok.text == "hello prometheus\n"
    for auth in (
        None,
        ("prometheus", "wrong"),
        ("nobody", PASSWORD.encode()),
        ("prometheus", "x" * 100),
    ):
        response = requests.get(url, verify=ca, auth=auth, timeout=5)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"].startswith("Basic realm=")
    for header in ("Bearer abc", "Basic !!!", "Basic " + base64.b64encode(b"nocolon").decode()):
        response = requests.get(url, verify=ca, headers={"Authorization": header}, timeout=5)
        assert response.status_code == 401


def test_basic_auth_checks_bcrypt_once_per_good_password(monkeypatch, password_hash):
    calls = []

    def counting_checkpw(password, hashed):
        calls.append(password)
        return bcrypt.checkpw(password, hashed)

    monkeypatch.setattr(web_auth, "_checkpw", counting_checkpw)
    auth = BasicAuth(hello, {"prometheus": password_hash.encode()})
    assert all(auth.check("prometheus", PASSWORD.encode()) for _ in range(20))
    assert len(calls) == 1
    assert not auth.check("prometheus", b"wrong")
    assert not auth.check("nobody", b"wrong")  # checked against a dummy hash, same cost
    assert len(calls) == 3


def test_basic_auth_under_concurrent_scrapers(serve, password_hash):
    url = serve({"basic_auth_users": {"prometheus": password_hash}})
    statuses = []

    def scrape():
        for _ in range(10):
            statuses.append(
                requests.get(url, auth=("prometheus", PASSWORD.encode()), timeout=10).status_code
            )

    threads = [threading.Thread(target=scrape) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * 160


def test_headers_and_rate_limit(serve):
    url = serve(
        {
            "http_server_config": {"headers": {"X-Frame-Options": "deny"}},
            "rate_limit": {"interval": "1h", "burst": 2},  # no token back during the test
        }
    )
    responses = [requests.get(url, timeout=5) for _ in range(3)]
    assert [r.status_code for r in responses] == [200, 200, 429]
    assert all(r.headers["X-Frame-Options"] == "deny" for r in responses)


def test_rate_limit_refills_one_token_per_interval():
    """The bucket on a clock of the test's own: exact refill times, no waiting."""
    now = [100.0]
    limited = RateLimit(hello, interval=2.0, burst=2, monotonic=lambda: now[0])

    def status() -> str:
        statuses = []
        limited({}, lambda line, headers: statuses.append(line))
        return statuses[0][:3]

    assert [status() for _ in range(3)] == ["200", "200", "429"]  # the burst, then empty
    now[0] = 101.5
    assert status() == "429"  # three quarters of a token
    now[0] = 102.0
    assert [status(), status()] == ["200", "429"]  # one interval: exactly one token
    now[0] = 1000.0
    assert [status() for _ in range(3)] == ["200", "200", "429"]  # refilled up to the burst only


# --- invalid configurations -------------------------------------------------------------------


@pytest.fixture
def write_config(tmp_path):
    def write(config) -> Path:
        path = tmp_path / "web.yml"
        path.write_text(config if isinstance(config, str) else yaml.safe_dump(config))
        return path

    return write


@pytest.mark.parametrize(
    ("config", "key", "reason"),
    [
        ("tls_server_config: [", "web_config", "not valid YAML"),
        ("- a list", "web_config", "expected a mapping"),
        ({"tls_config": {}}, "web_config.tls_config", "unknown key"),
        ({"tls_server_config": {"cert_file": "/nope.crt", "key_file": "/nope.key"}},
         "web_config.tls_server_config.cert_file", "no such file"),
        ({"tls_server_config": {"key_file": "{server.key}"}},
         "web_config.tls_server_config.cert_file", "missing"),
        ({"tls_server_config": {"cert_file": "{server.crt}"}},
         "web_config.tls_server_config.key_file", "missing"),
        ({"tls_server_config": {"cert_file": "{server.key}", "key_file": "{server.key}"}},
         "web_config.tls_server_config.cert_file", "not a PEM certificate"),
        ({"tls_server_config": {"cert_file": "{server.crt}", "key_file": "{client.key}"}},
         "web_config.tls_server_config.key_file", "matching the certificate"),
        ({"tls_server_config": {"cert_file": "{server.crt}", "key_file": "{server.key}",
                                "client_auth_type": "RequireSomething"}},
         "web_config.tls_server_config.client_auth_type", "unknown 'RequireSomething'"),
        ({"tls_server_config": {"cert_file": "{server.crt}", "key_file": "{server.key}",
                                "client_ca_file": "{client-ca.crt}"}},
         "web_config.tls_server_config.client_auth_type", "without a client auth type"),
        ({"tls_server_config": {"cert_file": "{server.crt}", "key_file": "{server.key}",
                                "client_auth_type": "RequireAnyClientCert"}},
         "web_config.tls_server_config.client_ca_file", "needed with client_auth_type"),
        ({"tls_server_config": {"cert_file": "{server.crt}", "key_file": "{server.key}",
                                "client_auth_type": "RequireAndVerifyClientCert",
                                "client_ca_file": "{server.key}"}},
         "web_config.tls_server_config.client_ca_file", "not a PEM certificate bundle"),
        ({"tls_server_config": {"cert_file": "{server.crt}", "key_file": "{server.key}",
                                "client_allowed_sans": ["a"]}},
         "web_config.tls_server_config.client_allowed_sans", "needs client_auth_type"),
        ({"tls_server_config": {"cert_file": "{server.crt}", "key_file": "{server.key}",
                                "min_version": "TLS13", "max_version": "TLS12"}},
         "web_config.tls_server_config.min_version", "above max_version"),
        ({"tls_server_config": {"cert_file": "{server.crt}", "key_file": "{server.key}",
                                "min_version": "SSL3"}},
         "web_config.tls_server_config.min_version", "unknown 'SSL3'"),
        ({"tls_server_config": {"cert_file": "{server.crt}", "key_file": "{server.key}",
                                "cipher_suites": ["TLS_AES_128_GCM_SHA256"]}},
         "web_config.tls_server_config.cipher_suites", "not supported"),
        ({"basic_auth_users": {"alice": "plaintext-password"}},
         "web_config.basic_auth_users.alice", "not a bcrypt hash"),
        ({"basic_auth_users": ["alice"]}, "web_config.basic_auth_users", "expected a mapping"),
        ({"http_server_config": {"headers": {"X-Frame-Options": "allow"}}},
         "web_config.http_server_config.headers.X-Frame-Options", "expected one of"),
        ({"http_server_config": {"headers": {"Set-Cookie": "a=b"}}},
         "web_config.http_server_config.headers.Set-Cookie", "unknown header"),
        ({"rate_limit": {"interval": "soon"}}, "web_config.rate_limit.interval", "duration"),
    ],
)  # fmt: skip
def test_invalid_web_configs_name_the_key(write_config, pki, config, key, reason):
    if isinstance(config, dict):
        text = yaml.safe_dump(config)
        for name in ("server.crt", "server.key", "client.key", "client-ca.crt"):
            text = text.replace("'{" + name + "}'", pki.path(name))
        config = text
    with pytest.raises(ConfigError) as error:
        load_web_config(write_config(config))
    assert error.value.key == key
    assert reason in error.value.reason


def test_missing_web_config_file(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        serve_wsgi(hello, "127.0.0.1:0", str(tmp_path / "absent.yml"))


def test_encrypted_key_is_refused_without_prompting(write_config, pki, tmp_path):
    key = serialization.load_pem_private_key(Path(pki.path("server.key")).read_bytes(), None)
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"pass"),
        )
    )
    config = {
        "tls_server_config": {"cert_file": pki.path("server.crt"), "key_file": str(encrypted)}
    }
    with pytest.raises(ConfigError, match="encrypted"):
        load_web_config(write_config(config))


def test_secret_hash_never_appears_in_errors(write_config):
    with pytest.raises(ConfigError) as error:
        load_web_config(write_config({"basic_auth_users": {"alice": "hunter2-plaintext"}}))
    assert "hunter2" not in str(error.value)


def test_address_in_use_is_a_config_error(serve):
    url = serve(None)
    port = url.rsplit(":", 1)[1]
    with pytest.raises(ConfigError, match="cannot listen"):
        serve_wsgi(hello, f"127.0.0.1:{port}")


def test_shutdown_frees_the_port():
    port = free_port()
    server = serve_wsgi(hello, f"127.0.0.1:{port}")
    wait_until(lambda: requests.get(f"http://127.0.0.1:{port}", timeout=1).ok, 5, "server up")
    server.shutdown()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}", timeout=1)
    serve_wsgi(hello, f"127.0.0.1:{port}").shutdown()


# --- reloading --------------------------------------------------------------------------------


def test_changed_users_and_certificates_apply_without_a_restart(tmp_path, pki, monkeypatch):
    monkeypatch.setattr(web_reload, "RELOAD_CHECK_INTERVAL", 0.1)
    for name in ("server.crt", "server.key"):
        (tmp_path / name).write_bytes(Path(pki.path(name)).read_bytes())
    config_file = tmp_path / "web.yml"

    def write(password: bytes) -> None:
        hashed = bcrypt.hashpw(password, bcrypt.gensalt(4)).decode()
        config_file.write_text(
            yaml.safe_dump(
                {
                    "tls_server_config": {"cert_file": "server.crt", "key_file": "server.key"},
                    "basic_auth_users": {"prometheus": hashed},
                }
            )
        )

    write(b"first")
    server = serve_wsgi(hello, "127.0.0.1:0", str(config_file))
    url = f"https://127.0.0.1:{server.address[1]}"
    try:

        def status(password: bytes, ca: str = pki.path("server-ca.crt")) -> int:
            return requests.get(
                url, verify=ca, auth=("prometheus", password), timeout=5
            ).status_code

        assert status(b"first") == 200
        write(b"second")
        wait_until(lambda: status(b"second") == 200, 5, "the new password to be accepted")
        assert status(b"first") == 401

        config_file.write_text("basic_auth_users: [broken")  # an invalid edit keeps the last good
        time.sleep(0.3)
        assert status(b"second") == 200

        # A certificate renewed by another CA (think cert-manager) is served from the next
        # connection on.
        key, cert = issue(
            "renewed",
            "rogue-ca",
            pki.rogue_ca[0],
            ca=False,
            sans=[x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
        )
        pki.write("renewed", key, cert)
        for name in ("crt", "key"):
            (tmp_path / f"server.{name}").write_bytes(
                Path(pki.path(f"renewed.{name}")).read_bytes()
            )
        write(b"second")
        rogue_ca = pki.path("rogue-ca.crt")
        wait_until(lambda: status(b"second", rogue_ca) == 200, 5, "the renewed certificate")
    finally:
        server.shutdown()


# --- the commands -----------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["run", "check-config", "bridge"])
def test_commands_exit_2_on_an_invalid_web_config(tmp_path, command):
    bad = tmp_path / "web.yml"
    bad.write_text(yaml.safe_dump({"basic_auth_users": {"alice": "not-a-hash-secret"}}))
    result = subprocess.run(
        [*EXPORTER, command, "--web.config.file", str(bad), "--listen", "127.0.0.1:0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "web_config.basic_auth_users.alice: not a bcrypt hash" in result.stderr
    assert "Traceback" not in result.stderr and "not-a-hash-secret" not in result.stderr


def test_exporter_over_mtls_and_basic_auth(tmp_path, pki, password_hash):
    port = free_port()
    web_config = tmp_path / "web.yml"
    web_config.write_text(
        yaml.safe_dump({**mtls_config(pki), "basic_auth_users": {"prometheus": password_hash}})
    )
    exporter = Process(
        [
            *EXPORTER, "run", "--source", "replay", "--interval", "1",
            "--listen", f"127.0.0.1:{port}", "--web.config.file", str(web_config),
        ],
        tmp_path / "exporter.log",
    )  # fmt: skip
    url = f"https://127.0.0.1:{port}/metrics"
    good = {"verify": pki.path("server-ca.crt"), "cert": pki.client("client"), "timeout": 5}
    try:
        wait_until(
            lambda: requests.get(url, auth=("prometheus", PASSWORD.encode()), **good).ok,
            30,
            "the exporter over TLS",
        )
        metrics = requests.get(url, auth=("prometheus", PASSWORD.encode()), **good)
        assert "neat_host_cpu_utilization_ratio" in metrics.text
        assert requests.get(url, auth=("prometheus", "wrong"), **good).status_code == 401
        assert requests.get(url, **good).status_code == 401
        rogue = {**good, "cert": pki.client("rogue-client")}
        assert refused(url, auth=("prometheus", PASSWORD.encode()), **rogue)
        assert requests.get(url.replace("https", "http"), timeout=5).status_code == 400
        assert requests.get(url, auth=("prometheus", PASSWORD.encode()), **good).ok
    finally:
        exporter.stop()
    assert "Traceback" not in exporter.log()


# --- limits -----------------------------------------------------------------------------------


def raw_request(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        connection.sendall(data)
        return connection.recv(200)


def test_oversized_requests_get_4xx(serve, password_hash):
    url = serve({"basic_auth_users": {"prometheus": password_hash}})
    port = int(url.rsplit(":", 1)[1])
    assert raw_request(port, b"GET /" + b"a" * 70000 + b" HTTP/1.0\r\n\r\n").startswith(
        b"HTTP/1.1 414"
    )
    many_headers = b"".join(b"X-%d: 1\r\n" % i for i in range(120))
    assert raw_request(port, b"GET / HTTP/1.0\r\n" + many_headers + b"\r\n").startswith(
        b"HTTP/1.1 431"
    )
    huge_auth = "Basic " + base64.b64encode(b"prometheus:" + b"x" * 5000).decode()
    assert requests.get(url, headers={"Authorization": huge_auth}, timeout=5).status_code == 401


def test_a_silent_client_is_disconnected(serve):
    url = serve(None, limits=Limits(request_timeout=0.5))
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as slow:
        slow.sendall(b"GET /metr")  # and nothing more
        assert requests.get(url, timeout=5).ok  # others are served meanwhile
        started = time.monotonic()
        assert read_until_closed(slow).startswith(b"HTTP/1.1 408 ")  # answered, then closed
        assert time.monotonic() - started < 3


def read_until_closed(connection: socket.socket) -> bytes:
    data = b""
    while chunk := connection.recv(65536):
        data += chunk
    return data


class ThreadNamingApp:
    """Answers with the name of the thread that ran it; ``inline_app`` as the exporter's pages
    have it: itself for every path but /slow."""

    def inline_app(self, environ):
        return None if environ["PATH_INFO"] == "/slow" else self

    def __call__(self, environ, start_response):
        body = threading.current_thread().name.encode()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body]


def test_requests_the_app_answers_at_once_skip_the_worker_threads(serve, password_hash):
    url = serve(None, app=ThreadNamingApp())
    assert requests.get(f"{url}/metrics", timeout=5).text == "http"  # the event loop's thread
    assert requests.get(f"{url}/slow", timeout=5).text.startswith("http-worker")
    # Behind a web config without users, the same; with users (bcrypt) always a worker thread.
    headers = {"http_server_config": {"headers": {"X-Frame-Options": "deny"}}}
    url = serve(headers, app=ThreadNamingApp())
    answer = requests.get(f"{url}/metrics", timeout=5)
    assert answer.text == "http" and answer.headers["X-Frame-Options"] == "deny"
    url = serve({"basic_auth_users": {"alice": password_hash}}, app=ThreadNamingApp())
    answer = requests.get(f"{url}/metrics", auth=("alice", PASSWORD.encode()), timeout=5)
    assert answer.text.startswith("http-worker")
    assert requests.get(f"{url}/metrics", timeout=5).status_code == 401
