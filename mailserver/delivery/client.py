"""Our SMTP client as a sans-IO state machine: one transaction (one message, several recipients) per connection.

No Twisted, no clock, no sockets: the glue (``mailserver.delivery.connection``) feeds server bytes to
:meth:`SmtpClientSession.receive` and carries out the actions it gets back (:class:`Send`, :class:`StartTls`,
:class:`SendBody`, :class:`Close`).  The message body is never held here: on :class:`SendBody` the glue streams the
blob through a :class:`DotStuffer` and calls :meth:`SmtpClientSession.body_sent`.

The outcome is one :class:`RcptResult` per recipient: 2xx delivered, 4xx deferred, 5xx failed.  Recipients that end a
session "deferred" may be tried on the next MX host in the same attempt (the queue decides).
"""

from __future__ import annotations

import base64
import re
from collections import deque
from dataclasses import dataclass, field

# --------------------------------------------------------------------------------------------- limits

#: Longest reply line we accept (RFC 5321 4.5.3.1.5 says 512 octets; real servers send longer, we are lenient).
MAX_REPLY_LINE = 4096
#: Most lines in one multi-line reply (an EHLO reply with many extensions stays far below).
MAX_REPLY_LINES = 100

# RFC 5321 4.5.3.2: client timeouts, seconds (the defaults; the queue runner takes them from [limits]).
TIMEOUT_GREETING = 300.0  # 4.5.3.2.1 initial 220 message: 5 minutes
TIMEOUT_MAIL = 300.0  # 4.5.3.2.2 MAIL: 5 minutes
TIMEOUT_RCPT = 300.0  # 4.5.3.2.3 RCPT: 5 minutes
TIMEOUT_DATA_INIT = 120.0  # 4.5.3.2.4 DATA initiation: 2 minutes
TIMEOUT_DATA_BLOCK = 180.0  # 4.5.3.2.5 data block: 3 minutes
TIMEOUT_DATA_END = 600.0  # 4.5.3.2.6 DATA termination: 10 minutes
TIMEOUT_OTHER = 300.0  # EHLO, STARTTLS, AUTH, QUIT: same as MAIL


@dataclass(frozen=True)
class Timeouts:
    greeting: float = TIMEOUT_GREETING
    mail: float = TIMEOUT_MAIL
    rcpt: float = TIMEOUT_RCPT
    data_init: float = TIMEOUT_DATA_INIT
    data_block: float = TIMEOUT_DATA_BLOCK
    data_end: float = TIMEOUT_DATA_END
    other: float = TIMEOUT_OTHER

    @classmethod
    def from_limits(cls, limits) -> "Timeouts":
        """The timeouts named in ``[limits]`` (mailserver.config.LimitsConfig)."""
        command = limits.smtp_timeout_command
        return cls(greeting=command, mail=command, rcpt=command, data_init=limits.smtp_timeout_data_init,
                   data_block=limits.smtp_timeout_data_block, data_end=limits.smtp_timeout_data_end, other=command)


# --------------------------------------------------------------------------------------------- replies


class ProtocolError(Exception):
    """The server sent something that is not an SMTP reply."""


_ENHANCED_RE = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?:\s|$)")


@dataclass(frozen=True)
class ServerReply:
    code: int
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return " ".join(self.lines)

    @property
    def enhanced(self) -> str:
        """The RFC 3463 enhanced status code from the first line ("" when absent)."""
        m = _ENHANCED_RE.match(self.lines[0] if self.lines else "")
        if m and m.group(1) == str(self.code)[0]:
            return ".".join(m.groups())
        return ""

    @property
    def status(self) -> str:
        """The enhanced code, or one derived from the basic code (RFC 3463 2)."""
        return self.enhanced or f"{str(self.code)[0]}.0.0"

    @property
    def positive(self) -> bool:
        return 200 <= self.code < 400

    @property
    def temporary(self) -> bool:
        return 400 <= self.code < 500

    def __str__(self) -> str:
        return f"{self.code} {self.text}".strip()


def local_reply(code: int, status: str, text: str) -> ServerReply:
    """A reply we make up ourselves (connection failure, timeout, policy) in the same shape as a server's."""
    return ServerReply(code, (f"{status} {text}",))


class ReplyParser:
    """Turns server bytes into :class:`ServerReply` objects (RFC 5321 4.2: ``code-text`` ... ``code text``)."""

    def __init__(self):
        self._buf = b""
        self._lines: list[str] = []
        self._code = 0

    def feed(self, data: bytes) -> list[ServerReply]:
        self._buf += data
        out = []
        while True:
            i = self._buf.find(b"\n")
            if i < 0:
                if len(self._buf) > MAX_REPLY_LINE:
                    raise ProtocolError("reply line too long")
                return out
            raw, self._buf = self._buf[:i], self._buf[i + 1:]
            if len(raw) > MAX_REPLY_LINE:
                raise ProtocolError("reply line too long")
            line = raw.rstrip(b"\r").decode("utf-8", "replace")
            if len(line) < 3 or not line[:3].isdigit() or line[0] not in "2345" or (len(line) > 3 and line[3] not in " -"):
                raise ProtocolError(f"not an SMTP reply: {line[:80]!r}")
            code = int(line[:3])
            if self._lines and code != self._code:
                raise ProtocolError("reply code changed inside a multi-line reply")
            self._code = code
            self._lines.append(line[4:])
            if len(self._lines) > MAX_REPLY_LINES:
                raise ProtocolError("too many reply lines")
            if len(line) == 3 or line[3] == " ":
                out.append(ServerReply(code, tuple(self._lines)))
                self._lines = []


# --------------------------------------------------------------------------------------------- dot-stuffing

_START, _MID, _CR = 0, 1, 2


class DotStuffer:
    """RFC 5321 4.5.2 transparency on a byte stream, correct whatever the chunk boundaries.

    A "." at the start of a line (after CRLF, or at the very start) gets a second "."; the state carried between
    chunks is whether the last bytes were CRLF (line start) or CR (a CRLF may be split across chunks).  Line ends are
    passed on exactly as stored.  :meth:`finish` returns the end-of-data sequence (RFC 5321 4.1.1.4), adding a CRLF
    first when the content did not end with one.
    """

    def __init__(self):
        self._state = _START

    def feed(self, data: bytes) -> bytes:
        if not data:
            return b""
        out = data.replace(b"\r\n.", b"\r\n..")
        if self._state == _START and data[:1] == b".":
            out = b"." + out
        elif self._state == _CR and data[:2] == b"\n.":
            out = out[:1] + b"." + out[1:]
        if data.endswith(b"\r\n") or (data == b"\n" and self._state == _CR):
            self._state = _START
        elif data.endswith(b"\r"):
            self._state = _CR
        else:
            self._state = _MID
        return out

    def finish(self) -> bytes:
        return b".\r\n" if self._state == _START else b"\r\n.\r\n"


def dot_stuff(data: bytes) -> bytes:
    """Whole-buffer form (tests, small messages): content + end-of-data."""
    s = DotStuffer()
    return s.feed(data) + s.finish()


# --------------------------------------------------------------------------------------------- envelope, policy


@dataclass(frozen=True)
class Recipient:
    address: str
    notify: str = ""  # "" | "NEVER" | e.g. "FAILURE,DELAY" (RFC 3461 4.1)
    orcpt: str = ""  # "addr-type;xtext" as received (RFC 3461 4.2)


@dataclass(frozen=True)
class Envelope:
    sender: str  # "" = null reverse-path
    recipients: tuple[Recipient, ...]
    size: int
    body_8bit: bool = False
    smtputf8: bool = False
    envid: str = ""  # xtext as received (RFC 3461 4.4)
    ret: str = ""  # FULL | HDRS | ""


#: TLS policies: "none" never, "opportunistic" whenever offered (no verification: RFC 7435),
#: "required" STARTTLS must succeed (the glue verifies the certificate), "implicit" the connection is TLS already.
TLS_POLICIES = ("none", "opportunistic", "required", "implicit")


@dataclass(frozen=True)
class ClientPolicy:
    helo_name: str
    tls: str = "opportunistic"
    username: str = ""
    password: str = ""
    use_pipelining: bool = True
    timeouts: Timeouts = field(default_factory=Timeouts)
    #: A recipient probe (gateway callouts): MAIL and RCPT only, no DATA; each recipient's result is the RCPT reply.
    probe: bool = False


# --------------------------------------------------------------------------------------------- actions, results


@dataclass(frozen=True)
class Send:
    data: bytes


@dataclass(frozen=True)
class StartTls:
    """Start TLS now; then call :meth:`SmtpClientSession.tls_started` (or ``connection_lost`` if it failed)."""


@dataclass(frozen=True)
class SendBody:
    """Stream the dot-stuffed body and the end-of-data; then call :meth:`SmtpClientSession.body_sent`."""


@dataclass(frozen=True)
class Close:
    pass


Action = Send | StartTls | SendBody | Close

DELIVERED, DEFERRED, FAILED = "delivered", "deferred", "failed"


@dataclass(frozen=True)
class RcptResult:
    recipient: str
    status: str  # delivered | deferred | failed
    reply: ServerReply


def _status_of(reply: ServerReply) -> str:
    if 200 <= reply.code < 300:
        return DELIVERED
    return DEFERRED if reply.code < 500 else FAILED


# --------------------------------------------------------------------------------------------- the session

# states
GREETING, EHLO, HELO, STARTTLS, AUTH, TRANSACTION, BODY, DATA_END, QUIT, DONE = (
    "greeting", "ehlo", "helo", "starttls", "auth", "transaction", "body", "data_end", "quit", "done")


class SmtpClientSession:
    """One SMTP client transaction.  ``results`` holds a :class:`RcptResult` per recipient once ``done``."""

    def __init__(self, envelope: Envelope, policy: ClientPolicy):
        if policy.tls not in TLS_POLICIES:
            raise ValueError(f"bad TLS policy {policy.tls!r}")
        self.envelope = envelope
        self.policy = policy
        self.state = GREETING
        self.tls_active = policy.tls == "implicit"
        self.extensions: dict[str, str] = {}
        self.esmtp = False
        self.greeting: ServerReply | None = None
        self.results: dict[str, RcptResult] = {}
        #: The server's own answer to each RCPT (a result may come from elsewhere: MAIL refused, connection lost).
        self.rcpt_replies: dict[str, ServerReply] = {}
        self.accepted: list[str] = []
        self._parser = ReplyParser()
        self._awaiting: deque[tuple[str, int]] = deque()  # ("mail"|"rcpt"|"data", recipient index)
        self._to_send: deque[tuple[str, int, bytes]] = deque()
        self._mail_failed: ServerReply | None = None
        self._auth_step = ""
        self._quit_sent = False
        self._discard_data_end = False

    # ----------------------------------------------------------------------------------------- properties

    @property
    def done(self) -> bool:
        return self.state == DONE

    @property
    def finished(self) -> bool:
        """Every recipient has its result (the QUIT exchange may still be running)."""
        return len(self.results) == len(self.envelope.recipients)

    @property
    def timeout(self) -> float:
        """Seconds to wait for the next server reply in the current state (RFC 5321 4.5.3.2)."""
        t = self.policy.timeouts
        if self.state == GREETING:
            return t.greeting
        if self.state == TRANSACTION and self._awaiting:
            kind = self._awaiting[0][0]
            return {"mail": t.mail, "rcpt": t.rcpt, "data": t.data_init}[kind]
        if self.state == BODY:
            return t.data_block
        if self.state == DATA_END:
            return t.data_end
        return t.other

    @property
    def dsn_offered(self) -> bool:
        return "DSN" in self.extensions

    # ----------------------------------------------------------------------------------------- input

    def receive(self, data: bytes) -> list[Action]:
        actions: list[Action] = []
        try:
            replies = self._parser.feed(data)
        except ProtocolError as e:
            return self._abort(local_reply(451, "4.5.0", f"protocol error from server: {e}"))
        for reply in replies:
            actions.extend(self._on_reply(reply))
            if self.state == DONE:
                break
        return actions

    def tls_started(self) -> list[Action]:
        """TLS is up: RFC 3207 4.2 forget what we knew and say EHLO again."""
        self.tls_active = True
        self.extensions = {}
        self.state = EHLO
        return [self._cmd(f"EHLO {self.policy.helo_name}")]

    def body_sent(self) -> list[Action]:
        self.state = DATA_END
        return []

    def connection_lost(self, reason: str) -> None:
        """The connection ended: recipients without a result are deferred (the next host may take them)."""
        if self.state != DONE:
            self._fill(local_reply(421, "4.4.2", f"connection lost: {reason}"))
            self.state = DONE

    def timed_out(self) -> list[Action]:
        if self.state == DONE:
            return [Close()]
        return self._abort(local_reply(421, "4.4.2", f"timeout waiting for the server ({self.state})"),
                           quit=False)

    # ----------------------------------------------------------------------------------------- helpers

    def _cmd(self, line: str) -> Send:
        return Send(line.encode("utf-8") + b"\r\n")

    def _fill(self, reply: ServerReply, force_temporary: bool = False) -> None:
        """Give every recipient without a result this reply."""
        status = _status_of(reply)
        if force_temporary and status == FAILED:
            status = DEFERRED
        for r in self.envelope.recipients:
            if r.address not in self.results:
                self.results[r.address] = RcptResult(r.address, status, reply)

    def _abort(self, reply: ServerReply, *, quit: bool = True, force_temporary: bool = False) -> list[Action]:
        self._fill(reply, force_temporary)
        return self._quit() if quit else self._close()

    def _quit(self) -> list[Action]:
        if self._quit_sent:
            return []
        self._quit_sent = True
        self.state = QUIT
        return [self._cmd("QUIT")]

    def _close(self) -> list[Action]:
        self.state = DONE
        return [Close()]

    # ----------------------------------------------------------------------------------------- state machine

    def _on_reply(self, reply: ServerReply) -> list[Action]:
        handler = {
            GREETING: self._on_greeting, EHLO: self._on_ehlo, HELO: self._on_helo, STARTTLS: self._on_starttls,
            AUTH: self._on_auth, TRANSACTION: self._on_transaction, BODY: self._on_unexpected,
            DATA_END: self._on_data_end, QUIT: self._on_quit, DONE: self._on_unexpected,
        }[self.state]
        return handler(reply)

    def _on_unexpected(self, reply: ServerReply) -> list[Action]:
        if self.state == BODY and reply.code == 421:
            return self._abort(reply, quit=False)
        return self._abort(local_reply(451, "4.5.0", f"unexpected reply in state {self.state}: {reply}"),
                           quit=False)

    def _on_greeting(self, reply: ServerReply) -> list[Action]:
        self.greeting = reply
        if reply.code != 220:
            # RFC 5321 3.1: a 554 greeting refuses service; like a 4xx we let the next MX host try (the error is
            # about this host, not the recipients).
            return self._abort(reply, force_temporary=True)
        self.state = EHLO
        return [self._cmd(f"EHLO {self.policy.helo_name}")]

    def _on_ehlo(self, reply: ServerReply) -> list[Action]:
        if reply.code == 250:
            self.esmtp = True
            self.extensions = {}
            for line in reply.lines[1:]:
                keyword, _, params = line.strip().partition(" ")
                self.extensions[keyword.upper()] = params.strip()
            return self._after_hello()
        if 500 <= reply.code < 600 and reply.code != 554:
            # RFC 5321 3.2: a server that does not understand EHLO gets HELO.
            self.state = HELO
            return [self._cmd(f"HELO {self.policy.helo_name}")]
        return self._abort(reply, force_temporary=True)

    def _on_helo(self, reply: ServerReply) -> list[Action]:
        if reply.code != 250:
            return self._abort(reply, force_temporary=True)
        self.esmtp = False
        self.extensions = {}
        return self._after_hello()

    def _after_hello(self) -> list[Action]:
        p = self.policy
        if not self.tls_active and p.tls in ("opportunistic", "required"):
            if "STARTTLS" in self.extensions:
                self.state = STARTTLS
                return [self._cmd("STARTTLS")]
            if p.tls == "required":
                return self._abort(local_reply(451, "4.7.4", "TLS required but the server does not offer STARTTLS"))
        if p.tls == "required" and not self.tls_active:  # pragma: no cover - guarded above
            return self._abort(local_reply(451, "4.7.4", "TLS required"))
        if p.username and self._auth_step == "":
            return self._start_auth()
        return self._start_transaction()

    def _on_starttls(self, reply: ServerReply) -> list[Action]:
        if reply.code == 220:
            return [StartTls()]
        if self.policy.tls == "required":
            return self._abort(reply if reply.code >= 400 else local_reply(451, "4.7.4", "STARTTLS refused"),
                               force_temporary=True)
        # RFC 3207 4.1: opportunistic: carry on in plaintext.
        self.extensions.pop("STARTTLS", None)
        self.state = EHLO
        if self.policy.username and self._auth_step == "":
            return self._start_auth()
        return self._start_transaction()

    # ----------------------------------------------------------------------------------------- AUTH (RFC 4954)

    def _start_auth(self) -> list[Action]:
        mechs = self.extensions.get("AUTH", "").upper().split()
        user, pw = self.policy.username, self.policy.password
        self.state = AUTH
        if "PLAIN" in mechs:
            # RFC 4616 2: authzid NUL authcid NUL passwd; sent as an initial response (RFC 4954 4).
            token = base64.b64encode(b"\0" + user.encode() + b"\0" + pw.encode()).decode()
            self._auth_step = "plain"
            return [self._cmd(f"AUTH PLAIN {token}")]
        if "LOGIN" in mechs:
            self._auth_step = "login-user"
            return [self._cmd("AUTH LOGIN")]
        # Our credentials are a local setting: a server that cannot take them is a temporary problem for the admin.
        return self._abort(local_reply(451, "4.7.0", "the server offers no AUTH mechanism we can use"),
                           force_temporary=True)

    def _on_auth(self, reply: ServerReply) -> list[Action]:
        if reply.code == 235:
            self._auth_step = "done"
            return self._start_transaction()
        if reply.code == 334:
            if self._auth_step == "plain":
                token = base64.b64encode(b"\0" + self.policy.username.encode() + b"\0"
                                         + self.policy.password.encode()).decode()
                self._auth_step = "plain-sent"
                return [self._cmd(token)]
            if self._auth_step == "login-user":
                self._auth_step = "login-pass"
                return [self._cmd(base64.b64encode(self.policy.username.encode()).decode())]
            if self._auth_step == "login-pass":
                self._auth_step = "login-sent"
                return [self._cmd(base64.b64encode(self.policy.password.encode()).decode())]
            return [self._cmd("*")]  # RFC 4954 4: cancel an exchange we cannot continue
        return self._abort(reply, force_temporary=True)

    # ----------------------------------------------------------------------------------------- transaction

    def _start_transaction(self) -> list[Action]:
        env, ext = self.envelope, self.extensions
        # RFC 1870 6: do not send a message the server declared too large.
        limit = ext.get("SIZE", "")
        if limit.isdigit() and int(limit) > 0 and env.size > int(limit):
            return self._abort(local_reply(552, "5.3.4", f"message size {env.size} exceeds the server's limit "
                                                         f"of {limit}"))
        # RFC 6531 3.4: a message that needs SMTPUTF8 must not go to a server that does not offer it.
        if env.smtputf8 and "SMTPUTF8" not in ext:
            return self._abort(local_reply(553, "5.6.7", "the message needs SMTPUTF8, which the server lacks"))
        # RFC 6152 3: 8-bit content only to servers that offer 8BITMIME (we do not downgrade).
        if env.body_8bit and "8BITMIME" not in ext:
            return self._abort(local_reply(554, "5.6.3", "the message has 8-bit content and the server "
                                                         "does not offer 8BITMIME"))
        mail = f"MAIL FROM:<{env.sender}>"
        if self.esmtp:
            if "SIZE" in ext:
                mail += f" SIZE={env.size}"  # RFC 1870 5
            if env.body_8bit:
                mail += " BODY=8BITMIME"
            if env.smtputf8:
                mail += " SMTPUTF8"
            if self.dsn_offered:  # RFC 3461 4.3, 4.4: only when offered
                if env.ret:
                    mail += f" RET={env.ret}"
                if env.envid:
                    mail += f" ENVID={env.envid}"
        self._to_send.append(("mail", -1, mail.encode("utf-8") + b"\r\n"))
        for i, r in enumerate(env.recipients):
            line = f"RCPT TO:<{r.address}>"
            if self.dsn_offered:
                if r.notify:
                    line += f" NOTIFY={r.notify}"
                if r.orcpt:
                    line += f" ORCPT={r.orcpt}"
            self._to_send.append(("rcpt", i, line.encode("utf-8") + b"\r\n"))
        if not self.policy.probe:
            self._to_send.append(("data", -1, b"DATA\r\n"))
        self.state = TRANSACTION
        return self._send_next()

    @property
    def pipelining(self) -> bool:
        return self.policy.use_pipelining and "PIPELINING" in self.extensions

    def _send_next(self) -> list[Action]:
        """RFC 2920 3.1: with PIPELINING, MAIL, every RCPT and DATA go in one write; without, one at a time."""
        if self.pipelining:
            if not self._to_send:
                return []
            batch = b"".join(c[2] for c in self._to_send)
            self._awaiting.extend((c[0], c[1]) for c in self._to_send)
            self._to_send.clear()
            return [Send(batch)]
        if self._awaiting or not self._to_send:
            return []
        kind, i, line = self._to_send[0]
        if kind == "data" and not self.accepted:
            self._to_send.clear()
            return self._finish_transaction()
        self._to_send.popleft()
        self._awaiting.append((kind, i))
        return [Send(line)]

    def _on_transaction(self, reply: ServerReply) -> list[Action]:
        kind, i = self._awaiting.popleft()
        if kind == "mail":
            if not reply.positive:
                self._mail_failed = reply
                if not self.pipelining:
                    self._to_send.clear()
                    return self._abort(reply)
            return self._send_next()
        if kind == "rcpt":
            address = self.envelope.recipients[i].address
            if self._mail_failed is not None:
                self.results[address] = RcptResult(address, _status_of(self._mail_failed), self._mail_failed)
            elif 200 <= reply.code < 300:
                self.accepted.append(address)
                self.rcpt_replies[address] = reply
                if self.policy.probe:
                    self.results[address] = RcptResult(address, DELIVERED, reply)
            else:
                self.rcpt_replies[address] = reply
                self.results[address] = RcptResult(address, _status_of(reply), reply)
            if self.policy.probe and not self._awaiting and not self._to_send:
                return self._quit()  # RFC 5321 4.1.1.10: QUIT ends the transaction without a message
            return self._send_next()
        # DATA
        if reply.code == 354:
            if not self.accepted or self._mail_failed is not None:
                # RFC 2920 3.1: DATA accepted although no recipient was: send an empty message to end it.
                self.state = DATA_END
                self._discard_data_end = True
                return [Send(b".\r\n")]
            self.state = BODY
            return [SendBody()]
        if self._mail_failed is not None:
            self._fill(self._mail_failed)
            return self._quit()
        for a in self.accepted:
            self.results[a] = RcptResult(a, _status_of(reply), reply)
        return self._finish_transaction()

    def _finish_transaction(self) -> list[Action]:
        self._fill(self._mail_failed or local_reply(554, "5.5.0", "no valid recipients"))
        return self._quit()

    def _on_data_end(self, reply: ServerReply) -> list[Action]:
        if self._discard_data_end:
            return self._finish_transaction()
        # RFC 5321 4.2.5 / 3.3: the reply to the end of data applies to every accepted recipient.
        for a in self.accepted:
            self.results[a] = RcptResult(a, _status_of(reply), reply)
        return self._quit()

    def _on_quit(self, reply: ServerReply) -> list[Action]:
        return self._close()
