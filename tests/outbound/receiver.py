"""A small SMTP receiver on 127.0.0.1 for outbound tests: answers per recipient as the test says.

It runs on the harness reactor (``start``/``stop`` through ``tests.harness.call``) and records every transaction with
the un-dot-stuffed message bytes.  Per-recipient answers come from ``rcpt(address) -> reply line`` where a reply of
``"drop"`` closes the connection and ``"hang"`` never answers.
"""

from __future__ import annotations

import base64
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from twisted.internet import defer, ssl
from twisted.internet.protocol import Factory, Protocol

from tests import harness


@dataclass
class Transaction:
    helo: str
    mail_from: str
    mail_line: str
    rcpts: list[str] = field(default_factory=list)
    rcpt_lines: list[str] = field(default_factory=list)
    data: bytes = b""
    tls: bool = False
    auth_user: str = ""


def make_cert(tmp_path: Path, hostname: str) -> tuple[str, str]:
    from mailserver.tls import generate_self_signed

    cert, key = Path(tmp_path) / f"{hostname}.crt", Path(tmp_path) / f"{hostname}.key"
    generate_self_signed(hostname, cert, key)
    return str(cert), str(key)


def server_tls(cert: str, key: str):
    c = ssl.PrivateCertificate.loadPEM(Path(key).read_text() + Path(cert).read_text())
    return c.options()


class ReceiverProtocol(Protocol):
    def __init__(self, rx: "Receiver"):
        self.rx = rx
        self.buf = b""
        self.mode = "command"
        self.tx: Transaction | None = None
        self.helo = ""
        self.tls = rx.implicit_tls
        self.auth_user = ""
        self.auth_step = ""
        self.data_lines: list[bytes] = []
        self.stopped = False

    def connectionMade(self):  # noqa: N802
        self.rx.connections += 1
        self.send(self.rx.greeting)

    def send(self, line: str) -> None:
        self.transport.write(line.encode() + b"\r\n")

    def dataReceived(self, data: bytes):  # noqa: N802
        if self.stopped:
            return
        self.buf += data
        while not self.stopped:
            i = self.buf.find(b"\r\n")
            if i < 0:
                return
            line, self.buf = self.buf[:i], self.buf[i + 2:]
            if self.mode == "data":
                if line == b".":
                    self.mode = "command"
                    self.tx.data = b"".join(self.data_lines)
                    self.data_lines = []
                    self.rx.transactions.append(self.tx)
                    reply = self.rx.data_reply(self.tx)
                    self.tx = None
                    self.reply(reply)
                else:
                    # RFC 5321 4.5.2: drop the first of leading dots
                    self.data_lines.append((line[1:] if line.startswith(b".") else line) + b"\r\n")
                continue
            self.command(line.decode("utf-8", "replace"))

    def reply(self, reply: str) -> None:
        if reply == "drop":
            self.stopped = True
            self.transport.loseConnection()
        elif reply == "hang":
            self.stopped = True
        else:
            self.send(reply)

    def command(self, line: str) -> None:
        rx = self.rx
        if self.auth_step:
            return self.auth_continue(line)
        verb = line.split(" ", 1)[0].upper()
        arg = line[len(verb):].strip()
        if verb == "EHLO":
            if not rx.ehlo:
                return self.send("502 5.5.1 EHLO not implemented")
            self.helo = arg
            ext = list(rx.extensions)
            if rx.tls_options is not None and not self.tls and not rx.implicit_tls:
                ext.append("STARTTLS")
            if rx.auth and (self.tls or rx.implicit_tls):
                ext.append("AUTH PLAIN LOGIN")
            lines = [f"rx.test greets {arg}"] + ext
            for n, text in enumerate(lines):
                self.send(f"250{'-' if n < len(lines) - 1 else ' '}{text}")
        elif verb == "HELO":
            self.helo = arg
            self.send("250 rx.test")
        elif verb == "STARTTLS":
            self.send("220 2.0.0 go ahead")
            self.buf = b""
            self.transport.startTLS(rx.tls_options)
            self.tls = True
            self.helo = ""
        elif verb == "AUTH":
            mech, _, initial = arg.partition(" ")
            if mech.upper() == "PLAIN":
                if initial:
                    return self.auth_plain(initial)
                self.auth_step = "plain"
                self.send("334 ")
            elif mech.upper() == "LOGIN":
                self.auth_step = "login-user"
                self.send("334 VXNlcm5hbWU6")
            else:
                self.send("504 5.5.4 mechanism not supported")
        elif verb == "MAIL":
            if rx.require_auth and not self.auth_user:
                return self.send("530 5.7.0 authentication required")
            addr = arg[5:].split(">", 1)[0].lstrip("<") if arg.upper().startswith("FROM:") else ""
            self.tx = Transaction(self.helo, addr, line, tls=self.tls, auth_user=self.auth_user)
            self.reply(rx.mail_reply)
        elif verb == "RCPT":
            if self.tx is None:
                return self.send("503 5.5.1 need MAIL")
            addr = arg[3:].split(">", 1)[0].lstrip("<")
            reply = rx.rcpt(addr)
            if reply.startswith("2"):
                self.tx.rcpts.append(addr)
                self.tx.rcpt_lines.append(line)
            self.reply(reply)
        elif verb == "DATA":
            if self.tx is None or not self.tx.rcpts:
                return self.send("554 5.5.1 no valid recipients")
            self.mode = "data"
            self.send("354 go ahead")
        elif verb == "RSET":
            self.tx = None
            self.send("250 2.0.0 OK")
        elif verb == "QUIT":
            self.send("221 2.0.0 bye")
            self.transport.loseConnection()
        elif verb == "NOOP":
            self.send("250 2.0.0 OK")
        else:
            self.send("500 5.5.2 unknown command")

    def auth_plain(self, token: str) -> None:
        self.auth_step = ""
        try:
            _, user, pw = base64.b64decode(token).decode().split("\0")
        except Exception:
            return self.send("501 5.5.2 bad token")
        self.auth_check(user, pw)

    def auth_check(self, user: str, pw: str) -> None:
        if self.rx.auth == (user, pw):
            self.auth_user = user
            self.send("235 2.7.0 OK")
        else:
            self.send("535 5.7.8 bad credentials")

    def auth_continue(self, line: str) -> None:
        if self.auth_step == "plain":
            return self.auth_plain(line)
        if self.auth_step == "login-user":
            self._user = base64.b64decode(line).decode()
            self.auth_step = "login-pass"
            return self.send("334 UGFzc3dvcmQ6")
        self.auth_step = ""
        self.auth_check(self._user, base64.b64decode(line).decode())

    def connectionLost(self, reason):  # noqa: N802
        self.rx.connections -= 1


class Receiver(Factory):
    def __init__(self, *, rcpt: Callable[[str], str] | None = None, data_reply: Callable[[Transaction], str] | None = None,
                 mail_reply: str = "250 2.1.0 OK", greeting: str = "220 rx.test ESMTP test receiver",
                 ehlo: bool = True, extensions=("PIPELINING", "8BITMIME", "SIZE 100000000", "DSN", "SMTPUTF8",
                                                "ENHANCEDSTATUSCODES"),
                 tls_options=None, implicit_tls: bool = False, auth: tuple[str, str] | None = None,
                 require_auth: bool = False):
        self.rcpt = rcpt or (lambda a: "250 2.1.5 OK")
        self.data_reply = data_reply or (lambda tx: "250 2.0.0 queued")
        self.mail_reply = mail_reply
        self.greeting = greeting
        self.ehlo = ehlo
        self.extensions = list(extensions)
        self.tls_options = tls_options
        self.implicit_tls = implicit_tls
        self.auth = auth
        self.require_auth = require_auth
        self.transactions: list[Transaction] = []
        self.connections = 0
        self.port = 0
        self._listening = None
        self.lock = threading.Lock()

    def buildProtocol(self, addr):  # noqa: N802
        return ReceiverProtocol(self)

    def start(self) -> int:
        from twisted.internet import reactor

        if self.implicit_tls:
            self._listening = reactor.listenSSL(0, self, self.tls_options, interface="127.0.0.1")
        else:
            self._listening = reactor.listenTCP(0, self, interface="127.0.0.1")
        self.port = self._listening.getHost().port
        return self.port

    def stop(self):
        return defer.maybeDeferred(self._listening.stopListening)

    def delivered_to(self) -> list[str]:
        return [r for tx in self.transactions for r in tx.rcpts if self.data_reply_ok(tx)]

    def data_reply_ok(self, tx: Transaction) -> bool:
        return True


@contextmanager
def receiver(**kwargs):
    rx = Receiver(**kwargs)
    harness.call(rx.start)
    try:
        yield rx
    finally:
        harness.call(rx.stop)


def closed_port() -> int:
    """A 127.0.0.1 port nothing listens on (connection refused)."""
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port
