"""Login clients for the throttling tests: real stdlib clients (imaplib, poplib, smtplib, http.client) that can
come from another loopback address (127.0.0.0/8 stays on this machine: every address of it is the loopback
interface), so that one test can play an attacker and a clean client; and a counter of the password checks a
running server really makes.

Each client is split in two: ``open_*`` connects and gets to the point just before the password (IMAP: greeting;
POP3: USER accepted; SMTP: EHLO answered; webmail: the sign-in form and its pre-session cookie fetched), and the
returned callable sends the password and classifies the answer as ``"ok"``, ``"checked"`` (the password was
verified and was wrong) or ``"throttled"``. A burst test opens every client first, then releases all the password
steps at one barrier: the guesses reach the server at the same instant.
"""

from __future__ import annotations

import base64
import http.client
import imaplib
import poplib
import re
import smtplib
import socket
import ssl
import threading
import time
import urllib.parse
from contextlib import contextmanager
from typing import Callable

HOST = "127.0.0.1"

Attempt = Callable[[], str]


def tls_context() -> ssl.SSLContext:
    """A client context for the test server's self-signed certificate."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class _Imap(imaplib.IMAP4):
    def __init__(self, port: int, source: str):
        self._source = source
        super().__init__(HOST, port, timeout=60)

    def _create_socket(self, timeout):
        return socket.create_connection((self.host, self.port), timeout, source_address=(self._source, 0))


class _ImapTls(imaplib.IMAP4_SSL):
    def __init__(self, port: int, source: str):
        self._source = source
        super().__init__(HOST, port, ssl_context=tls_context(), timeout=60)

    def _create_socket(self, timeout):
        sock = socket.create_connection((self.host, self.port), timeout, source_address=(self._source, 0))
        return self.ssl_context.wrap_socket(sock, server_hostname=self.host)


class _Pop3(poplib.POP3):
    def __init__(self, port: int, source: str):
        self._source = source
        super().__init__(HOST, port, timeout=60)

    def _create_socket(self, timeout):
        return socket.create_connection((self.host, self.port), timeout, source_address=(self._source, 0))


class _Pop3Tls(poplib.POP3_SSL):
    def __init__(self, port: int, source: str):
        self._source = source
        super().__init__(HOST, port, context=tls_context(), timeout=60)

    def _create_socket(self, timeout):
        sock = socket.create_connection((self.host, self.port), timeout, source_address=(self._source, 0))
        return self.context.wrap_socket(sock, server_hostname=self.host)


def open_imap(port: int, user: str, password: str, source: str = HOST, tls: bool = False) -> Attempt:
    """IMAP LOGIN (on an imaps port with ``tls``)."""
    c = (_ImapTls if tls else _Imap)(port, source)

    def attempt() -> str:
        try:
            c.login(user, password)
            return "ok"
        except imaplib.IMAP4.error as e:
            text = str(e)
            return "throttled" if "UNAVAILABLE" in text else "checked" if "AUTHENTICATIONFAILED" in text else text
        finally:
            try:
                c.shutdown()
            except OSError:
                pass

    return attempt


def open_pop3(port: int, user: str, password: str, source: str = HOST, tls: bool = False) -> Attempt:
    """POP3 USER/PASS (on a pop3s port with ``tls``)."""
    c = (_Pop3Tls if tls else _Pop3)(port, source)
    c.user(user)

    def attempt() -> str:
        try:
            c.pass_(password)
            return "ok"
        except poplib.error_proto as e:
            text = str(e)
            return "throttled" if "SYS/TEMP" in text else "checked" if "[AUTH]" in text else text
        finally:
            c.close()

    return attempt


def open_smtp(port: int, user: str, password: str, source: str = HOST, tls: bool = False) -> Attempt:
    """SMTP AUTH PLAIN (on a submissions port with ``tls``)."""
    if tls:
        c = smtplib.SMTP_SSL(HOST, port, timeout=60, source_address=(source, 0), context=tls_context())
    else:
        c = smtplib.SMTP(HOST, port, timeout=60, source_address=(source, 0))
    c.ehlo()

    def attempt() -> str:
        try:
            code, _ = c.docmd("AUTH", "PLAIN " + base64.b64encode(f"\0{user}\0{password}".encode()).decode())
            return {235: "ok", 535: "checked", 454: "throttled"}.get(code, str(code))
        finally:
            c.close()

    return attempt


def _http(port: int, source: str, tls: bool) -> http.client.HTTPConnection:
    if tls:
        return http.client.HTTPSConnection(HOST, port, timeout=60, source_address=(source, 0),
                                           context=tls_context())
    return http.client.HTTPConnection(HOST, port, timeout=60, source_address=(source, 0))


def open_webmail(port: int, user: str, password: str, source: str = HOST, tls: bool = False) -> Attempt:
    """The sign-in form: over ``https`` with ``tls``, else over a plain ``http`` listener (which serves the whole
    webmail when no ``https`` is configured)."""
    conn = _http(port, source, tls)
    conn.request("GET", "/login", headers={"Host": f"{HOST}:{port}"})
    r = conn.getresponse()
    page = r.read()
    pre = re.search(rb'name="_pre" value="([^"]+)"', page).group(1).decode()
    cookie = next(c.split(";", 1)[0] for c in r.headers.get_all("Set-Cookie") if c.startswith("wm_pre="))
    conn.close()
    conn = _http(port, source, tls)
    conn.connect()  # the connection is open before the barrier: only the request is left to send
    body = urllib.parse.urlencode({"_pre": pre, "username": user, "password": password, "next": "/"}).encode()

    def attempt() -> str:
        try:
            conn.request("POST", "/login", body=body, headers={
                "Host": f"{HOST}:{port}", "Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"})
            r = conn.getresponse()
            page = r.read()
            if r.status == 303:
                return "ok"
            if r.status == 429:
                return "throttled"
            return "checked" if r.status == 403 and b"Wrong address or password" in page else str(r.status)
        finally:
            conn.close()

    return attempt


OPENERS = {"imap": open_imap, "pop3": open_pop3, "smtp": open_smtp, "webmail": open_webmail}


def login(kind: str, port: int, user: str, password: str, source: str = HOST, tls: bool = False) -> str:
    """One whole login (connect, password, answer)."""
    return OPENERS[kind](port, user, password, source, tls)()


#: The issue's bound for "a normal client logs in during the attack" (a login here takes a few milliseconds).
NORMAL_LOGIN_BOUND = 1.0


def assert_logs_in_promptly(kind: str, port: int, user: str, password: str, source: str = HOST,
                            tls: bool = False) -> None:
    """A normal client on its own connection logs in within NORMAL_LOGIN_BOUND seconds: connect, TLS handshake,
    greeting, password, answer, all of it. The one wall-clock bound of the suite, and only for the hardening tests
    of attacks that would otherwise stall other clients (a stalled client waits for ever, or until the attack's
    timeouts of 30 s and more). The best of three logins counts: the attack holds for all three, so a stalled
    server fails every one, while a loaded test machine may slow any single one past the bound."""
    times = []
    for _ in range(3):
        start = time.monotonic()
        result = login(kind, port, user, password, source, tls)
        times.append(time.monotonic() - start)
        assert result == "ok", (kind, result)
        if times[-1] < NORMAL_LOGIN_BOUND:
            return
    raise AssertionError(f"{kind} login took {', '.join(f'{t:.2f}' for t in times)}s during the attack")


class PasswordChecks:
    """How many passwords the server's hasher really verified (known accounts) or dummy-verified (unknown ones)."""

    def __init__(self):
        self.n = 0
        self._lock = threading.Lock()

    def wrap(self, f):
        def counted(*args, **kwargs):
            with self._lock:
                self.n += 1
            return f(*args, **kwargs)

        return counted


@contextmanager
def counted_checks(srv):
    """Count every password verification of the running server ``srv`` (a tests.harness.ServerHandle) while in
    the block: the hasher's ``verify`` and ``dummy_verify``, which the authenticator runs in its hash pool."""
    hasher = srv.server.auth._hasher
    checks = PasswordChecks()
    hasher.verify = checks.wrap(type(hasher).verify.__get__(hasher))
    hasher.dummy_verify = checks.wrap(type(hasher).dummy_verify.__get__(hasher))
    try:
        yield checks
    finally:
        del hasher.verify, hasher.dummy_verify


def burst(openers: list[Callable[[], Attempt]]) -> list[str]:
    """Open every client (each in its own thread), then send every password at one barrier; the answers."""
    barrier = threading.Barrier(len(openers))
    results: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def run(opener) -> None:
        try:
            attempt = opener()
        except BaseException as e:  # noqa: BLE001 - reported below; the barrier must not wait for us for ever
            barrier.abort()
            with lock:
                errors.append(e)
            return
        try:
            barrier.wait()
        except threading.BrokenBarrierError:
            return
        r = attempt()
        with lock:
            results.append(r)

    threads = [threading.Thread(target=run, args=(o,)) for o in openers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    if errors:
        raise errors[0]
    assert len(results) == len(openers), f"{len(results)} of {len(openers)} answered"
    return results
