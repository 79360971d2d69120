"""WSGI middleware of the web config: basic auth against bcrypt hashes, a rate limit, and
response headers."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping

import bcrypt

#: Different credentials that may wait for the one bcrypt check running at a time; more get 429
#: at once, so that a flood of wrong passwords never holds more than a few of the server's worker
#: threads. Requests with credentials already being checked wait for that check instead; clients
#: whose password was verified once are checked by HMAC and never wait here.
MAX_BCRYPT_WAITING = 2
#: Wrong credentials remembered (as keyed digests), so that repeating one costs no bcrypt.
MAX_REMEMBERED_REFUSALS = 1024
#: The longest ``Authorization`` header value looked at; longer ones are refused unread.
MAX_AUTHORIZATION_LENGTH = 4096


def with_headers(app: Callable, headers: tuple[tuple[str, str], ...]) -> Callable:
    """``app`` with ``headers`` added to every response."""

    def add_headers_to(environ, start_response):
        def add_headers(status, response_headers, exc_info=None):
            return start_response(status, [*response_headers, *headers], exc_info)

        return app(environ, add_headers)

    return add_headers_to


def plain_response(start_response, status: str, body: bytes, extra=()) -> Iterable[bytes]:
    """A short text/plain answer from middleware."""
    start_response(
        status,
        [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body))), *extra],
    )
    return [body]


def bcrypt_cost(hashed: bytes) -> int:
    """The cost of a ``$2b$NN$...`` hash."""
    return int(hashed[4:6])


class BasicAuth:
    """HTTP basic auth against bcrypt hashes, as exporter-toolkit's ``basic_auth_users``.

    bcrypt is slow on purpose (~70 ms at cost 10), so a verified password is remembered as a
    keyed digest: later requests with the same credentials cost one HMAC, compared in constant
    time. Only one bcrypt check runs at a time and at most MAX_BCRYPT_WAITING requests wait for
    it (429 beyond), so a flood of wrong passwords costs at most one core and a few threads.

    A name that is no user is checked against a dummy hash of a user's cost, chosen by a keyed
    digest of the name: a name always takes the same time, and unknown names take the times
    real users take, so timing does not tell which names exist, whatever the users' costs.
    The dummy hashes are made here, by whoever builds the middleware (the reload thread), never
    while a request waits."""

    def __init__(self, app: Callable, users: Mapping[str, bytes], realm: str = "neat-exporter"):
        self._app = app
        self._users = dict(users)
        self._challenge = ("WWW-Authenticate", f'Basic realm="{realm}", charset="UTF-8"')
        self._digest_key = secrets.token_bytes(32)
        self._verified: dict[str, bytes] = {}
        self._refused: OrderedDict[tuple[str, bytes], None] = OrderedDict()
        self._bcrypt_lock = threading.Lock()
        self._checking: dict[tuple[str, bytes], int] = {}  # credentials waiting: how many times
        self._checking_lock = threading.Lock()
        costs = sorted(bcrypt_cost(hashed) for hashed in self._users.values()) or [10]
        dummies = {cost: bcrypt.hashpw(b"dummy", bcrypt.gensalt(cost)) for cost in set(costs)}
        self._dummy_hashes = [dummies[cost] for cost in costs]  # one per user: their costs' mix

    def __call__(self, environ, start_response):
        credentials = _basic_credentials(environ.get("HTTP_AUTHORIZATION", ""))
        if credentials:
            verdict = self.check(*credentials)
            if verdict is None:
                return plain_response(
                    start_response,
                    "429 Too Many Requests",
                    b"Too many password checks at once, retry\n",
                    [("Retry-After", "1")],
                )
            if verdict:
                environ["REMOTE_USER"] = credentials[0]
                return self._app(environ, start_response)
        return plain_response(
            start_response, "401 Unauthorized", b"Unauthorized\n", [self._challenge]
        )

    def check(self, username: str, password: bytes) -> bool | None:
        """Whether the password is the user's; None when too many checks are waiting."""
        digest = hmac.new(self._digest_key, password, hashlib.sha256).digest()
        key = (username, digest)
        verdict = self._remembered(key)
        if verdict is not None:
            return verdict
        with self._checking_lock:
            if key not in self._checking and len(self._checking) > MAX_BCRYPT_WAITING:
                return None
            self._checking[key] = self._checking.get(key, 0) + 1
        try:
            with self._bcrypt_lock:
                verdict = self._remembered(key)  # checked while this request waited?
                if verdict is None:
                    hashed = self._users.get(username) or self._dummy_hash(username)
                    verdict = _checkpw(password, hashed) and username in self._users
                    if verdict:
                        self._verified[username] = digest
                    else:
                        self._refused[key] = None
                        if len(self._refused) > MAX_REMEMBERED_REFUSALS:
                            self._refused.popitem(last=False)
        finally:
            with self._checking_lock:
                self._checking[key] -= 1
                if not self._checking[key]:
                    del self._checking[key]
        return verdict

    def _remembered(self, key: tuple[str, bytes]) -> bool | None:
        username, digest = key
        known = self._verified.get(username)
        if known is not None and hmac.compare_digest(known, digest):
            return True
        return False if key in self._refused else None

    def _dummy_hash(self, username: str) -> bytes:
        pick = hmac.new(self._digest_key, username.encode(errors="replace"), hashlib.sha256)
        return self._dummy_hashes[int.from_bytes(pick.digest()[:8]) % len(self._dummy_hashes)]


def _checkpw(password: bytes, hashed: bytes) -> bool:
    try:
        return bcrypt.checkpw(password, hashed)
    except ValueError:  # bcrypt refuses passwords longer than 72 bytes
        return False


def _basic_credentials(header: str) -> tuple[str, bytes] | None:
    """(user, password) of a ``Basic`` header, None for anything else. WSGI gives header values
    as latin-1 text, so any byte may be there: what is not base64 of ``user:password`` with a
    UTF-8 user name is no credentials (401), never an error."""
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or len(encoded) > MAX_AUTHORIZATION_LENGTH:
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
        username, sep, password = decoded.partition(b":")
        return (username.decode(), password) if sep else None
    except ValueError:  # binascii.Error, UnicodeDecodeError, and non-ASCII text for b64decode
        return None


class RateLimit:
    """A token bucket over all requests: one token per ``interval`` s, at most ``burst``."""

    def __init__(
        self,
        app: Callable,
        interval: float,
        burst: int,
        monotonic: Callable[[], float] = time.monotonic,
    ):
        """``monotonic`` tells the seconds that refill the bucket, so tests can run it on a
        clock of their own."""
        self._app = app
        self._interval = interval
        self._burst = burst
        self._monotonic = monotonic
        self._tokens = float(burst)
        self._updated = monotonic()
        self._lock = threading.Lock()

    def __call__(self, environ, start_response):
        with self._lock:
            now = self._monotonic()
            elapsed, self._updated = now - self._updated, now
            self._tokens = min(self._burst, self._tokens + elapsed / self._interval)
            allowed = self._tokens >= 1
            if allowed:
                self._tokens -= 1
        if not allowed:
            return plain_response(start_response, "429 Too Many Requests", b"Too Many Requests\n")
        return self._app(environ, start_response)
