"""The one authenticator shared by SMTP AUTH, IMAP LOGIN/AUTHENTICATE, POP3 USER/PASS/AUTH and webmail.

Two layers:

* :class:`PasswordHasher` is pure computation (no Twisted, no I/O, *slow on purpose*): it hashes new passwords
  with libpass (argon2id by default) and verifies stored hashes, including the hashes Dovecot writes
  (``{SHA512-CRYPT}$6$...``, ``{SSHA512}...``, ``{PLAIN}...``) so that a ``passwd-file`` can be imported as is.
  Any imported or outdated hash is replaced by a hash of the default scheme at the next good login.
* :class:`Authenticator` is the service the protocols call.  It looks the account up (through a callable that
  does the database work off the reactor thread), runs the hash verification in a dedicated thread pool,
  remembers recent successes for ``auth.cache_seconds`` (keyed by an HMAC, never by the password), and
  throttles failed logins per client IP and per account.

Decisions a caller should know:

* An unknown account and a wrong password give the same answer (``reason="invalid"``), and an unknown account
  still pays a dummy verification, so neither the reply nor its timing tells whether an address exists.
  The per-account failure counter is keyed by the *address* as typed (normalised), so it grows the same way for
  addresses that do not exist.
* A disabled account answers ``"disabled"`` only after a correct password; otherwise ``"invalid"``.
* Throttling: every failure in the last ``auth_failure_window`` seconds counts against the client IP (IPv6 by
  its /64, IPv4-mapped IPv6 as IPv4) and against the address.  Every answer is delayed by
  ``0.5 s * 2 ** (failures - 1)`` (capped at ``auth_max_delay``), where ``failures`` is the larger of the two
  counters after this attempt.  Once a counter has reached its maximum the answer is ``"throttled"`` (after the
  delay) without looking the account up or verifying anything.  Every attempt counts from the moment it starts:
  recorded failures plus attempts being checked may not pass a maximum, and an attempt that would pass it waits
  for one under way to end and is judged again (a burst of 100 simultaneous guesses gets at most the maximum
  checked; a client opening 30 connections with the right password gets all of them in, a few at a time).  A
  read of the counters during which an attempt for the same address or account ended is repeated: that attempt no
  longer counts as under way, and its failure may have been recorded after the read began (counters in
  PostgreSQL are read in a thread), so it would count nowhere.  Throttled attempts are not counted again, so a
  counter drains as its failures age out of the window.  A limit of 0 means "no maximum" (the delay still
  grows).  A success clears the *account's* counter but not the IP's: otherwise a client holding one valid
  account could interleave good logins to keep guessing other accounts' passwords.  Loopback clients are
  throttled like everyone else.
* Per account, an outsider must not be able to lock the owner out (as large providers do): while an account is
  over its maximum, the addresses that failed for it get ``"throttled"`` even with its correct password (the
  guesses it slows down cannot bypass it), but an address with no failure in the window, or one the account
  logged in from within the window (remembered in this process), still has its password checked, and only a
  correct one gets in.  The per-IP maximum holds regardless, so a whole office behind one NAT is throttled only
  for its own failures.
* If ``lookup``, the thread pool or the failure counters fail, the returned Deferred fails with that error
  (nothing is counted); protocols answer it as a temporary failure (SMTP ``454 4.7.0``, IMAP ``NO [UNAVAILABLE]``).
* Where the counters live is the :class:`mailserver.clusterstate.LoginFailures` given as ``failures``: in this
  process by default, in the database with PostgreSQL (several nodes then throttle as one).  Attempts still being
  checked and the success cache stay per process: the in-flight counts only close the race of parallel guesses
  within a process, and the cache only saves a verification (its entries are checked against the stored hash).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import os
import re
import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

from passlib.context import CryptContext
from twisted.internet import defer, task, threads
from twisted.logger import Logger

from mailserver import sasl
from mailserver.clusterstate import MAX_TRACKED_KEYS, LocalLoginFailures, LoginFailures
from mailserver.config import AuthConfig, LimitsConfig
from mailserver.proxywire import ProxiedHost

log = Logger()

# ------------------------------------------------------------------------------------------- named limits

#: Longest user name (octets, UTF-8) we look up: 64 local + "@" + 255 domain (RFC 5321 4.5.3.1.1/2).
MAX_USERNAME_OCTETS = 320
#: Longest password (octets, UTF-8) we verify; longer ones fail without hashing (no CPU amplification).
MAX_PASSWORD_OCTETS = 1024
#: Successful verifications remembered at most; the oldest is dropped first.
MAX_CACHE_ENTRIES = 10_000
#: Delay after the first failure in the window; each further failure doubles it (up to auth_max_delay).
BASE_FAILURE_DELAY = 0.5
#: bcrypt only ever uses the first 72 octets of a password (and bcrypt >= 5 refuses longer input).
BCRYPT_MAX_OCTETS = 72

DEFAULT_SCHEMES = ("argon2", "bcrypt", "sha512_crypt")

# Cost parameters for new hashes.  argon2id: the OWASP Password Storage Cheat Sheet's first profile
# (m = 19 MiB, t = 2, p = 1), about 25 ms per verification here; bcrypt cost 12; sha512_crypt 100,000 rounds.
_SERVER_COSTS = {
    "argon2__type": "ID",
    "argon2__time_cost": 2,
    "argon2__memory_cost": 19 * 1024,
    "argon2__parallelism": 1,
    "bcrypt__rounds": 12,
    "sha512_crypt__rounds": 100_000,
}
# Cheapest parameters libpass accepts, for tests only (PasswordHasher(low_cost=True)).
_LOW_COSTS = {
    "argon2__type": "ID",
    "argon2__time_cost": 1,
    "argon2__memory_cost": 8,
    "argon2__parallelism": 1,
    "bcrypt__rounds": 4,
    "sha512_crypt__rounds": 1000,
}

# Every crypt(3)-style scheme we verify.  des_crypt is only accepted behind a {CRYPT}/{DES-CRYPT} prefix:
# an unprefixed 13-character string is too easily something else.
_CRYPT_SCHEMES = ("argon2", "bcrypt", "sha512_crypt", "sha256_crypt", "md5_crypt", "des_crypt")
_UNPREFIXED_SCHEMES = frozenset(_CRYPT_SCHEMES) - {"des_crypt"}

# Dovecot scheme name -> the libpass scheme its payload must be (None: any crypt(3) scheme, as {CRYPT} is
# whatever the system crypt() produced).  Dovecot's "MD5" scheme is MD5-CRYPT.
_DOVECOT_CRYPT = {
    "SHA512-CRYPT": "sha512_crypt",
    "SHA256-CRYPT": "sha256_crypt",
    "BLF-CRYPT": "bcrypt",
    "ARGON2ID": "argon2",
    "ARGON2I": "argon2",
    "MD5-CRYPT": "md5_crypt",
    "MD5": "md5_crypt",
    "DES-CRYPT": "des_crypt",
    "CRYPT": None,
}

# Dovecot digest schemes: name -> (hashlib name, salted, default encoding).  Salted payloads are
# digest || salt (the salt follows the digest), hash input is password || salt.
_DOVECOT_DIGEST = {
    "SHA": ("sha1", False, "base64"),
    "SHA1": ("sha1", False, "base64"),
    "SHA256": ("sha256", False, "base64"),
    "SHA512": ("sha512", False, "base64"),
    "SSHA": ("sha1", True, "base64"),
    "SSHA256": ("sha256", True, "base64"),
    "SSHA512": ("sha512", True, "base64"),
    "SMD5": ("md5", True, "base64"),
    "LDAP-MD5": ("md5", False, "base64"),
    "PLAIN-MD5": ("md5", False, "hex"),
}

_DOVECOT_PLAIN = frozenset({"PLAIN", "CLEAR", "CLEARTEXT"})

# "{SCHEME}" or "{SCHEME.ENCODING}" in front of the hash (Dovecot password schemes).
_PREFIX = re.compile(r"\{([A-Za-z0-9-]+)(?:\.([A-Za-z0-9]+))?\}(.*)", re.DOTALL)
_ENCODINGS = {"b64": "base64", "base64": "base64", "hex": "hex"}


# ------------------------------------------------------------------------------------------- hashing


@dataclass(frozen=True)
class _Parsed:
    """A stored hash, understood: how to verify it and whether it must be replaced after a good login."""

    kind: str  # "crypt" (libpass), "digest" (hashlib), "plain"
    imported: bool  # came with a Dovecot {SCHEME} prefix: always rehashed at the next good login
    crypt_scheme: str = ""  # kind == "crypt": the libpass scheme name
    crypt_hash: str = ""  # kind == "crypt": the hash without prefix
    digest_name: str = ""  # kind == "digest": hashlib name
    digest: bytes = b""  # kind == "digest": expected digest
    salt: bytes = b""  # kind == "digest": salt appended to the password (b"" when unsalted)
    plain: bytes = b""  # kind == "plain": the password itself


class PasswordHasher:
    """Hash new passwords with the default libpass scheme; verify stored and imported hashes.

    Every method is CPU-bound and slow by design: call them from the hash thread pool, never from the reactor.
    ``low_cost=True`` uses the cheapest parameters libpass accepts, for tests only.
    """

    def __init__(self, default_scheme: str = "argon2", *, low_cost: bool = False):
        if default_scheme not in DEFAULT_SCHEMES:
            raise ValueError(f"default scheme must be one of {', '.join(DEFAULT_SCHEMES)}, not {default_scheme!r}")
        self.default_scheme = default_scheme
        costs = _LOW_COSTS if low_cost else _SERVER_COSTS
        # deprecated="auto": every scheme except the default is deprecated, so needs_update() asks for a rehash
        # of it, and of default-scheme hashes made with other cost parameters.
        self._context = CryptContext(schemes=list(_CRYPT_SCHEMES), default=default_scheme,
                                     deprecated=["auto"], **costs)
        self._dummy_hash: str | None = None
        self._dummy_lock = threading.Lock()

    # -- public API

    def hash(self, password: str) -> str:
        """A new hash of ``password`` in the default scheme (libpass's own format, no ``{SCHEME}`` prefix)."""
        return self._context.hash(_secret(self.default_scheme, password))

    def verify(self, password: str, stored: str) -> tuple[bool, str | None]:
        """``(ok, new_hash)``: whether ``password`` matches ``stored``, and when it does and ``stored`` is
        imported, of another scheme or of outdated cost, the hash to store instead (else None).

        A stored value we cannot parse never matches (and never raises).
        """
        try:
            parsed = _parse(stored)
        except ValueError:
            return False, None
        try:
            ok = self._check(parsed, password)
        except (ValueError, TypeError):
            # libpass raises for malformed hashes it identified, NUL in a bcrypt password, oversize input.
            return False, None
        if not ok:
            return False, None
        if parsed.imported or parsed.kind != "crypt" or self._context.needs_update(parsed.crypt_hash):
            return True, self.hash(password)
        return True, None

    def check_importable(self, stored: str) -> None:
        """Raise ``ValueError("unknown hash scheme ...")`` unless :meth:`verify` understands ``stored``."""
        _parse(stored)

    def prepare(self) -> None:
        """Make the hash that unknown accounts are checked against (blocking, a real hash's cost). The server calls
        this at start, before it listens: built lazily, it made the first unknown-account login after a start take
        twice as long as later ones, which tells accounts apart."""
        with self._dummy_lock:
            if self._dummy_hash is None:
                self._dummy_hash = self.hash(os.urandom(16).hex())

    @property
    def prepared(self) -> bool:
        """Whether :meth:`prepare` has run."""
        return self._dummy_hash is not None

    def dummy_verify(self, password: str) -> None:
        """Spend about the time of a real verification (for unknown accounts: no timing oracle)."""
        self.prepare()  # already done at start in the server; here for other users of the class
        dummy = self._dummy_hash
        try:
            self._context.verify(_secret(self.default_scheme, password), dummy)
        except (ValueError, TypeError):
            pass  # same as verify(): input libpass refuses simply does not match

    # -- internals

    def _check(self, parsed: _Parsed, password: str) -> bool:
        pw = password.encode("utf-8", "surrogatepass")
        if parsed.kind == "plain":
            return hmac.compare_digest(pw, parsed.plain)
        if parsed.kind == "digest":
            computed = hashlib.new(parsed.digest_name, pw + parsed.salt).digest()
            return hmac.compare_digest(computed, parsed.digest)
        handler = self._context.handler(parsed.crypt_scheme)
        return handler.verify(_secret(parsed.crypt_scheme, password), parsed.crypt_hash)


def _secret(scheme: str, password: str) -> str | bytes:
    """The secret libpass gets: bcrypt ignores octets past 72 (and bcrypt >= 5 raises), so cut them here,
    exactly as the systems that wrote imported $2y$ hashes did."""
    if scheme == "bcrypt":
        raw = password.encode("utf-8", "surrogatepass")
        if len(raw) > BCRYPT_MAX_OCTETS:
            return raw[:BCRYPT_MAX_OCTETS]
    return password


_IDENTIFY_CONTEXT = CryptContext(schemes=list(_CRYPT_SCHEMES))


def _identify(h: str) -> str | None:
    return _IDENTIFY_CONTEXT.identify(h, required=False)


def _check_crypt_format(scheme: str, h: str) -> None:
    """Raise ValueError if libpass cannot parse ``h`` as ``scheme`` (wrong rounds, salt, length...)."""
    handler = _IDENTIFY_CONTEXT.handler(scheme)
    try:
        parsed = handler.from_string(h)
    except (ValueError, TypeError) as e:
        raise ValueError(f"unknown hash scheme: malformed {scheme} hash ({e})") from None
    if not getattr(parsed, "checksum", None):
        raise ValueError(f"unknown hash scheme: {scheme} settings without a hash")


def _decode(payload: str, encoding: str) -> bytes:
    try:
        if encoding == "hex":
            return bytes.fromhex(payload)
        return base64.b64decode(payload.encode("ascii"), validate=True)
    except (ValueError, binascii.Error, UnicodeEncodeError):
        raise ValueError(f"unknown hash scheme: payload is not valid {encoding}") from None


def _parse(stored: str) -> _Parsed:
    """Understand a stored hash, or raise ``ValueError("unknown hash scheme ...")``."""
    if not isinstance(stored, str) or not stored:
        raise ValueError("unknown hash scheme: empty hash")
    m = _PREFIX.fullmatch(stored)
    if m is None:
        scheme = _identify(stored)
        if scheme not in _UNPREFIXED_SCHEMES:
            raise ValueError("unknown hash scheme: not a {SCHEME} prefix nor a $id$ crypt hash")
        _check_crypt_format(scheme, stored)
        return _Parsed("crypt", imported=False, crypt_scheme=scheme, crypt_hash=stored)

    name, enc_name, payload = m.group(1).upper(), m.group(2), m.group(3)
    encoding = None
    if enc_name is not None:
        encoding = _ENCODINGS.get(enc_name.lower())
        if encoding is None:
            raise ValueError(f"unknown hash scheme: unknown encoding .{enc_name} in {{{m.group(1)}.{enc_name}}}")

    if name in _DOVECOT_CRYPT:
        if encoding is not None:
            raise ValueError(f"unknown hash scheme: {{{name}}} takes no .{enc_name} encoding")
        want = _DOVECOT_CRYPT[name]
        scheme = _identify(payload)
        if scheme is None or (want is not None and scheme != want):
            raise ValueError(f"unknown hash scheme: {{{name}}} payload is not a {want or 'crypt'} hash")
        if name == "ARGON2ID" and not payload.startswith("$argon2id$"):
            raise ValueError("unknown hash scheme: {ARGON2ID} payload is not $argon2id$")
        if name == "ARGON2I" and not payload.startswith("$argon2i$"):
            raise ValueError("unknown hash scheme: {ARGON2I} payload is not $argon2i$")
        _check_crypt_format(scheme, payload)
        return _Parsed("crypt", imported=True, crypt_scheme=scheme, crypt_hash=payload)

    if name in _DOVECOT_PLAIN:
        # Dovecot's PLAIN is stored as is; PLAIN.b64 / PLAIN.hex encode it.
        raw = payload.encode("utf-8", "surrogatepass") if encoding is None else _decode(payload, encoding)
        return _Parsed("plain", imported=True, plain=raw)

    if name in _DOVECOT_DIGEST:
        digest_name, salted, default_encoding = _DOVECOT_DIGEST[name]
        size = hashlib.new(digest_name).digest_size
        if encoding is None:
            # Dovecot also accepts hex for a base64 scheme when the length says so (2 chars per octet).
            if (default_encoding == "base64" and not salted and len(payload) == 2 * size
                    and re.fullmatch(r"[0-9A-Fa-f]+", payload)):
                encoding = "hex"
            else:
                encoding = default_encoding
        raw = _decode(payload, encoding)
        if salted:
            if len(raw) <= size:
                raise ValueError(f"unknown hash scheme: {{{name}}} payload too short for digest and salt")
            return _Parsed("digest", imported=True, digest_name=digest_name, digest=raw[:size], salt=raw[size:])
        if len(raw) != size:
            raise ValueError(f"unknown hash scheme: {{{name}}} payload is not a {digest_name} digest")
        return _Parsed("digest", imported=True, digest_name=digest_name, digest=raw)

    raise ValueError(f"unknown hash scheme {{{m.group(1)}}}")


# ------------------------------------------------------------------------------------------- addresses


def normalize_address(username: str) -> str:
    """The account key for a login name: surrounding white space removed, lower-cased (local part included:
    accounts are case-insensitive)."""
    return username.strip().lower()


def _acceptable(address: str, password: str) -> bool:
    """Whether a login is worth looking up at all (else it fails as "invalid" without hashing)."""
    if not address or not password:
        return False
    try:
        addr_len = len(address.encode("utf-8", "surrogatepass"))
        pw_len = len(password.encode("utf-8", "surrogatepass"))
    except UnicodeEncodeError:  # pragma: no cover - surrogatepass encodes every str
        return False
    if addr_len > MAX_USERNAME_OCTETS or pw_len > MAX_PASSWORD_OCTETS:
        return False
    if "\0" in password or any(ord(c) < 0x20 or c == "\x7f" for c in address):
        return False
    return True


def _parse_ip(client_ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(client_ip.split("%", 1)[0])  # drop an IPv6 zone index
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def is_loopback(client_ip: str) -> bool:
    """127.0.0.0/8, ::1 (and IPv4-mapped 127.x); never a client that came through a load balancer's PROXY header
    (:class:`~mailserver.proxywire.ProxiedHost`): the balancer's hop to us is a network, whatever it says."""
    if isinstance(client_ip, ProxiedHost):
        return False
    ip = _parse_ip(client_ip)
    return ip is not None and ip.is_loopback


def _ip_key(client_ip: str) -> str:
    """The throttling key of a client: IPv4 address, IPv6 /64 (one host usually owns a whole /64)."""
    ip = _parse_ip(client_ip)
    if ip is None:
        return client_ip
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


# ------------------------------------------------------------------------------------------- authenticator


@dataclass(frozen=True)
class Credentials:
    account_id: int
    address: str
    password_hash: str
    enabled: bool


@dataclass(frozen=True)
class AuthResult:
    ok: bool
    account_id: int | None = None
    address: str | None = None
    #: "" (ok), "invalid" (unknown account or wrong password: never told apart), "disabled", "throttled".
    reason: str = ""


INVALID = AuthResult(False, reason="invalid")
THROTTLED = AuthResult(False, reason="throttled")


def _over(failures: int, in_flight: int, limit: int) -> bool:
    """Whether recorded ``failures`` plus attempts ``in_flight`` reach ``limit`` (0: no maximum): every attempt
    counts from the moment it starts."""
    return limit > 0 and failures + in_flight >= limit


def _decrement(counter: Counter[str], key: str) -> None:
    counter[key] -= 1
    if counter[key] <= 0:
        del counter[key]


class _CounterRead:
    """One admission's read of the failure counters; ``stale`` once an attempt it competes with ended meanwhile."""

    __slots__ = ("stale",)

    def __init__(self) -> None:
        self.stale = False


PoolRunner = Callable[..., "defer.Deferred[Any]"]


def _hash_id(stored_hash: str) -> bytes:
    """A short digest naming a stored password hash in the success cache (the hash itself is not kept there, nor
    sent to other workers)."""
    return hashlib.sha256(stored_hash.encode("utf-8", "surrogatepass")).digest()[:16]


class Authenticator:
    """Check a user name and password for any protocol; see the module docstring for the rules.

    ``lookup(address) -> Deferred[Credentials | None]`` and ``update_hash(account_id, new_hash) ->
    Deferred[None]`` do their database work off the reactor thread.  ``hash_pool`` is a started
    :class:`twisted.python.threadpool.ThreadPool` dedicated to hashing (used with ``deferToThreadPool(clock,
    hash_pool, ...)``), or any callable ``run(f, *args) -> Deferred`` (tests pass a synchronous one).
    ``clock`` provides ``seconds()`` and ``callLater`` (and ``callFromThread`` with a real pool): the reactor,
    or a ``task.Clock`` in tests.  ``secret`` keys the success cache; None = random per process.  ``failures``
    holds the failure counters (see the module docstring); None = in this process.
    """

    def __init__(self, hasher: PasswordHasher, lookup: Callable[[str], "defer.Deferred[Credentials | None]"],
                 update_hash: Callable[[int, str], "defer.Deferred[None]"], *, hash_pool: Any, clock: Any,
                 limits: LimitsConfig, auth_config: AuthConfig, secret: bytes | None = None,
                 failures: LoginFailures | None = None):
        self._hasher = hasher
        self._lookup = lookup
        self._update_hash = update_hash
        self._clock = clock
        self._limits = limits
        self._config = auth_config
        self._secret = secret if secret is not None else os.urandom(32)
        if hasattr(hash_pool, "callInThreadWithCallback"):
            self._run: PoolRunner = lambda f, *a: threads.deferToThreadPool(clock, hash_pool, f, *a)
        elif callable(hash_pool):
            self._run = hash_pool
        else:
            raise TypeError("hash_pool must be a ThreadPool or a callable run(f, *args) -> Deferred")
        if failures is None:
            failures = LocalLoginFailures(limits.auth_failure_window, limits.auth_max_failures_per_ip,
                                          limits.auth_max_failures_per_account, max_keys=MAX_TRACKED_KEYS)
        self.failures = failures
        #: ``observer(protocol, outcome, reason)`` is told of every login (``mailserver/login.py``): the metrics.
        self.observer: Callable[[str, str, str], None] | None = None
        self._ip_in_flight: Counter[str] = Counter()
        self._account_in_flight: Counter[str] = Counter()
        self._waiters: list[defer.Deferred] = []  # attempts waiting for one under way to end
        # key ("ip", ip key) or ("account", address) -> the admissions reading the counters for it right now
        self._reading: dict[tuple[str, str], set[_CounterRead]] = {}
        # (address, ip key) -> when it last logged in: addresses an account is known to use (MAX_TRACKED_KEYS)
        self._good_logins: OrderedDict[tuple[str, str], float] = OrderedDict()
        # HMAC(address, password) -> (expires, address, ids of the stored hashes the password was verified against)
        self._cache: OrderedDict[bytes, tuple[float, str, frozenset[bytes]]] = OrderedDict()
        #: ``on_verified(key, address, hash_ids, seconds)`` is told of every new cache entry and ``on_forget(address)``
        #: of every :meth:`forget`: the worker bus passes them to the other workers (:meth:`apply_shared`), which
        #: share this process's ``secret``, so a login verified by one worker is a cache hit in all of them.
        self.on_verified: Callable[[bytes, str, frozenset[bytes], float], None] | None = None
        self.on_forget: Callable[[str], None] | None = None

    # -- public API

    def authenticate(self, username: str, password: str, client_ip: str) -> "defer.Deferred[AuthResult]":
        """Check ``username``/``password`` from ``client_ip``; fires with an :class:`AuthResult`."""
        return defer.ensureDeferred(self._authenticate(username, password, client_ip))

    def plaintext_allowed(self, client_ip: str, tls_active: bool) -> bool:
        """Whether a plaintext mechanism (PLAIN, LOGIN, USER/PASS, IMAP LOGIN) may be offered and used: the one
        policy of :func:`mailserver.sasl.plaintext_allowed` for ``client_ip``."""
        return sasl.plaintext_allowed(tls_active=tls_active, loopback=is_loopback(client_ip),
                                      allow_without_tls=self._config.allow_plaintext_without_tls)

    def forget(self, address: str) -> None:
        """Drop every cached success for ``address`` (after a password change or disabling)."""
        address = normalize_address(address)
        self._forget_local(address)
        if self.on_forget is not None:
            self.on_forget(address)

    def _forget_local(self, address: str) -> None:
        for key in [k for k, (_, a, _) in self._cache.items() if a == address]:
            del self._cache[key]

    def apply_shared(self, frame: dict) -> None:
        """A cache entry (``{"t": "login", "k": key hex, "a": address, "h": [hash id hex…], "s": seconds}``) or a
        forget (``{"t": "login-forget", "a": address}``) from another worker of this supervisor.  Malformed frames
        are ignored; an entry never outlives this process's own ``cache_seconds``."""
        try:
            address = frame["a"]
            if not isinstance(address, str):
                return
            if frame.get("t") == "login-forget":
                self._forget_local(address)
                return
            key = bytes.fromhex(frame["k"])
            hash_ids = frozenset(bytes.fromhex(h) for h in frame["h"][:4])
            seconds = min(float(frame["s"]), self._config.cache_seconds)
        except (KeyError, TypeError, ValueError):
            return
        if len(key) != 32 or not hash_ids or not seconds > 0:
            return
        self._cache_store(key, address, hash_ids, seconds)

    # -- internals

    async def _authenticate(self, username: str, password: str, client_ip: str) -> AuthResult:
        address = normalize_address(username)
        ip_key = _ip_key(client_ip)
        limits = self._limits
        # Admission. Every attempt counts from the moment it starts: the recorded failures plus the attempts being
        # verified right now may not pass a limit, so a burst of simultaneous guesses gets at most ``limit``
        # verified. One that would pass it waits for an attempt under way to end and is judged again: a client
        # opening many connections with the right password is let in (the earlier ones succeed), a burst of
        # guesses is throttled (the earlier ones fail).
        while True:
            read = _CounterRead()
            keys = (("ip", ip_key), ("account", address))
            for key in keys:
                self._reading.setdefault(key, set()).add(read)
            try:
                ip_n, account_n = await self.failures.counts(ip_key, address, self._clock.seconds())
            finally:
                for key in keys:
                    readers = self._reading[key]
                    readers.discard(read)
                    if not readers:
                        del self._reading[key]
            if read.stale:
                # An attempt for this address or account ended while the counters were read (in the database
                # with PostgreSQL): its failure may be missing from what was read, and it no longer counts as
                # under way, so it would count nowhere. Read again.
                continue
            ip_over = _over(ip_n, 0, limits.auth_max_failures_per_ip)
            # Per account, a failing account does not lock its owner out: an address that has not been failing,
            # or one this account logged in from before, still gets its password checked (and only a correct one
            # gets in); only addresses that failed are throttled for it.
            account_over = _over(account_n, 0, limits.auth_max_failures_per_account)
            trusted = ip_n == 0 or self._known_good(address, ip_key)
            if ip_over or (account_over and not trusted):
                log.info("auth throttled for {address!r} from {ip}", address=address, ip=client_ip)
                await self._sleep(self._delay(ip_n, account_n))
                return THROTTLED
            busy = (_over(ip_n, self._ip_in_flight[ip_key], limits.auth_max_failures_per_ip)
                    or (not account_over
                        and _over(account_n, self._account_in_flight[address], limits.auth_max_failures_per_account)))
            if not busy:
                break
            await self._slot_freed()
        self._ip_in_flight[ip_key] += 1  # no await since the check above: admission is atomic on the reactor
        self._account_in_flight[address] += 1
        try:
            result = await self._check(address, password)
            # The outcome is recorded before the slot is given back, so a waiter judged again sees it.
            now = self._clock.seconds()
            if result.reason == "invalid":
                ip_n, account_n = await self.failures.add(ip_key, address, now)
            elif result.ok:
                self._remember_good(address, ip_key, now)
                if account_n:
                    ip_n, account_n = await self.failures.clear_account(ip_key, address, now)
                # Else the account had no failure when this attempt was admitted: nothing to clear, and no turn in
                # the database's writer thread (with worker processes, every good login took one). A failure
                # recorded meanwhile by a concurrent attempt stays, as if it had come just after this login.
            else:
                ip_n, account_n = await self.failures.counts(ip_key, address, now)
        finally:
            _decrement(self._ip_in_flight, ip_key)
            _decrement(self._account_in_flight, address)
            for key in (("ip", ip_key), ("account", address)):
                for read in self._reading.get(key, ()):
                    read.stale = True
            self._wake_waiters()
        await self._sleep(self._delay(ip_n, account_n))
        return result

    def _slot_freed(self) -> defer.Deferred:
        """Fires when an attempt under way ends (then the waiter looks at the limits again)."""
        d: defer.Deferred = defer.Deferred()
        self._waiters.append(d)
        return d

    def _wake_waiters(self) -> None:
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(None)

    def _known_good(self, address: str, ip_key: str) -> bool:
        """Whether ``address`` logged in from ``ip_key`` within the failure window (in this process)."""
        seen = self._good_logins.get((address, ip_key))
        return seen is not None and self._clock.seconds() - seen < self._limits.auth_failure_window

    def _remember_good(self, address: str, ip_key: str, now: float) -> None:
        self._good_logins[(address, ip_key)] = now
        self._good_logins.move_to_end((address, ip_key))
        while len(self._good_logins) > MAX_TRACKED_KEYS:
            self._good_logins.popitem(last=False)

    async def _check(self, address: str, password: str) -> AuthResult:
        if not _acceptable(address, password):
            return INVALID
        creds = await self._lookup(address)
        if creds is None:
            await self._run(self._hasher.dummy_verify, password)
            return INVALID

        key = self._cache_key(address, password)
        if self._cache_hit(key, creds.password_hash):
            ok = True
        else:
            ok, new_hash = await self._run(self._hasher.verify, password, creds.password_hash)
            if ok:
                hashes = {_hash_id(creds.password_hash)}
                if new_hash is not None:
                    hashes.add(_hash_id(new_hash))
                    await self._store_new_hash(creds, new_hash)
                self._cache_put(key, address, frozenset(hashes))
        if not ok:
            return INVALID
        if not creds.enabled:
            return AuthResult(False, reason="disabled")
        return AuthResult(True, account_id=creds.account_id, address=creds.address)

    async def _store_new_hash(self, creds: Credentials, new_hash: str) -> None:
        try:
            await self._update_hash(creds.account_id, new_hash)
        except Exception:
            # The login itself succeeded; the old hash stays and is replaced at a later login.
            log.failure("could not store the rehashed password of account {account_id}",
                        account_id=creds.account_id)
        else:
            log.info("password of account {account_id} rehashed to {scheme}", account_id=creds.account_id,
                     scheme=self._hasher.default_scheme)

    def _delay(self, ip_failures: int, account_failures: int) -> float:
        failures = max(ip_failures, account_failures)
        if failures == 0:
            return 0.0
        return min(self._limits.auth_max_delay, BASE_FAILURE_DELAY * 2.0 ** min(failures - 1, 64))

    async def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            await task.deferLater(self._clock, seconds, lambda: None)

    # -- success cache

    def _cache_key(self, address: str, password: str) -> bytes:
        message = address.encode("utf-8", "surrogatepass") + b"\0" + password.encode("utf-8", "surrogatepass")
        return hmac.new(self._secret, message, hashlib.sha256).digest()

    def _cache_hit(self, key: bytes, stored_hash: str) -> bool:
        entry = self._cache.get(key)
        if entry is None:
            return False
        expires, _, hashes = entry
        if expires <= self._clock.seconds():
            del self._cache[key]
            return False
        # The stored hash must still be one the password was verified against: a password change elsewhere
        # (another process, the CLI) invalidates the entry without forget().
        return _hash_id(stored_hash) in hashes

    def _cache_put(self, key: bytes, address: str, hashes: frozenset[bytes]) -> None:
        seconds = self._config.cache_seconds
        if seconds <= 0:
            return
        self._cache_store(key, address, hashes, seconds)
        if self.on_verified is not None:
            self.on_verified(key, address, hashes, seconds)

    def _cache_store(self, key: bytes, address: str, hashes: frozenset[bytes], seconds: float) -> None:
        self._cache.pop(key, None)
        self._cache[key] = (self._clock.seconds() + seconds, address, hashes)
        while len(self._cache) > MAX_CACHE_ENTRIES:
            self._cache.popitem(last=False)
