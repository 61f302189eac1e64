"""Helpers for the IMAP session and protocol tests: a raw line client (exact bytes, pipelining, literals) next to
imaplib, a module-wide server, fresh accounts, test messages."""

from __future__ import annotations

import imaplib
import itertools
import re
import socket
import ssl
import time
from contextlib import contextmanager

from tests.harness import running_server

PASSWORD = "secret-pw"
_counter = itertools.count(1)
_LITERAL = re.compile(rb"\{(\d+)\+?\}\r\n\Z")


def message(subject: str = "hello", body: str = "hello world", sender: str = "bob@example.org",
            to: str = "alice@example.test", extra: str = "") -> bytes:
    return (f"From: Bob <{sender}>\r\nTo: {to}\r\nSubject: {subject}\r\n"
            f"Date: Mon, 02 Mar 2026 10:00:00 +0000\r\nMessage-ID: <{next(_counter)}@example.org>\r\n{extra}"
            f"\r\n{body}\r\n").encode()


def new_user(srv, **kwargs) -> str:
    address = f"user{next(_counter)}-{int(time.time() * 1000) % 100000}@example.test"
    srv.add_user(address, PASSWORD, **kwargs)
    return address


@contextmanager
def imap_server(tmp_path, listeners=("imap", "imaps"), **overrides):
    with running_server(tmp_path, listeners=listeners, **overrides) as srv:
        yield srv


def login(srv, address: str, *, select: str | None = None) -> imaplib.IMAP4:
    c = imaplib.IMAP4("127.0.0.1", srv.port("imap"), timeout=10)
    c.login(address, PASSWORD)
    if select:
        c.select(select)
    return c


def insecure_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class Raw:
    """A line client that shows the exact bytes the server sends."""

    def __init__(self, port: int, *, tls: bool = False, timeout: float = 10.0):
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        if tls:
            sock = insecure_context().wrap_socket(sock, server_hostname="localhost")
        self.sock = sock
        self.buf = b""
        self.greeting = self.line()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        if not data:
            return False
        self.buf += data
        return True

    def line(self) -> bytes:
        """One response line; literals are read and included."""
        out = b""
        while True:
            while b"\r\n" not in self.buf:
                if not self._fill():
                    raise ConnectionError(f"closed; partial {out + self.buf!r}")
            i = self.buf.index(b"\r\n") + 2
            part, self.buf = self.buf[:i], self.buf[i:]
            out += part
            m = _LITERAL.search(part)
            if not m:
                return out
            n = int(m.group(1))
            while len(self.buf) < n:
                if not self._fill():
                    raise ConnectionError("closed inside a literal")
            out += self.buf[:n]
            self.buf = self.buf[n:]

    def until(self, tag: bytes) -> list[bytes]:
        """Lines up to and including the tagged reply of ``tag``."""
        lines = []
        while True:
            ln = self.line()
            lines.append(ln)
            if ln.startswith(tag + b" "):
                return lines

    def cmd(self, tag: str, text: str | bytes) -> list[bytes]:
        t = tag.encode()
        self.send(t + b" " + (text.encode() if isinstance(text, str) else text) + b"\r\n")
        return self.until(t)

    def login(self, address: str) -> None:
        out = self.cmd("L1", f'LOGIN "{address}" "{PASSWORD}"')
        assert out[-1].startswith(b"L1 OK"), out

    def closed(self, wait: float = 5.0) -> bool:
        """True when the server closes the connection (after reading what is left)."""
        self.sock.settimeout(wait)
        try:
            while True:
                if not self._fill():
                    return True
        except (ConnectionError, OSError):
            return True
        except socket.timeout:
            return False

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
