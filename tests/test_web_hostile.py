"""The HTTP layer against hostile clients and careless operators: slow and stalled connections,
header floods measured on the real process, bodies too large or too slow, half-written web
configs, bcrypt costs, credentials that are not ASCII, and the smaller protocol points."""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import logging
import signal
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
from pki import PKI
from services import Process, free_port, wait_until
from test_bridge import RunningBridge

from neat_exporter.errors import ConfigError
from neat_exporter.web import BasicAuth, Limits, load_web_config, serve_wsgi
from neat_exporter.web import auth as web_auth
from neat_exporter.web import reload as web_reload
from neat_exporter.web.reload import LiveWebConfig

EXPORTER = [sys.executable, "-m", "neat_exporter"]
PASSWORD = b"hostile-test-password"


def hello(environ, start_response):
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    text = f"hello {environ.get('REMOTE_USER', 'anyone')} {len(body)}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(text)))])
    return [text]


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> PKI:
    return PKI(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def password_hash() -> str:
    return bcrypt.hashpw(PASSWORD, bcrypt.gensalt(4)).decode()


@pytest.fixture
def serve(tmp_path):
    """serve(config, limits=..., app=...) -> (base URL, port) of a server in this process."""
    servers = []

    def start(config: dict | None = None, limits: Limits | None = None, app=hello):
        config_file = None
        if config is not None:
            config_file = tmp_path / f"web-{len(servers)}.yml"
            config_file.write_text(yaml.safe_dump(config))
        server = serve_wsgi(app, "127.0.0.1:0", config_file and str(config_file), limits=limits)
        servers.append(server)
        port = server.address[1]
        return f"{'https' if server.tls else 'http'}://127.0.0.1:{port}", port

    yield start
    for server in servers:
        server.shutdown()


def open_connections(port: int, count: int, first_bytes: bytes = b"") -> list[socket.socket]:
    connections = []
    for _ in range(count):
        connection = socket.create_connection(("127.0.0.1", port), timeout=5)
        if first_bytes:
            connection.sendall(first_bytes)
        connections.append(connection)
    return connections


def close_all(connections: list[socket.socket]) -> None:
    for connection in connections:
        connection.close()


def read_until_closed(connection: socket.socket) -> bytes:
    data = b""
    try:
        while chunk := connection.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def timed_get(url: str, **kwargs) -> float:
    started = time.monotonic()
    response = requests.get(url, timeout=10, **kwargs)
    assert response.status_code == 200, response.text
    return time.monotonic() - started


def memory_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


# --- the real exporter under attack -------------------------------------------------------------


@pytest.fixture(scope="module")
def exporter(tmp_path_factory):
    """A running `neat-exporter run` (replay source) and its base URL."""
    folder = tmp_path_factory.mktemp("exporter")
    port = free_port()
    config = folder / "exporter.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "listen": f"127.0.0.1:{port}",
                "interval": 60,
                "source": {"type": "replay", "replay": {"vms": 20}},
            }
        )
    )
    process = Process([*EXPORTER, "run", "--config", str(config)], folder / "exporter.log")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: requests.get(f"{url}/metrics", timeout=2).ok, 30, "the exporter")
        yield process, url, port
    finally:
        process.stop()
    assert "Traceback" not in process.log()


def test_hundreds_of_slow_connections_do_not_delay_scrapes(exporter):
    _, url, port = exporter
    slow = open_connections(port, 300, b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: 1\r\n")
    try:
        for _ in range(3):
            assert timed_get(f"{url}/metrics") < 2
            assert timed_get(f"{url}/healthz") < 2
        for connection in slow[:50]:  # still trickling: they cost sockets, not workers
            connection.sendall(b"X-Slow: 2\r\n")
        assert timed_get(f"{url}/healthz") < 2
    finally:
        close_all(slow)


def test_a_header_flood_does_not_grow_memory(exporter):
    process, url, port = exporter
    before = memory_kib(process.pid, "VmHWM")
    line = b"X-Filler: " + b"a" * 60000 + b"\r\n"  # within Python's 64 KiB line limit

    def flood() -> socket.socket:
        connection = socket.create_connection(("127.0.0.1", port), timeout=10)
        try:
            connection.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            for _ in range(98):
                connection.sendall(line)
        except OSError:
            pass  # refused early: what a bounded server does
        return connection

    with concurrent.futures.ThreadPoolExecutor(40) as pool:
        connections = list(pool.map(lambda _: flood(), range(40)))
    try:
        assert timed_get(f"{url}/healthz") < 2
        grown_mib = (memory_kib(process.pid, "VmHWM") - before) / 1024
        assert grown_mib < 48, f"the process grew by {grown_mib:.0f} MiB"
    finally:
        close_all(connections)


def test_other_methods_get_405_with_allow(exporter):
    _, url, _ = exporter
    for method in ("POST", "DELETE", "TRACE", "PUT"):
        response = requests.request(method, f"{url}/metrics", timeout=5)
        assert response.status_code == 405, method
        assert response.headers["Allow"] == "GET, HEAD"
    assert requests.head(f"{url}/metrics", timeout=5).status_code == 200


def test_pipelined_requests_are_all_answered(exporter):
    _, _, port = exporter
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        connection.sendall(
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        answers = read_until_closed(connection)
    statuses = [part.split(b" ", 1)[0] for part in answers.split(b"HTTP/1.1 ")[1:]]
    assert statuses == [b"200", b"404", b"200"]


def test_ipv6_listen_address_is_printed_in_brackets(tmp_path):
    if not socket.has_ipv6 or not Path("/proc/net/if_inet6").read_text().strip():
        pytest.skip("this machine has no IPv6 loopback")
    port = free_port()
    process = Process(
        [*EXPORTER, "run", "--source", "replay", "--listen", f"[::1]:{port}", "--interval", "60"],
        tmp_path / "exporter.log",
    )
    try:
        wait_until(lambda: "listening on" in process.log(), 30, "the exporter to listen")
        assert f"listening on http://[::1]:{port}/" in process.log()
        assert requests.get(f"http://[::1]:{port}/healthz", timeout=5).ok
    finally:
        process.stop()


# --- deadlines and limits, in process -----------------------------------------------------------


def test_a_trickling_request_is_cut_at_its_deadline(serve):
    url, port = serve(limits=Limits(request_timeout=1.0))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as slow:
        slow.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        answer = b""
        while time.monotonic() - started < 4 and not answer:
            try:
                slow.sendall(b"X-Slow: 1\r\n")  # a header line every 0.2 s, never the end
            except OSError:
                break
            slow.settimeout(0.2)
            with contextlib.suppress(TimeoutError):
                answer = slow.recv(200)
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        assert time.monotonic() - started < 2
    assert timed_get(url) < 2


def test_hundreds_of_stalled_tls_handshakes(serve, pki):
    config = {
        "tls_server_config": {
            "cert_file": pki.path("server.crt"),
            "key_file": pki.path("server.key"),
        }
    }
    url, port = serve(config)
    stalled = open_connections(port, 300)  # connected, never say hello
    try:
        assert timed_get(url, verify=pki.path("server-ca.crt")) < 2
    finally:
        close_all(stalled)


def test_at_the_connection_limit_the_stalest_is_closed(serve):
    url, port = serve(limits=Limits(max_connections=50))
    idle = open_connections(port, 80)
    try:
        assert timed_get(url) < 2
        for connection in idle[:30]:  # the 30 oldest made room for the 30 newest
            connection.settimeout(2)
            assert read_until_closed(connection) == b""
        idle[-1].settimeout(0.2)
        with pytest.raises(TimeoutError):  # the newest are still open
            idle[-1].recv(1)
    finally:
        close_all(idle)


def test_header_bytes_in_flight_are_bounded(serve):
    url, port = serve(limits=Limits(max_buffered_bytes=100_000))
    partial = b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Big: " + b"a" * 12000 + b"\r\n"
    held = open_connections(port, 12, partial)  # 12 x 12 KB: beyond 100 KB in all
    try:
        refused = 0
        for connection in reversed(held):  # the last ones went beyond
            connection.settimeout(0.5)
            with contextlib.suppress(TimeoutError):
                refused += connection.recv(100).startswith(b"HTTP/1.1 503 ")
            if refused:
                break
        assert refused
    finally:
        close_all(held)
    assert timed_get(url) < 2


@pytest.mark.parametrize("size", [3_000, 8_000_000])
def test_too_large_webhook_gets_413_without_a_reset(size):
    """Over the bridge's payload limit (checked by the bridge) and over the server's body limit
    (refused before the body is read): either way the client reads a 413, never EPIPE."""
    bridge = RunningBridge("http://127.0.0.1:9/", mode="dry_run", max_payload_bytes=1000)
    try:
        assert bridge.post(b"x" * size).status_code == 413
        assert bridge.post({"version": "4", "alerts": []}).status_code == 200
    finally:
        bridge.stop()


def test_an_authenticated_slow_body_gets_408(serve, password_hash):
    _, port = serve({"basic_auth_users": {"prometheus": password_hash}}, Limits(request_timeout=1))
    token = base64.b64encode(b"prometheus:" + PASSWORD).decode()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        connection.sendall(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
            + f"Authorization: Basic {token}\r\n\r\n".encode()
            + b"x" * 10
        )
        started = time.monotonic()
        answer = read_until_closed(connection)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert time.monotonic() - started < 3


# --- basic auth -----------------------------------------------------------------------------


def test_non_ascii_basic_auth_is_401(serve, password_hash, caplog):
    _, port = serve({"basic_auth_users": {"prometheus": password_hash}})
    for value in (b"Basic \xff\xfe\xfd", b"Basic cHJvbWV0aGV1czp4\xe9", "Basic é".encode()):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
            connection.sendall(
                b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: "
                + value
                + b"\r\n\r\n"
            )
            assert read_until_closed(connection).startswith(b"HTTP/1.1 401 ")
    assert "Traceback" not in caplog.text and not [
        r for r in caplog.records if r.levelno >= logging.ERROR
    ]


def test_unknown_names_are_checked_at_the_users_costs(monkeypatch):
    costs = []

    def spying_checkpw(password, hashed):
        costs.append(int(hashed[4:6]))
        return False

    monkeypatch.setattr(web_auth, "_checkpw", spying_checkpw)
    cheap = bcrypt.hashpw(b"a", bcrypt.gensalt(4))
    dear = bcrypt.hashpw(b"b", bcrypt.gensalt(8))
    auth = BasicAuth(hello, {"alice": cheap, "bob": dear})
    auth.check("bob", b"wrong")
    assert costs == [8]  # a known user: their own cost
    costs.clear()
    for index in range(40):
        auth.check(f"nobody-{index}", b"wrong")
    assert set(costs) == {4, 8}  # unknown names take the times real users take
    first = costs[:]
    costs.clear()
    for index in range(40):
        auth.check(f"nobody-{index}", b"another")
    assert costs == first  # and each name always the same


def test_anonymous_flood_does_not_use_up_the_scrapers_budget(serve, password_hash):
    url, _ = serve(
        {
            "basic_auth_users": {"prometheus": password_hash},
            "rate_limit": {"interval": "1h", "burst": 3},  # no token back during the test
        }
    )
    assert [requests.get(url, timeout=5).status_code for _ in range(20)] == [401] * 20
    scrapes = [requests.get(url, auth=("prometheus", PASSWORD), timeout=5) for _ in range(4)]
    assert [r.status_code for r in scrapes] == [200, 200, 200, 429]


def hash_of_cost(cost: int) -> str:
    """A well-formed bcrypt hash claiming ``cost`` (made at cost 4: nothing runs at ``cost``)."""
    return bcrypt.hashpw(b"x", bcrypt.gensalt(4)).decode().replace("$04$", f"${cost:02d}$")


@pytest.mark.parametrize("cost", [3, 13, 31, 99])
def test_bcrypt_cost_out_of_bounds_is_refused(write_config, cost):
    with pytest.raises(ConfigError) as error:
        load_web_config(write_config({"basic_auth_users": {"alice": hash_of_cost(cost)}}))
    assert error.value.key == "web_config.basic_auth_users.alice"
    assert f"bcrypt cost {cost} is outside" in error.value.reason


@pytest.mark.parametrize(("command", "cost"), [("check-config", 31), ("run", 99)])
def test_commands_refuse_a_bcrypt_cost_out_of_bounds(tmp_path, command, cost):
    hashed = hash_of_cost(cost)
    web_config = tmp_path / "web.yml"
    web_config.write_text(yaml.safe_dump({"basic_auth_users": {"alice": hashed}}))
    started = time.monotonic()
    result = subprocess.run(
        [*EXPORTER, command, "--web.config.file", str(web_config), "--listen", "127.0.0.1:0",
         "--source", "replay"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert f"web_config.basic_auth_users.alice: bcrypt cost {cost} is outside" in result.stderr
    assert "Traceback" not in result.stderr and hashed not in result.stderr
    assert time.monotonic() - started < 10


def test_sigterm_ends_the_exporter_within_5_s_under_a_password_flood(tmp_path):
    hashed = bcrypt.hashpw(PASSWORD, bcrypt.gensalt(12)).decode()  # the dearest allowed
    web_config = tmp_path / "web.yml"
    web_config.write_text(yaml.safe_dump({"basic_auth_users": {"prometheus": hashed}}))
    port = free_port()
    process = Process(
        [*EXPORTER, "run", "--source", "replay", "--listen", f"127.0.0.1:{port}",
         "--web.config.file", str(web_config)],
        tmp_path / "exporter.log",
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/metrics"
    stop = threading.Event()

    def guess(index: int) -> None:
        while not stop.is_set():
            try:
                requests.get(url, auth=("prometheus", f"guess-{index}-{time.time()}"), timeout=5)
            except requests.RequestException:
                return

    try:
        wait_until(lambda: requests.get(url, timeout=2).status_code == 401, 30, "the exporter")
        guessers = [threading.Thread(target=guess, args=(i,)) for i in range(8)]
        for guesser in guessers:
            guesser.start()
        time.sleep(0.5)  # let bcrypt checks pile up: what is measured is the stop under load
        started = time.monotonic()
        process.signal(signal.SIGTERM)
        process.popen.wait(10)
        assert time.monotonic() - started < 5
        assert process.popen.returncode == 0
    finally:
        stop.set()
        process.stop()
    assert "Traceback" not in process.log()


# --- reloading ------------------------------------------------------------------------------


@pytest.fixture
def write_config(tmp_path):
    def write(document: dict) -> Path:
        path = tmp_path / "web.yml"
        write_web_config(path, document)
        return path

    return write


def write_web_config(path: Path, document: dict | str) -> None:
    path.write_text(document if isinstance(document, str) else yaml.safe_dump(document))


def test_a_half_written_web_config_never_lets_anonymous_in(tmp_path, password_hash, monkeypatch):
    monkeypatch.setattr(web_reload, "RELOAD_CHECK_INTERVAL", 0.05)
    config_file = tmp_path / "web.yml"
    write_web_config(config_file, {"basic_auth_users": {"prometheus": password_hash}})
    server = serve_wsgi(hello, "127.0.0.1:0", str(config_file))
    url = f"http://127.0.0.1:{server.address[1]}"
    try:
        write_web_config(config_file, "basic_auth_users:\n")  # what `cat >` leaves mid-write
        deadline = time.monotonic() + 1.0  # twenty checks: it has settled and been looked at
        while time.monotonic() < deadline:
            assert requests.get(url, timeout=5).status_code == 401
        assert requests.get(url, auth=("prometheus", PASSWORD), timeout=5).status_code == 200

        new_hash = bcrypt.hashpw(b"new-password", bcrypt.gensalt(4)).decode()
        write_web_config(config_file, {"basic_auth_users": {"prometheus": new_hash}})
        wait_until(
            lambda: requests.get(url, auth=("prometheus", "new-password"), timeout=5).ok,
            5,
            "the completed file to be taken",
        )
    finally:
        server.shutdown()


def test_reload_waits_for_the_file_to_settle_and_refuses_weaker_versions(tmp_path, pki):
    config_file = tmp_path / "web.yml"
    tls = {"cert_file": pki.path("server.crt"), "key_file": pki.path("server.key")}
    mtls = {**tls, "client_auth_type": "RequireAndVerifyClientCert",
            "client_ca_file": pki.path("client-ca.crt")}  # fmt: skip
    hashed = bcrypt.hashpw(PASSWORD, bcrypt.gensalt(4)).decode()
    write_web_config(config_file, {"tls_server_config": mtls, "basic_auth_users": {"a": hashed}})
    live = LiveWebConfig(load_web_config(config_file), hello)

    write_web_config(config_file, {"tls_server_config": mtls, "basic_auth_users": {"b": hashed}})
    live.check()
    assert set(live.config.basic_auth_users) == {"a"}  # changed just now: not yet
    live.check()
    assert set(live.config.basic_auth_users) == {"b"}  # unchanged since: taken

    for weaker in (
        {"basic_auth_users": {"b": hashed}},  # TLS off
        {"tls_server_config": mtls},  # no users
        {"tls_server_config": tls, "basic_auth_users": {"b": hashed}},  # no client certificates
        {"tls_server_config": mtls, "basic_auth_users": {"b": "$2b$15$" + hashed[7:]}},
    ):
        write_web_config(config_file, weaker)
        live.check()
        live.check()
        assert set(live.config.basic_auth_users) == {"b"}
        assert live.config.tls.verify_mode == ssl.CERT_REQUIRED


def test_requests_do_not_wait_for_a_reload_hashing(tmp_path, password_hash, monkeypatch):
    """The dummy hashes of a new version are made by the reload thread: a slow hash (here one
    second) never holds up requests, as it did when reloads ran in a request."""
    monkeypatch.setattr(web_reload, "RELOAD_CHECK_INTERVAL", 0.05)
    config_file = tmp_path / "web.yml"
    write_web_config(config_file, {"basic_auth_users": {"prometheus": password_hash}})
    server = serve_wsgi(hello, "127.0.0.1:0", str(config_file))
    url = f"http://127.0.0.1:{server.address[1]}"
    real_hashpw = bcrypt.hashpw
    hashing = threading.Event()

    def slow_hashpw(password, salt):
        hashing.set()
        time.sleep(1)
        return real_hashpw(password, salt)

    monkeypatch.setattr(web_auth.bcrypt, "hashpw", slow_hashpw)
    try:
        assert timed_get(url, auth=("prometheus", PASSWORD)) < 2  # verified once: HMAC from now
        other = bcrypt.hashpw(b"other", bcrypt.gensalt(5)).decode()
        write_web_config(
            config_file, {"basic_auth_users": {"prometheus": password_hash, "other": other}}
        )
        wait_until(hashing.is_set, 5, "the reload to hash")
        slowest = max(timed_get(url, auth=("prometheus", PASSWORD)) for _ in range(10))
        assert slowest < 0.5
    finally:
        server.shutdown()
