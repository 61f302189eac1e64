"""The POP3 session as a sans-IO state machine (RFC 1939, RFC 2449 CAPA, RFC 2595 STLS, RFC 5034 AUTH).

:class:`Pop3Session` takes the client's bytes and returns a list of *outputs*: bytes to send (:class:`Send`)
and requests for work the session cannot do itself because it needs I/O (:class:`Authenticate`,
:class:`OpenMaildrop`, :class:`Retrieve`, :class:`Expunge`, :class:`StartTls`, :class:`Close`).  While a
request is outstanding the session processes no further commands; pipelined lines wait in its buffer
(RFC 2449 section 6.6) until the caller reports the result through the matching method
(:meth:`~Pop3Session.auth_result`, :meth:`~Pop3Session.maildrop_opened`, :meth:`~Pop3Session.retrieve_done`,
:meth:`~Pop3Session.update_done`, ...), which returns the next outputs.  No Twisted, no clock, no database.

Behaviour worth knowing:

* The maildrop is a snapshot taken when the session enters TRANSACTION: messages delivered later are not
  shown to it (RFC 1939 section 8 lets the server fix the listing for the session).
* DELE only marks; the marks are applied by QUIT in TRANSACTION (the UPDATE state, RFC 1939 section 6).
  A connection that ends any other way deletes nothing.
* One POP3 session per maildrop at a time: a second one is refused with ``-ERR [IN-USE]`` (RFC 2449 section
  8.1.1).  The session takes the lock of its own process (``locks.acquire``, a
  :class:`mailserver.clusterstate.MaildropLockTable`); :class:`OpenMaildrop` then takes it against the other
  processes sharing the database and answers :meth:`~Pop3Session.maildrop_in_use` if one holds it.  IMAP sessions
  are not locked out; a message they expunge meanwhile is answered ``-ERR`` by RETR/TOP and ignored by the final
  expunge.
* USER/PASS and AUTH PLAIN/LOGIN are refused with ``-ERR [AUTH]`` unless TLS is active or the client may use
  plaintext without it (loopback, or configured), and CAPA then lists neither USER nor SASL mechanisms.
* Every -ERR, and every command while still in AUTHORIZATION, counts as a command without progress; more
  than ``pop3_max_commands_without_progress`` in a row end the session.
* With ``max_commands`` / ``max_output`` a call handles at most that many commands, or stops after the command
  whose replies passed that many octets, leaving the rest buffered (:attr:`Pop3Session.yielded`); the caller goes
  on with :meth:`Pop3Session.proceed` in a later reactor turn, so a pipelined burst never holds up other clients.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field

from mailserver import sasl
from mailserver.clusterstate import MaildropLocks as MaildropLocks  # re-exported: the in-process lock table
from mailserver.clusterstate import MaildropLockTable
from mailserver.config import LimitsConfig
from mailserver.pop3 import wire
from mailserver.pop3.wire import (
    Apop,
    Auth,
    Capa,
    Dele,
    ListCmd,
    Noop,
    Pass,
    Quit,
    Retr,
    Rset,
    Stat,
    Stls,
    Top,
    Uidl,
    User,
    err,
    ok,
)

# RFC 2449 section 8 / RFC 3206 response codes.
IN_USE = "IN-USE"
AUTH = "AUTH"
SYS_TEMP = "SYS/TEMP"
SYS_PERM = "SYS/PERM"

#: Longest line of a SASL exchange after the AUTH command (RFC 5034 section 4 places no 255-octet limit on
#: client responses; the SASL layer bounds them).
MAX_SASL_LINE = sasl.MAX_RESPONSE_OCTETS + 2


class State(enum.Enum):
    AUTHORIZATION = "AUTHORIZATION"
    TRANSACTION = "TRANSACTION"
    UPDATE = "UPDATE"


AUTHORIZATION, TRANSACTION, UPDATE = State.AUTHORIZATION, State.TRANSACTION, State.UPDATE


# --------------------------------------------------------------------------------------------- data


@dataclass(frozen=True)
class MaildropEntry:
    """One message of the maildrop: its IMAP uid, its exact size in octets (as RETR sends it), its blob."""

    uid: int
    size: int
    blob_id: str


@dataclass(frozen=True)
class Maildrop:
    """The snapshot of the account's INBOX a session works on, in ascending uid order."""

    mailbox_id: int
    uid_validity: int
    entries: tuple[MaildropEntry, ...]


# --------------------------------------------------------------------------------------------- outputs


@dataclass(frozen=True)
class Send:
    data: bytes


@dataclass(frozen=True)
class StartTls:
    """Start TLS on the transport now, after the preceding Send (RFC 2595 section 4)."""


@dataclass(frozen=True)
class Authenticate:
    """Verify credentials, then call :meth:`Pop3Session.auth_result` (or :meth:`~Pop3Session.auth_error`)."""

    username: str
    password: str = field(repr=False)
    mechanism: str  # "USER" for USER/PASS, else the SASL mechanism


@dataclass(frozen=True)
class OpenMaildrop:
    """Take the maildrop lock against other processes (``locks.acquire_cluster``) and load the account's INBOX,
    then call :meth:`Pop3Session.maildrop_opened` (or ``maildrop_in_use``, ``maildrop_failed``)."""

    account_id: int


@dataclass(frozen=True)
class Retrieve:
    """Send message ``msg``: open the blob of ``entry``; on failure call ``retrieve_failed``; else write
    ``retrieve_begin()``'s outputs, the body through ``wire.BodyEncoder(top_lines)``, then call
    ``retrieve_done``.  ``top_lines`` None is RETR, a number is TOP."""

    msg: int
    entry: MaildropEntry
    top_lines: int | None


@dataclass(frozen=True)
class Expunge:
    """RFC 1939 section 6 UPDATE: remove these uids from the mailbox, then call ``update_done``."""

    account_id: int
    mailbox_id: int
    uids: tuple[int, ...]


@dataclass(frozen=True)
class Close:
    """Close the connection after everything sent so far."""

    reason: str = ""


Output = Send | StartTls | Authenticate | OpenMaildrop | Retrieve | Expunge | Close


_TOP_LINE = ok("top of message follows")


class Pop3Error(Exception):
    """A command fails: answered ``-ERR [code] text`` by the dispatcher."""

    def __init__(self, text: str, code: str | None = None):
        super().__init__(text)
        self.text, self.code = text, code


# --------------------------------------------------------------------------------------------- session


class Pop3Session:
    """One POP3 connection's protocol state.  See the module docstring for the contract."""

    def __init__(
        self,
        *,
        hostname: str,
        limits: LimitsConfig,
        locks: MaildropLockTable,
        tls_active: bool = False,
        tls_available: bool = False,
        plaintext_without_tls: bool = False,
        expire: str = "NEVER",
        implementation: str = "mailserver",
        sasl_start: Callable[[str, bytes | None], sasl.SaslExchange] = sasl.start,
        max_commands: int | None = None,
        max_output: int | None = None,
    ):
        self.hostname = hostname
        self.limits = limits
        self.locks = locks
        self.tls_active = tls_active
        self.tls_available = tls_available
        self.plaintext_without_tls = plaintext_without_tls
        self.expire = expire
        self.implementation = implementation
        self._sasl_start = sasl_start
        #: At most this many commands per call (None: every buffered one).
        self.max_commands = max_commands
        #: A call ends after the command whose replies took the call's output past this many octets (None: no limit).
        self.max_output = max_output
        #: The last call stopped at its budget with input still buffered: call :meth:`proceed` in a later turn.
        self.yielded = False

        self.state = AUTHORIZATION
        self.closed = False
        self.username: str | None = None  # after a successful login
        self.account_id: int | None = None
        self.maildrop: Maildrop | None = None
        self.deleted: set[int] = set()  # message numbers marked by DELE
        self._reader = wire.LineReader(limits.pop3_max_line)
        self._user: str | None = None  # name given by USER, waiting for PASS
        self._sasl: sasl.SaslExchange | None = None
        self._waiting: str | None = None  # "auth", "maildrop", "retrieve", "update"
        self._retrieve: Retrieve | None = None
        self._locked = False
        self._without_progress = 0

    # ----------------------------------------------------------------------------------------- input

    def greeting(self) -> list[Output]:
        # RFC 1939 section 4: the greeting; no APOP timestamp, since APOP is not offered.
        return [Send(ok(f"{self.hostname} POP3 server ready"))]

    def data_received(self, data: bytes) -> list[Output]:
        """Bytes from the client; returns what to do."""
        if self.closed or self.state is UPDATE:
            return []
        self._reader.feed(data)
        return self._run()

    def proceed(self) -> list[Output]:
        """Go on with the input left buffered when the last call stopped at its budget (:attr:`yielded`)."""
        if self.closed or self.state is UPDATE:
            return []
        return self._run()

    def connection_lost(self) -> None:
        """The connection ended (any way).  Nothing is deleted (RFC 1939 section 6); the lock is released."""
        self.closed = True
        self._sasl = None
        if self._waiting != "update":
            self._unlock()  # else update_done releases it once the deletion has committed

    @property
    def plaintext_allowed(self) -> bool:
        # ``plaintext_without_tls`` is the one policy's answer for this client without TLS
        # (mailserver.sasl.plaintext_allowed, asked by the protocol); inside TLS plaintext is always allowed.
        return sasl.plaintext_allowed(tls_active=self.tls_active, loopback=False,
                                      allow_without_tls=self.plaintext_without_tls)

    @property
    def buffered(self) -> int:
        """Octets of input received and not yet taken as commands (pipelined commands waiting their turn)."""
        return self._reader.buffered()

    @property
    def busy(self) -> bool:
        """A request is outstanding (the idle timer should not end the session while a RETR streams)."""
        return self._waiting is not None

    # ----------------------------------------------------------------------------------------- results

    def auth_result(self, ok_: bool, account_id: int | None = None, reason: str = "") -> list[Output]:
        """The answer to :class:`Authenticate` (the Authenticator's AuthResult fields)."""
        if not self._expect("auth"):
            return []
        out: list[Output] = []
        if not ok_ or account_id is None:
            if reason == "throttled":
                # RFC 3206 section 4: SYS/TEMP tells the client to try again later without re-prompting.
                self._fail(out, "too many failed logins, try again later", SYS_TEMP)
            elif reason == "disabled":
                self._fail(out, "account disabled", AUTH)
            else:
                # RFC 3206 section 4: AUTH means the credentials are at fault.
                self._fail(out, "authentication failed", AUTH)
            return out + self._run()
        if not self.locks.acquire(account_id):
            return self._in_use(out)
        self._locked = True
        self.account_id = account_id
        self._waiting = "maildrop"
        return [OpenMaildrop(account_id)]

    def auth_error(self) -> list[Output]:
        """Authentication could not be attempted (database or thread pool failure)."""
        if not self._expect("auth"):
            return []
        out: list[Output] = []
        self._fail(out, "authentication temporarily unavailable", SYS_TEMP)
        return out + self._run()

    def maildrop_opened(self, maildrop: Maildrop, username: str = "") -> list[Output]:
        if not self._expect("maildrop"):
            return []
        self.maildrop = maildrop
        self.username = username or None
        self.state = TRANSACTION
        self._without_progress = 0
        count, size = self._totals()
        return [Send(ok(f"maildrop has {count} messages ({size} octets)"))] + self._run()

    def maildrop_in_use(self) -> list[Output]:
        """Another process holds the maildrop lock."""
        if not self._expect("maildrop"):
            return []
        self._unlock()
        self.account_id = None
        return self._in_use([])

    def maildrop_failed(self, text: str = "cannot open maildrop") -> list[Output]:
        if not self._expect("maildrop"):
            return []
        self._unlock()
        self.account_id = None
        out: list[Output] = []
        self._fail(out, text, SYS_TEMP)
        return out + self._run()

    def retrieve_begin(self) -> list[Output]:
        """The blob is open: the +OK line that precedes the body."""
        r = self._retrieve
        if self.closed or self._waiting != "retrieve" or r is None:
            return []
        if r.top_lines is None:
            return [Send(ok(f"{r.entry.size} octets"))]
        return [Send(ok("top of message follows"))]

    def retrieve_line(self) -> bytes:
        """:meth:`retrieve_begin` as the bytes of its line (b"" when it has none)."""
        r = self._retrieve
        if self.closed or self._waiting != "retrieve" or r is None:
            return b""
        if r.top_lines is None:
            return b"+OK %d octets\r\n" % r.entry.size
        return _TOP_LINE

    def retrieve_failed(self, text: str = "message no longer available") -> list[Output]:
        """The blob could not be opened (before anything was sent)."""
        if not self._expect("retrieve"):
            return []
        self._retrieve = None
        out: list[Output] = []
        self._fail(out, text, None)
        return out + self._run()

    def retrieve_done(self) -> list[Output]:
        """The body and its terminator were written: go on with pipelined commands."""
        if not self._expect("retrieve"):
            return []
        self._retrieve = None
        self._without_progress = 0
        return self._run()

    def update_done(self, ok_: bool) -> list[Output]:
        """The UPDATE-state expunge finished (RFC 1939 section 6)."""
        if self._waiting != "update":
            return []
        self._waiting = None
        self._unlock()
        if self.closed:
            return []  # the client left after QUIT; the deletion happened all the same
        if ok_:
            left = len(self.maildrop.entries) - len(self.deleted) if self.maildrop else 0
            reply = ok(f"{self.hostname} POP3 server signing off ({left} messages left)")
        else:
            # RFC 1939 section 6: an error in UPDATE is reported in the QUIT reply.
            reply = err("some deleted messages not removed", SYS_TEMP)
        return self._close([Send(reply)], "quit")

    # ----------------------------------------------------------------------------------------- machinery

    def _expect(self, what: str) -> bool:
        if self.closed or self._waiting != what:
            return False
        self._waiting = None
        return True

    def _in_use(self, out: list[Output]) -> list[Output]:
        # RFC 2449 section 8.1.1: the maildrop is in use by another POP3 session.
        self._fail(out, "maildrop already locked by another session", IN_USE)
        return out + self._run()

    def _unlock(self) -> None:
        if self._locked and self.account_id is not None:
            self.locks.release(self.account_id)
        self._locked = False

    def _close(self, out: list[Output], reason: str) -> list[Output]:
        self.closed = True
        self._unlock()
        self._reader.clear()
        out.append(Close(reason))
        return out

    def _fail(self, out: list[Output], text: str, code: str | None) -> None:
        out.append(Send(err(text, code)))
        self._count(out, failed=True)

    def _count(self, out: list[Output], failed: bool) -> None:
        """Count a command without progress; end the session past the limit."""
        if failed or self.state is AUTHORIZATION:
            self._without_progress += 1
        else:
            self._without_progress = 0
        if self._without_progress > self.limits.pop3_max_commands_without_progress and not self.closed:
            out.append(Send(err("too many commands without progress, closing")))
            self._close(out, "no progress")

    def _run(self) -> list[Output]:
        """Process buffered lines until one needs I/O or none is complete."""
        out: list[Output] = []
        self.yielded = False
        handled = produced = 0
        while not self.closed and self._waiting is None and self.state is not UPDATE:
            if (self.max_commands is not None and handled >= self.max_commands) or \
                    (self.max_output is not None and produced >= self.max_output):
                self.yielded = self._reader.buffered() > 0
                break
            handled += 1
            mark = len(out)
            try:
                line = self._reader.next_line()
            except wire.LineTooLong as e:
                if self._sasl is not None:
                    self._sasl = None
                    self._reader.max_line = self.limits.pop3_max_line
                self._fail(out, str(e), None)
                continue
            if line is None:
                break
            if self._sasl is not None:
                self._sasl_line(line, out)
            else:
                self._command(line, out)
            for o in out[mark:]:
                if type(o) is Send:
                    produced += len(o.data)
        if not self.closed and not self.yielded:  # what a yield leaves is not read further until it is taken
            try:
                self._reader.check_backlog()
            except wire.PipelineOverflow as e:
                out.append(Send(err(str(e))))
                self._close(out, "pipeline overflow")
        return out

    def _command(self, line: bytes, out: list[Output]) -> None:
        """Parse and dispatch one command; every error becomes one -ERR here."""
        try:
            cmd = wire.parse_command(line)
            handler, states = COMMANDS[type(cmd)]
            if self.state not in states:
                raise Pop3Error("command not valid in this state")
            if not isinstance(cmd, Pass):
                # RFC 1939 section 7: PASS must follow USER immediately.
                self._user = None
            handler(self, cmd, out)
        except wire.SyntaxError_ as e:
            self._user = None
            self._fail(out, str(e), None)
            return
        except Pop3Error as e:
            self._fail(out, e.text, e.code)
            return
        if not self.closed:
            self._count(out, failed=False)

    # ----------------------------------------------------------------------------------------- helpers

    def _totals(self) -> tuple[int, int]:
        """RFC 1939 section 5 STAT: messages marked deleted are not counted."""
        assert self.maildrop is not None
        live = [e for n, e in enumerate(self.maildrop.entries, 1) if n not in self.deleted]
        return len(live), sum(e.size for e in live)

    def _entry(self, msg: int) -> MaildropEntry:
        assert self.maildrop is not None
        if not 1 <= msg <= len(self.maildrop.entries):
            raise Pop3Error("no such message")
        if msg in self.deleted:
            # RFC 1939 section 5: a message marked as deleted may not be referred to.
            raise Pop3Error(f"message {msg} already deleted")
        return self.maildrop.entries[msg - 1]

    def _uidl(self, entry: MaildropEntry) -> bytes:
        assert self.maildrop is not None
        return wire.uidl_for(self.maildrop.uid_validity, entry.uid).encode("ascii")

    def capabilities(self) -> list[str]:
        """RFC 2449 section 5: the same list in both states (STLS, USER and SASL only when usable)."""
        caps = ["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"]
        if self.plaintext_allowed:
            caps.append("USER")  # RFC 2449 section 6.2
            caps.append("SASL " + " ".join(sasl.MECHANISMS))  # RFC 2449 section 6.3, RFC 5034 section 5
        if self.tls_available and not self.tls_active:
            caps.append("STLS")  # RFC 2595 section 4
        if self.expire:
            caps.append(f"EXPIRE {self.expire}")  # RFC 2449 section 6.7
        caps.append(f"IMPLEMENTATION {self.implementation}")  # RFC 2449 section 6.9
        return caps

    def _start_login(self, username: str, password: str, mechanism: str, out: list[Output]) -> None:
        self._waiting = "auth"
        out.append(Authenticate(username, password, mechanism))

    # ----------------------------------------------------------------------------------------- SASL

    def _sasl_step(self, exchange: sasl.SaslExchange, out: list[Output]) -> None:
        if exchange.done:
            self._sasl = None
            self._reader.max_line = self.limits.pop3_max_line
            self._start_login(exchange.username, exchange.password, exchange.mechanism, out)
        else:
            # RFC 5034 section 4: a continuation is "+" SP base64 challenge (empty for no data).
            self._sasl = exchange
            self._reader.max_line = max(self.limits.pop3_max_line, MAX_SASL_LINE)
            out.append(Send(b"+ " + (exchange.challenge or b"") + wire.CRLF))

    def _sasl_line(self, line: bytes, out: list[Output]) -> None:
        exchange = self._sasl
        assert exchange is not None
        try:
            exchange.respond(line)
        except sasl.SaslCancelled:
            # RFC 5034 section 4: "*" cancels; the server rejects the AUTH command.
            self._sasl = None
            self._reader.max_line = self.limits.pop3_max_line
            self._fail(out, "authentication cancelled", None)
            return
        except sasl.SaslError as e:
            self._sasl = None
            self._reader.max_line = self.limits.pop3_max_line
            self._fail(out, f"authentication failed: {e}", AUTH)
            return
        self._sasl_step(exchange, out)


# --------------------------------------------------------------------------------------------- handlers


def _plaintext_check(s: Pop3Session) -> None:
    if not s.plaintext_allowed:
        raise Pop3Error("plaintext authentication disallowed without TLS, use STLS", AUTH)


def _user(s: Pop3Session, cmd: User, out: list[Output]) -> None:
    _plaintext_check(s)
    s._user = cmd.name
    out.append(Send(ok("send PASS")))


def _pass(s: Pop3Session, cmd: Pass, out: list[Output]) -> None:
    if s._user is None:
        raise Pop3Error("USER first")
    _plaintext_check(s)
    username, s._user = s._user, None
    s._start_login(username, cmd.password, "USER", out)


def _auth(s: Pop3Session, cmd: Auth, out: list[Output]) -> None:
    if cmd.mechanism is None:
        # RFC 1734 form kept by many servers: list the mechanisms as a multi-line response.
        mechs = list(sasl.MECHANISMS) if s.plaintext_allowed else []
        out.append(Send(wire.multiline(ok("supported mechanisms follow"), [m.encode() for m in mechs])))
        return
    if cmd.mechanism not in sasl.MECHANISMS:
        raise Pop3Error("unsupported authentication mechanism")
    _plaintext_check(s)
    initial = cmd.initial_response.encode("ascii", "replace") if cmd.initial_response is not None else None
    try:
        exchange = s._sasl_start(cmd.mechanism, initial)
    except sasl.SaslCancelled:
        raise Pop3Error("authentication cancelled") from None
    except sasl.SaslError as e:
        raise Pop3Error(f"authentication failed: {e}", AUTH) from None
    s._sasl_step(exchange, out)


def _apop(s: Pop3Session, cmd: Apop, out: list[Output]) -> None:
    raise Pop3Error("APOP not supported")


def _capa(s: Pop3Session, cmd: Capa, out: list[Output]) -> None:
    caps = [c.encode("utf-8") for c in s.capabilities()]
    out.append(Send(wire.multiline(ok("capability list follows"), caps)))


def _stls(s: Pop3Session, cmd: Stls, out: list[Output]) -> None:
    if s.tls_active:
        raise Pop3Error("TLS already active")
    if not s.tls_available:
        raise Pop3Error("TLS not available")
    out.append(Send(ok("begin TLS negotiation")))
    out.append(StartTls())
    s.tls_active = True
    # RFC 2595 section 4: anything the client sent after STLS, before the handshake, is discarded, and
    # what the client learned before TLS (a USER name) is forgotten.
    s._reader.clear()
    s._user = None


def _stat(s: Pop3Session, cmd: Stat, out: list[Output]) -> None:
    count, size = s._totals()
    out.append(Send(ok(f"{count} {size}")))  # RFC 1939 section 5: "+OK nn mm"


def _list(s: Pop3Session, cmd: ListCmd, out: list[Output]) -> None:
    if cmd.msg is not None:
        out.append(Send(ok(f"{cmd.msg} {s._entry(cmd.msg).size}")))
        return
    assert s.maildrop is not None
    count, size = s._totals()
    lines = [f"{n} {e.size}".encode() for n, e in enumerate(s.maildrop.entries, 1) if n not in s.deleted]
    out.append(Send(wire.multiline(ok(f"{count} messages ({size} octets)"), lines)))


def _uidl(s: Pop3Session, cmd: Uidl, out: list[Output]) -> None:
    if cmd.msg is not None:
        uid = s._uidl(s._entry(cmd.msg)).decode("ascii")
        out.append(Send(ok(f"{cmd.msg} {uid}")))  # RFC 1939 section 7: "+OK msg unique-id"
        return
    assert s.maildrop is not None
    lines = [str(n).encode() + b" " + s._uidl(e) for n, e in enumerate(s.maildrop.entries, 1)
             if n not in s.deleted]
    out.append(Send(wire.multiline(ok("unique-id listing follows"), lines)))


def _retr(s: Pop3Session, cmd: Retr, out: list[Output]) -> None:
    entry = s._entry(cmd.msg)
    s._retrieve = Retrieve(cmd.msg, entry, None)
    s._waiting = "retrieve"
    out.append(s._retrieve)


def _top(s: Pop3Session, cmd: Top, out: list[Output]) -> None:
    entry = s._entry(cmd.msg)
    s._retrieve = Retrieve(cmd.msg, entry, cmd.lines)
    s._waiting = "retrieve"
    out.append(s._retrieve)


def _dele(s: Pop3Session, cmd: Dele, out: list[Output]) -> None:
    s._entry(cmd.msg)
    s.deleted.add(cmd.msg)
    out.append(Send(ok(f"message {cmd.msg} deleted")))


def _noop(s: Pop3Session, cmd: Noop, out: list[Output]) -> None:
    out.append(Send(ok()))


def _rset(s: Pop3Session, cmd: Rset, out: list[Output]) -> None:
    s.deleted.clear()  # RFC 1939 section 5: RSET unmarks every message
    count, size = s._totals()
    out.append(Send(ok(f"maildrop has {count} messages ({size} octets)")))


def _quit(s: Pop3Session, cmd: Quit, out: list[Output]) -> None:
    if s.state is AUTHORIZATION:
        # RFC 1939 section 4: QUIT in AUTHORIZATION ends the session without entering UPDATE.
        out.append(Send(ok(f"{s.hostname} POP3 server signing off")))
        s._close(out, "quit")
        return
    # RFC 1939 section 6: QUIT in TRANSACTION enters UPDATE and removes the marked messages.
    s.state = UPDATE
    assert s.maildrop is not None and s.account_id is not None
    uids = tuple(s.maildrop.entries[n - 1].uid for n in sorted(s.deleted))
    if not uids:
        s._waiting = "update"
        out.extend(s.update_done(True))
        return
    s._waiting = "update"
    out.append(Expunge(s.account_id, s.maildrop.mailbox_id, uids))


_ANY = frozenset(State) - {UPDATE}
_AUTH = frozenset({AUTHORIZATION})
_TRANS = frozenset({TRANSACTION})

#: The one command table: command type -> (handler, states in which it is valid).
COMMANDS: dict[type, tuple[Callable[[Pop3Session, object, list[Output]], None], frozenset[State]]] = {
    User: (_user, _AUTH),
    Pass: (_pass, _AUTH),
    Auth: (_auth, _AUTH),
    Apop: (_apop, _AUTH),
    Stls: (_stls, _AUTH),  # RFC 2595 section 4: only in AUTHORIZATION
    Capa: (_capa, _ANY),  # RFC 2449 section 5: in both states
    Quit: (_quit, _ANY),
    Stat: (_stat, _TRANS),
    ListCmd: (_list, _TRANS),
    Retr: (_retr, _TRANS),
    Dele: (_dele, _TRANS),
    Noop: (_noop, _TRANS),
    Rset: (_rset, _TRANS),
    Top: (_top, _TRANS),
    Uidl: (_uidl, _TRANS),
}
