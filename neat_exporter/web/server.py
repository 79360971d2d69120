"""The HTTP/1.1 server of the exporter and the bridge: asyncio for the connections, h11 to parse
them, and a few worker threads for the WSGI app.

Every connection lives in the event loop and costs a socket and a few KiB, never a thread: a
client that sends slowly, stalls its TLS handshake or idles is only a file descriptor until its
deadline. The app runs in a worker thread only once its request is complete (head and body),
and its answer is written back by the loop; a request the app says it answers at once from
memory (``inline_app``, see :func:`_inline_app`) is answered on the loop itself. What any
client can make the process hold is bounded (see :class:`Limits`); at ``max_connections`` the
connection that has gone longest without completing a request is closed to make room, so
clients that finish their requests in time are served whatever others hold open.
docs/security.md has the measurements.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import concurrent.futures
import contextlib
import io
import logging
import socket
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote

import h11

from neat_exporter.errors import ConfigError
from neat_exporter.parsing import parse_listen_address
from neat_exporter.web.config import load_web_config
from neat_exporter.web.reload import LiveWebConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    """What one server lets clients hold. Times in seconds, sizes in bytes."""

    #: from accepting a TLS connection to the end of its handshake
    handshake_timeout: float = 10.0
    #: from the first byte of a request to the end of its body, whatever the client sends
    request_timeout: float = 10.0
    #: a kept-alive connection waiting for its next request's first byte
    idle_timeout: float = 60.0
    #: writing a response, while the client does not read it
    write_timeout: float = 30.0
    #: open connections; beyond, the one longest without completing a request is closed
    max_connections: int = 1000
    #: request line and headers of one request (414/431 beyond), and how many headers
    max_head_bytes: int = 16384
    max_headers: int = 100
    #: one request body (413 beyond)
    max_body_bytes: int = 1 << 20
    #: request bytes held for all incomplete requests together (503 to the one going beyond)
    max_buffered_bytes: int = 32 << 20
    #: response bytes not yet taken by slow readers, all together (the slowest are closed)
    max_unsent_bytes: int = 64 << 20
    #: threads running the app, and complete requests that may wait for one (503 beyond)
    workers: int = 8
    max_queued_requests: int = 64


_TLS_HANDSHAKE = b"\x16"  # the first byte of every TLS connection
# What Go's net/http answers on a TLS port, so a scrape configured with http:// says why.
_PLAIN_HTTP_ANSWER = (
    b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Connection: close\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"
)
_SAN_TYPES = {"DNS", "IP Address", "email", "URI"}
#: How long, and how many bytes, a refused request's client may go on sending (read and
#: dropped) before the socket is closed, so that it reads the refusal instead of a reset (EPIPE).
_LINGER_SECONDS = 5.0
_LINGER_BYTES = 16 << 20
_RECEIVE_SIZE = 16384
_TLS_SHUTDOWN_TIMEOUT = 1.0
# The loop runs one callback at a time and every connection copies what it receives out of
# this buffer at once, so all connections of all servers can share it.
_RECEIVE_BUFFER = memoryview(bytearray(_RECEIVE_SIZE))
_REASONS = {
    400: "Bad Request",
    408: "Request Timeout",
    413: "Content Too Large",
    414: "URI Too Long",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def format_address(host: str, port: int) -> str:
    """``host:port``, with an IPv6 host in brackets as URLs want it."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _TLSProtocol(asyncio.sslproto.SSLProtocol):
    """asyncio's TLS layer, with a smaller read buffer: asyncio's own allocates (and zeroes)
    256 KiB for every TLS connection, which is 256 MiB of memory for a thousand of them."""

    max_size = _RECEIVE_SIZE


class _Refusal(Exception):
    """The request cannot be served: answer ``status`` and close the connection."""

    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status = status


class _Connection(asyncio.BufferedProtocol):
    """One client connection: its socket until a transport takes it, then the protocol."""

    def __init__(self, server: _Server, sock: socket.socket, peer: tuple):
        self.server = server
        self.sock = sock
        self.peer = peer[0] if isinstance(peer, tuple) else str(peer)
        self.transport: asyncio.Transport | None = None
        self._raw_transport: asyncio.Transport | None = None  # under TLS, until the handshake
        self.task: asyncio.Task | None = None
        self.busy = False  # a request in the app or its answer being written: never evicted
        self.limits = server.limits
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=self.limits.max_head_bytes)
        self._tls = False
        self._wakeup: asyncio.Future | None = None
        self._writable: asyncio.Future | None = None
        self._eof = False  # the client has finished sending
        self._lost = False  # the transport is gone, or is to be dropped unflushed
        self._discard = False  # a refused request's remains: read and dropped
        self._discarded = 0
        self._overflow = False
        self._held = 0  # bytes received for the request being read, in server.buffered
        self._started: float | None = None  # when the current request's first byte came
        self._idle_since = 0.0

    # --- asyncio callbacks --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        return _RECEIVE_BUFFER

    def buffer_updated(self, nbytes: int) -> None:
        if self._discard:
            self._discarded += nbytes
            if self._discarded > _LINGER_BYTES:
                self.close(unflushed=True)
            return
        if self._eof or self.h11.their_state is h11.ERROR:
            return
        self.h11.receive_data(bytes(_RECEIVE_BUFFER[:nbytes]))
        if self._started is None:
            self._started = self.server.loop.time()
        self._held += nbytes
        self.server.buffered += nbytes
        if self.server.buffered > self.limits.max_buffered_bytes:
            self._overflow = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        if not self._discard and self.h11.their_state is not h11.ERROR:
            self.h11.receive_data(b"")
        self._eof = True
        self._wake()
        return not self._tls  # keep a TCP transport open to write the answer being made

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._wake()
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    def pause_writing(self) -> None:
        self._writable = self.server.loop.create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._writable = None

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    # --- the connection's life ----------------------------------------------------------------

    async def run(self) -> None:
        try:
            if await self._open():
                await self._serve()
        except _Refusal as refusal:
            await self._refuse(refusal)
        except OSError as error:  # TimeoutError too
            log.debug("connection from %s ended: %s", self.peer, error)
        except Exception:
            log.exception("connection from %s failed", self.peer)
        finally:
            self._release_held()
            self.close()
            self.server.forget(self)

    def close(self, *, unflushed: bool = False) -> None:
        """Close, after writing what is buffered unless ``unflushed``."""
        self._lost = self._lost or unflushed
        if self.transport is None and self._raw_transport is not None:
            self._raw_transport.abort()
        elif self.transport is None:
            self.sock.close()
        elif self._lost:
            self.transport.abort()
        else:
            self.transport.close()
        self._lost = True
        self._wake()

    async def _open(self) -> bool:
        """Hand the socket to a transport (with TLS: after a handshake within its deadline);
        False when the client is to be dropped."""
        loop = self.server.loop
        live = self.server.live
        config = live.config if live is not None else None
        if config is None or config.tls is None:
            await loop.connect_accepted_socket(lambda: self, self.sock)
            return True
        started = loop.time()
        try:
            async with asyncio.timeout(self.limits.handshake_timeout):
                first = await self._peek()
        except TimeoutError:
            log.debug("TLS client %s sent nothing within the handshake timeout", self.peer)
            return False
        if first != _TLS_HANDSHAKE:
            if first:  # plain HTTP on the TLS port: read it, so closing does not reset the answer
                self.sock.recv(65536)
                await loop.sock_sendall(self.sock, _PLAIN_HTTP_ANSWER)
            return False
        remaining = max(0.1, self.limits.handshake_timeout - (loop.time() - started))
        self._tls = True
        handshake = loop.create_future()
        tls = _TLSProtocol(
            loop,
            self,
            config.tls,
            handshake,
            server_side=True,
            ssl_handshake_timeout=remaining,
            # Closing waits this long for the client's close_notify (asyncio's default is 30 s,
            # which a client that never answers would hold a socket for, uncounted).
            ssl_shutdown_timeout=_TLS_SHUTDOWN_TIMEOUT,
        )
        try:
            self._raw_transport, _ = await loop.connect_accepted_socket(lambda: tls, self.sock)
            await handshake
        except (OSError, ValueError) as error:  # ssl.SSLError, timeouts and resets too
            log.debug("TLS handshake with %s failed: %s", self.peer, error)
            return False
        # Encrypted bytes read ahead while a request is in the app: at most this many.
        self.transport.set_read_buffer_limits(high=_RECEIVE_SIZE * 2)
        allowed = config.client_allowed_sans
        if allowed and not allowed.intersection(_peer_sans(self.transport)):
            log.info("client certificate from %s has no allowed SAN", self.peer)
            return False
        return True

    async def _peek(self) -> bytes:
        loop = self.server.loop
        fd = self.sock.fileno()
        while True:
            try:
                return self.sock.recv(1, socket.MSG_PEEK)
            except (BlockingIOError, InterruptedError):
                readable = loop.create_future()
                loop.add_reader(fd, _set_once, readable)
                try:
                    await readable
                finally:
                    loop.remove_reader(fd)

    async def _serve(self) -> None:
        """Requests one after the other (pipelined ones too), until the client is done."""
        while True:
            request = await self._receive_request()
            if request is None:
                return
            event, body = request
            self.busy = True
            self.transport.pause_reading()  # pipelined requests wait in their socket
            self._release_held()
            answer = await self.server.call_app(self._environ(event, body))
            await self._respond(event, *answer)
            self.busy = False
            if self.h11.our_state is not h11.DONE or self.h11.their_state is not h11.DONE:
                return  # Connection: close, HTTP/1.0, or a refused request
            self.h11.start_next_cycle()
            self.server.touch(self)

    async def _receive_request(self) -> tuple[h11.Request, bytes] | None:
        loop = self.server.loop
        self._idle_since = loop.time()
        # A pipelined request may already be here: its clock is running.
        self._started = loop.time() if self.h11.trailing_data[0] else None
        event = await self._next_event()
        if not isinstance(event, h11.Request):
            return None  # closed
        if len(event.headers) > self.limits.max_headers:
            raise _Refusal(431, f"more than {self.limits.max_headers} headers")
        length = _content_length(event)
        if length is not None and length > self.limits.max_body_bytes:
            raise _Refusal(413, f"a body of {length} bytes is over {self.limits.max_body_bytes}")
        if self.h11.they_are_waiting_for_100_continue:
            self.transport.write(self.h11.send(h11.InformationalResponse(status_code=100)))
        body = bytearray()
        while True:
            part = await self._next_event()
            if isinstance(part, h11.Data):
                body += part.data
                if len(body) > self.limits.max_body_bytes:
                    raise _Refusal(413, f"a body over {self.limits.max_body_bytes} bytes")
            elif isinstance(part, h11.EndOfMessage):
                return event, bytes(body)
            else:
                return None  # closed mid-body

    async def _next_event(self):
        """The next h11 event, waiting for data until the request's deadline."""
        loop = self.server.loop
        while True:
            if self._overflow:
                raise _Refusal(503, "too much request data held by all clients")
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as error:
                raise _Refusal(self._status_of(error), str(error)) from None
            if event is not h11.NEED_DATA:
                return event
            if self._lost:
                return h11.ConnectionClosed()
            if self._started is None:  # between requests
                deadline = self._idle_since + self.limits.idle_timeout
            else:
                deadline = self._started + self.limits.request_timeout
            self._wakeup = loop.create_future()
            self.transport.resume_reading()
            try:
                async with asyncio.timeout_at(deadline):
                    await self._wakeup
            except TimeoutError:
                if self._started is None:
                    return h11.ConnectionClosed()  # idle: close without a word, as Go does
                raise _Refusal(408, "the request was not complete in time") from None

    def _status_of(self, error: h11.RemoteProtocolError) -> int:
        status = error.error_status_hint
        if status == 431 and b"\n" not in self.h11.trailing_data[0]:
            return 414  # the request line alone is too long
        return status

    def _environ(self, request: h11.Request, body: bytes) -> dict:
        server = self.server
        target = request.target.decode("latin-1")
        if not target.startswith("/") and "://" in target:  # absolute form
            target = "/" + target.split("://", 1)[1].partition("/")[2]
        path, _, query = target.partition("?")
        environ = {
            "REQUEST_METHOD": request.method.decode("ascii"),
            "SCRIPT_NAME": "",
            "PATH_INFO": unquote(path, "latin-1"),
            "QUERY_STRING": query,
            "SERVER_NAME": server.address[0],
            "SERVER_PORT": str(server.address[1]),
            "SERVER_PROTOCOL": f"HTTP/{request.http_version.decode('ascii')}",
            "REMOTE_ADDR": self.peer,
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "https" if self.transport.get_extra_info("sslcontext") else "http",
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        for name, value in request.headers:
            key = name.decode("latin-1").upper().replace("-", "_")
            key = key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else f"HTTP_{key}"
            text = value.decode("latin-1")
            environ[key] = f"{environ[key]}, {text}" if key in environ else text
        return environ

    async def _respond(self, request: h11.Request, status: str, headers: list, body: bytes):
        code, _, reason = status.partition(" ")
        names = {name.lower() for name, _ in headers}
        if "content-length" not in names and int(code) >= 200 and int(code) not in (204, 304):
            headers = [*headers, ("Content-Length", str(len(body)))]
        try:
            data = self.h11.send(
                h11.Response(
                    status_code=int(code),
                    reason=reason.encode("latin-1"),
                    headers=[(n.encode("latin-1"), v.encode("latin-1")) for n, v in headers],
                )
            )
            if body and request.method != b"HEAD":
                data += self.h11.send(h11.Data(data=body))
            data += self.h11.send(h11.EndOfMessage())
        except (h11.LocalProtocolError, UnicodeEncodeError, ValueError):
            log.exception("the app's answer to %s is not valid HTTP", request.target[:80])
            raise _Refusal(500, "invalid response") from None
        self.server.make_room_for(len(data))
        self.transport.write(data)
        await self._drained(self.limits.write_timeout)

    async def _drained(self, timeout: float) -> None:
        if self._writable is None:
            return
        try:
            async with asyncio.timeout(timeout):
                await self._writable
        except TimeoutError:
            log.debug("client %s did not read its answer in time", self.peer)
            self.close(unflushed=True)

    async def _refuse(self, refusal: _Refusal) -> None:
        """Answer the refusal, then read and drop what the client still sends, for a while,
        so that it reads the answer instead of a reset."""
        log.debug("refused a request from %s: %s", self.peer, refusal)
        self._release_held()
        if self.transport is None or self._lost:
            return
        text = f"{_REASONS.get(refusal.status, 'Error')}\n".encode()
        self.transport.write(
            f"HTTP/1.1 {refusal.status} {_REASONS.get(refusal.status, 'Error')}\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(text)}\r\nConnection: close\r\n\r\n".encode()
            + text
        )
        self._discard = True
        self._overflow = False
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.transport.resume_reading()
        loop = self.server.loop
        deadline = loop.time() + _LINGER_SECONDS
        while not (self._eof or self._lost) and loop.time() < deadline:
            self._wakeup = loop.create_future()
            try:
                async with asyncio.timeout_at(deadline):
                    await self._wakeup
            except TimeoutError:
                break

    def _release_held(self) -> None:
        self.server.buffered -= self._held
        self._held = 0


def _set_once(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


def _content_length(request: h11.Request) -> int | None:
    for name, value in request.headers:
        if name == b"content-length":
            return int(value)  # h11 has checked it is a number
    return None


def _peer_sans(transport: asyncio.Transport) -> set[str]:
    certificate = transport.get_extra_info("peercert") or {}
    return {value for kind, value in certificate.get("subjectAltName", ()) if kind in _SAN_TYPES}


def _inline_app(app: Callable, environ: dict) -> Callable | None:
    """The app to answer ``environ`` on the event loop, if ``app`` says it can without blocking
    (by an ``inline_app(environ)`` method returning it); None to answer in a worker thread."""
    pick = getattr(app, "inline_app", None)
    return pick(environ) if pick is not None else None


def _run_app(app: Callable, environ: dict) -> tuple[str, list, bytes]:
    """Call the WSGI app in a worker thread: (status line, headers, whole body)."""
    answer: list = []

    def start_response(status, headers, exc_info=None):
        answer[:] = [status, list(headers)]  # nothing is sent before the app returns
        return lambda data: chunks.append(data)  # the legacy write()

    chunks: list[bytes] = []
    try:
        result = app(environ, start_response)
        try:
            chunks.extend(result)
        finally:
            if hasattr(result, "close"):
                result.close()
        if not answer:
            raise RuntimeError("the app did not call start_response")
    except Exception:
        log.exception("error answering %s %s", environ["REQUEST_METHOD"], environ["PATH_INFO"])
        body = b"Internal Server Error\n"
        return "500 Internal Server Error", [("Content-Type", "text/plain")], body
    return answer[0], answer[1], b"".join(chunks)


class _Server:
    """The event loop's side: accepting, the connections, the worker threads."""

    def __init__(self, listener: socket.socket, app: Callable, live: LiveWebConfig | None,
                 limits: Limits):  # fmt: skip
        self.listener = listener
        self.address = listener.getsockname()[:2]
        self.app = app
        self.live = live
        self.limits = limits
        self.loop = asyncio.new_event_loop()
        self.loop.set_exception_handler(_quiet_exception_handler)
        self.buffered = 0
        self._active = 0
        self._connections: OrderedDict[_Connection, None] = OrderedDict()
        # Not daemon threads: the interpreter waits for an answer in progress at exit, rather
        # than stopping a thread inside bcrypt's native code (which aborts the process).
        self._executor = concurrent.futures.ThreadPoolExecutor(
            limits.workers, thread_name_prefix="http-worker"
        )
        self._accepting: asyncio.Task | None = None

    def run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self._accepting = self.loop.create_task(self._accept())
        try:
            self.loop.run_forever()
        finally:
            self.loop.close()

    async def _accept(self) -> None:
        while True:
            try:
                sock, peer = await self.loop.sock_accept(self.listener)
            except OSError as error:  # out of file descriptors, most likely: let some close
                log.warning("cannot accept a connection: %s", error)
                await asyncio.sleep(0.1)
                continue
            sock.setblocking(False)
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            connection = _Connection(self, sock, peer)
            self._admit(connection)
            connection.task = self.loop.create_task(connection.run())

    def _admit(self, connection: _Connection) -> None:
        """Register a connection, closing the stalest idle one when there are too many."""
        while len(self._connections) >= self.limits.max_connections:
            stalest = next((c for c in self._connections if not c.busy), None)
            if stalest is None:
                break
            log.debug("too many connections: closing the one from %s", stalest.peer)
            self._connections.pop(stalest)
            stalest.close()
            if stalest.task is not None:
                stalest.task.cancel()
        self._connections[connection] = None

    def touch(self, connection: _Connection) -> None:
        """``connection`` completed a request: it is the freshest."""
        if connection in self._connections:
            self._connections.move_to_end(connection)

    def forget(self, connection: _Connection) -> None:
        self._connections.pop(connection, None)

    def make_room_for(self, size: int) -> None:
        """Close the connections whose answers have waited longest unread until ``size`` more
        bytes fit under max_unsent_bytes."""
        writing = [c for c in self._connections if c.busy and c.transport is not None]
        unsent = sum(c.transport.get_write_buffer_size() for c in writing)
        for connection in writing:
            if unsent + size <= self.limits.max_unsent_bytes:
                return
            held = connection.transport.get_write_buffer_size()
            if held:
                log.debug("closing %s: too many answers unread", connection.peer)
                unsent -= held
                connection.close(unflushed=True)

    async def call_app(self, environ: dict) -> tuple[str, list, bytes]:
        inline = _inline_app(self.app, environ)
        if inline is not None:
            # Handing a request to a worker and its answer back costs two thread switches, each
            # waiting for the GIL behind busy threads: more than an answer from memory takes.
            return _run_app(inline, environ)
        limits = self.limits
        if self._active >= limits.workers + limits.max_queued_requests:
            body = b"Too many requests at once, retry\n"
            return "503 Service Unavailable", [("Retry-After", "1")], body
        self._active += 1
        try:
            return await self.loop.run_in_executor(self._executor, _run_app, self.app, environ)
        finally:
            self._active -= 1

    async def _stop(self) -> None:
        tasks = [self._accepting] if self._accepting is not None else []
        for connection in list(self._connections):
            connection.close(unflushed=True)
            if connection.task is not None:
                tasks.append(connection.task)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.listener.close()
        self.loop.call_soon(self.loop.stop)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop from another thread: no new connections, the open ones closed."""
        if self.loop.is_closed():
            return
        future = asyncio.run_coroutine_threadsafe(self._stop(), self.loop)
        with contextlib.suppress(concurrent.futures.TimeoutError, RuntimeError):
            future.result(timeout)
        self._executor.shutdown(wait=False, cancel_futures=True)


def _quiet_exception_handler(loop: asyncio.AbstractEventLoop, context: dict) -> None:
    # Clients resetting, half-finished handshakes and the like are routine, not errors.
    log.debug("event loop: %s", context.get("message"), exc_info=context.get("exception"))


class Server:
    """A running server; ``address`` is the bound (host, port), useful when port 0 was asked."""

    def __init__(self, server: _Server):
        self._server = server
        self._thread = threading.Thread(target=server.run, name="http", daemon=True)
        self._thread.start()
        if server.live is not None:
            server.live.start()

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.address
        return host, port

    @property
    def tls(self) -> bool:
        live = self._server.live
        return bool(live and live.config.tls)

    @property
    def url(self) -> str:
        """``http(s)://host:port/``, the host in brackets when it is IPv6."""
        return f"{'https' if self.tls else 'http'}://{format_address(*self.address)}/"

    def shutdown(self) -> None:
        if self._server.live is not None:
            self._server.live.stop()
        self._server.stop()
        self._thread.join(5)


def serve_wsgi(
    app,
    listen: str,
    web_config_file: str | None = None,
    *,
    listen_key: str = "listen",
    limits: Limits | None = None,
) -> Server:
    """Start serving ``app`` in a background thread and return at once.

    ``web_config_file`` (exporter-toolkit format) adds TLS, client certificates, basic auth,
    response headers and a rate limit. ``limits`` bounds what clients can make the server hold
    (the defaults of :class:`Limits` otherwise). ConfigError when the web config is invalid or the
    address is taken.
    """
    limits = limits or Limits()
    host, port = parse_listen_address(listen, listen_key)
    web = load_web_config(web_config_file) if web_config_file else None
    live = LiveWebConfig(web, app) if web else None
    try:
        listener = _listen(host, port)
    except OSError as error:
        reason = error.strerror or str(error)
        raise ConfigError(listen_key, f"cannot listen on {listen}: {reason}") from None
    server = _Server(listener, live or app, live, limits)
    if web:
        log.info(
            "serving on %s with %s%s", format_address(*server.address),
            "TLS" if web.tls else "plain HTTP",
            f", basic auth for {len(web.basic_auth_users)} user(s)" if web.basic_auth_users else "",
        )  # fmt: skip
    return Server(server)


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(1024)
        listener.setblocking(False)
    except OSError:
        listener.close()
        raise
    return listener
