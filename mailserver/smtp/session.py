"""The SMTP server session as a sans-IO state machine (no Twisted, no clock, no database).

The glue (``protocol.py``) feeds bytes in with :meth:`SmtpSession.receive` and carries out the actions it gets back:
send a reply, start TLS, close, run a check (sender, recipient, credentials, the finished message) and hand the answer
back with :meth:`SmtpSession.resolve`.  While a check is pending the session reads nothing more, so replies leave in
the order the commands came (RFC 2920 3) and bytes behind a pending command are never read in the wrong mode.  Body
bytes are handed out as they arrive (one :class:`MessageData` per read), never collected here.

With ``max_commands`` the session handles at most that many command lines per call and then stops with the rest
buffered (:attr:`SmtpSession.yielded`); the glue calls :meth:`SmtpSession.proceed` in a later reactor turn, so
one client's pipelined burst never keeps the others waiting.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable

from mailserver import sasl
from mailserver.smtp import codes
from mailserver.smtp.address import Extensions, Mailbox, MailParams, RcptParams
from mailserver.smtp.codes import Reply, SmtpError
from mailserver.smtp.commands import (
    Auth,
    Bdat,
    Command,
    Data,
    Ehlo,
    Expn,
    Help,
    Mail,
    Noop,
    Quit,
    Rcpt,
    Rset,
    StartTls,
    Vrfy,
    parse_command,
)
from mailserver.smtp.wire import LINE_TOO_LONG, BdatReader, CommandFramer, DataReader, has_bare_newline

log = logging.getLogger(__name__)

#: RFC 4954 4: an AUTH command line (with initial response) and each SASL response may be 12288 octets long.
MAX_AUTH_LINE = 12288
SASL_MECHANISMS = ("PLAIN", "LOGIN")


# --------------------------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class SessionConfig:
    """Per-listener behaviour, built once from the server configuration."""

    hostname: str
    banner: str = ""
    max_command_line: int = 2048
    max_text_line: int = 65536
    max_message_size: int = 50 * 1024 * 1024
    max_recipients: int = 100
    max_errors: int = 20
    max_messages: int = 1000
    timeout_command: float = 300.0
    timeout_data: float = 180.0
    offer_starttls: bool = True  # the listener can upgrade (not for implicit TLS)
    offer_auth: bool = False  # AUTH exists on this listener (submission, submissions)
    require_auth: bool = False  # MAIL needs AUTH unless the client is in a trusted network
    allow_plaintext_without_tls: bool = False

    @classmethod
    def from_config(cls, config, listener: str, *, tls_available: bool = True) -> "SessionConfig":
        """Build from :class:`mailserver.config.Config` for listener "smtp", "submission" or "submissions"."""
        lim = config.limits
        submission = listener in ("submission", "submissions")
        return cls(
            hostname=config.hostname,
            banner=config.smtp.banner,
            max_command_line=lim.smtp_max_command_line,
            max_text_line=lim.smtp_max_text_line,
            max_message_size=lim.message_size,
            max_recipients=lim.smtp_max_recipients,
            max_errors=lim.smtp_max_errors,
            max_messages=lim.smtp_max_messages_per_session,
            timeout_command=lim.smtp_timeout_command,
            timeout_data=lim.smtp_timeout_data_block,
            offer_starttls=tls_available and listener != "submissions",
            offer_auth=submission,
            require_auth=submission,
            allow_plaintext_without_tls=config.auth.allow_plaintext_without_tls,
        )


@dataclass(frozen=True)
class Peer:
    ip: str
    port: int = 0
    loopback: bool = False
    trusted: bool = False  # in smtp.trusted_networks: may relay without AUTH


# --------------------------------------------------------------------------------------------- envelope


@dataclass
class Recipient:
    mailbox: Mailbox
    params: RcptParams = field(default_factory=RcptParams)
    route: Any = None  # what the recipient check decided (opaque to the session)


@dataclass
class Envelope:
    """One mail transaction (RFC 5321 3.3)."""

    helo: str
    esmtp: bool
    reverse_path: Mailbox | None
    mail_params: MailParams
    recipients: list[Recipient] = field(default_factory=list)
    body: str = ""  # "" until the body starts, then "DATA" or "BDAT"
    size: int = 0  # body octets received (after dot-unstuffing)
    data: Any = None  # free for the glue (e.g. the blob writer)
    ended: bool = False  # MessageEnd or MessageAbort was emitted

    @property
    def smtputf8(self) -> bool:
        return self.mail_params.smtputf8


@dataclass(frozen=True)
class Identity:
    """The authenticated account, as the credential check returned it."""

    username: str
    account_id: int | None = None
    address: str = ""


# --------------------------------------------------------------------------------------------- actions


@dataclass(frozen=True)
class Send:
    reply: Reply


@dataclass(frozen=True)
class StartTlsNow:
    """Start TLS on the transport now (the 220 reply is already in the preceding Send)."""


@dataclass(frozen=True)
class Close:
    pass


@dataclass(frozen=True)
class CheckAuth:
    """Verify credentials; resolve with an :class:`AuthResult`."""

    mechanism: str
    username: str
    password: str


@dataclass(frozen=True)
class AuthResult:
    identity: Identity | None  # None = failed
    reply: Reply | None = None  # the failure reply (default 535 5.7.8), e.g. 454 4.7.0 on a temporary failure


@dataclass(frozen=True)
class CheckMail:
    """Decide on the reverse-path; resolve with None (accept) or an error Reply."""

    envelope: Envelope


@dataclass(frozen=True)
class CheckRcpt:
    """Decide on one recipient; resolve with a :class:`RcptResult`."""

    envelope: Envelope
    recipient: Recipient


@dataclass(frozen=True)
class RcptResult:
    reply: Reply | None = None  # None = accepted
    route: Any = None


@dataclass(frozen=True)
class MessageStart:
    envelope: Envelope


@dataclass(frozen=True)
class MessageData:
    data: bytes


@dataclass(frozen=True)
class MessageAbort:
    reason: str


@dataclass(frozen=True)
class MessageEnd:
    """The body is complete: deliver durably, then resolve with the final Reply (RFC 5321 4.1.1.4)."""

    envelope: Envelope


Action = Send | StartTlsNow | Close | CheckAuth | CheckMail | CheckRcpt | MessageStart | MessageData | MessageAbort \
    | MessageEnd

SaslStart = Callable[[str, "bytes | None"], sasl.SaslExchange]


# --------------------------------------------------------------------------------------------- the session

_COMMAND, _DATA, _BDAT, _SASL, _CLOSED = "command", "data", "bdat", "sasl", "closed"


#: (esmtp, auth) -> the Extensions those advertise (SmtpSession._extensions).
_EXTENSIONS: dict[tuple[bool, bool], Extensions] = {}


class SmtpSession:
    """One SMTP connection.  Call :meth:`start` once, then :meth:`receive` / :meth:`resolve`."""

    def __init__(self, config: SessionConfig, peer: Peer, *, tls: bool = False,
                 sasl_start: SaslStart | None = None, max_commands: int | None = None):
        self.config = config
        #: Command lines handled per call of receive/resolve/proceed at most (None: all that are buffered).
        self.max_commands = max_commands
        #: The last call stopped at ``max_commands`` with input still buffered: call :meth:`proceed` later.
        self.yielded = False
        self.peer = peer
        self.tls = tls
        self._sasl_start = sasl_start or sasl.start
        self._buf = bytearray()
        self._framer = CommandFramer(max(config.max_command_line, MAX_AUTH_LINE))
        self._mode = _COMMAND
        self._waiting: Callable[[Any], None] | None = None
        self._out: list[Action] = []
        self.errors = 0
        self.messages = 0
        self.helo: str | None = None
        self.esmtp = False
        self.identity: Identity | None = None
        self.envelope: Envelope | None = None
        self._data: DataReader | None = None
        self._bdat: BdatReader | None = None
        self._bdat_last = False
        self._bdat_active: BdatReader | None = None  # the reader of the chunk being read
        self._bdat_reject: Reply | None = None  # reply for a BDAT whose octets are read and dropped
        self._txn_failed = False  # a BDAT chunk failed: later chunks are refused until RSET
        self._sasl: Any = None
        self._sasl_mech = ""

    # ------------------------------------------------------------------ public API

    @property
    def closed(self) -> bool:
        return self._mode == _CLOSED

    @property
    def waiting(self) -> bool:
        """A check is pending: the glue should stop reading until it resolves."""
        return self._waiting is not None

    def current_timeout(self) -> float | None:
        """Seconds of client silence allowed now (RFC 5321 4.5.3.2); None while we are the ones working."""
        if self._waiting is not None or self._mode == _CLOSED:
            return None
        if self._mode in (_DATA, _BDAT):
            return self.config.timeout_data  # RFC 5321 4.5.3.2.5 data block
        return self.config.timeout_command  # RFC 5321 4.5.3.2.7 server timeout

    def start(self) -> list[Action]:
        """The greeting (RFC 5321 4.2: 220, no enhanced code per RFC 2034 3)."""
        text = f"{self.config.hostname} ESMTP {self.config.banner}".rstrip()
        self._send(Reply(220, "", text))
        return self._flush()

    def receive(self, data: bytes) -> list[Action]:
        if self._mode != _CLOSED:
            self._buf += data
            self._run()
        return self._flush()

    def proceed(self) -> list[Action]:
        """Go on with the input left buffered when the last call stopped at its budget (:attr:`yielded`)."""
        if self._mode != _CLOSED and self._waiting is None:
            self._run()
        return self._flush()

    def resolve(self, result: Any) -> list[Action]:
        """Hand back the outcome of the pending check (see the Check* / MessageEnd actions)."""
        if self._waiting is None:
            if self._mode == _CLOSED:
                return []
            raise RuntimeError("resolve() without a pending check")
        cont, self._waiting = self._waiting, None
        if self._mode != _CLOSED:
            try:
                cont(result)
            except SmtpError as e:
                self._error_reply(e)
            self._run()
        return self._flush()

    def timeout(self) -> list[Action]:
        self._abort_message("timeout")
        self._send(codes.TIMEOUT, count=False)
        self._close()
        return self._flush()

    def shutdown(self) -> list[Action]:
        """The server is stopping: 421 and close (RFC 5321 3.8)."""
        self._abort_message("shutdown")
        self._send(codes.SHUTTING_DOWN, count=False)
        self._close()
        return self._flush()

    def connection_lost(self) -> list[Action]:
        self._abort_message("connection lost")
        self._mode = _CLOSED
        self._waiting = None
        return self._flush()

    # ------------------------------------------------------------------ plumbing

    def _flush(self) -> list[Action]:
        out, self._out = self._out, []
        return out

    def _send(self, reply: Reply, count: bool = True) -> None:
        self._out.append(Send(reply))
        if count and reply.is_error:
            self.errors += 1
            if self.errors > self.config.max_errors:  # RFC 5321 4.3.2 allows closing on a misbehaving client
                self._abort_message("too many errors")
                self._out.append(Send(codes.TOO_MANY_ERRORS))
                self._close()

    def _close(self) -> None:
        if self._mode != _CLOSED:
            self._mode = _CLOSED
            self._out.append(Close())

    def _wait(self, action: Action, cont: Callable[[Any], None]) -> None:
        self._out.append(action)
        self._waiting = cont

    def _error_reply(self, e: SmtpError) -> None:
        self._send(e.reply)
        if e.close:
            self._close()

    def _run(self) -> None:
        self.yielded = False
        handled = 0
        while self._waiting is None and self._mode != _CLOSED:
            if self._mode == _DATA:
                if not self._step_data():
                    return
            elif self._mode == _BDAT:
                if not self._step_bdat():
                    return
            else:
                if self.max_commands is not None and handled >= self.max_commands:
                    self.yielded = bool(self._buf)
                    return
                handled += 1
                line = self._framer.next_line(self._buf)
                if line is None:
                    return
                try:
                    self._line(line)
                except SmtpError as e:
                    self._error_reply(e)
                except Exception:
                    log.exception("smtp: internal error")
                    self._send(codes.LOCAL_ERROR)

    def _extensions(self) -> Extensions:
        key = (self.esmtp, self.config.offer_auth)
        ext = _EXTENSIONS.get(key)
        if ext is None:  # one frozen value per combination, not a new one for every command line
            ext = _EXTENSIONS[key] = Extensions(esmtp=key[0], auth=key[1])
        return ext

    def _auth_allowed(self) -> bool:
        # RFC 4954 4 / RFC 8314: plaintext mechanisms only inside TLS (or from loopback, as Dovecot allows).
        return sasl.plaintext_allowed(tls_active=self.tls, loopback=self.peer.loopback,
                                      allow_without_tls=self.config.allow_plaintext_without_tls)

    # ------------------------------------------------------------------ command lines

    def _line(self, raw) -> None:
        if raw is LINE_TOO_LONG:
            if self._mode == _SASL:
                self._end_sasl()
            raise SmtpError(codes.LINE_TOO_LONG)  # RFC 5321 4.5.3.1.4
        if self._mode == _SASL:
            self._sasl_line(raw)
            return
        if len(raw) + 2 > self.config.max_command_line and raw[:5].upper() != b"AUTH ":
            raise SmtpError(codes.LINE_TOO_LONG)  # RFC 5321 4.5.3.1.4; AUTH may use 12288 (RFC 4954 4)
        if has_bare_newline(raw):
            raise SmtpError(codes.BARE_NEWLINE_COMMAND)  # RFC 5321 2.3.8: CRLF only
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise SmtpError(codes.BAD_UTF8) from None
        cmd = parse_command(text, self._extensions())
        handler, needs_helo = COMMANDS[type(cmd)]
        if needs_helo and self.helo is None:
            raise SmtpError(codes.HELO_FIRST)  # RFC 5321 4.1.4
        handler(self, cmd)

    # ------------------------------------------------------------------ handlers

    def _reset_transaction(self) -> None:
        self._abort_message("reset")
        self.envelope = None
        self._data = None
        self._bdat = None
        self._bdat_reject = None
        self._txn_failed = False

    def _abort_message(self, reason: str) -> None:
        env = self.envelope
        if env is not None and env.body and not env.ended:
            env.ended = True
            self._out.append(MessageAbort(reason))

    def _ehlo(self, cmd: Ehlo) -> None:
        self._reset_transaction()  # RFC 5321 4.1.4: EHLO/HELO reset the transaction like RSET
        self.helo = cmd.domain
        self.esmtp = cmd.extended
        greeting = f"{self.config.hostname} Hello {cmd.domain}"
        if not cmd.extended:
            self._send(Reply(250, "", greeting))  # RFC 2034 3: no enhanced code on the HELO reply
            return
        lines = [
            greeting,
            "PIPELINING",  # RFC 2920
            f"SIZE {self.config.max_message_size}",  # RFC 1870
            "8BITMIME",  # RFC 6152
            "SMTPUTF8",  # RFC 6531
            "ENHANCEDSTATUSCODES",  # RFC 2034
            "DSN",  # RFC 3461
            "CHUNKING",  # RFC 3030
        ]
        if self.config.offer_starttls and not self.tls:
            lines.append("STARTTLS")  # RFC 3207
        if self.config.offer_auth and self._auth_allowed() and self.identity is None:
            lines.append("AUTH " + " ".join(SASL_MECHANISMS))  # RFC 4954 3
        lines.append("HELP")
        self._send(Reply(250, "", tuple(lines)))

    def _mail(self, cmd: Mail) -> None:
        if self.envelope is not None:
            raise SmtpError(codes.NESTED_MAIL)  # RFC 5321 4.1.4
        if self.config.require_auth and self.identity is None and not self.peer.trusted:
            raise SmtpError(codes.AUTH_REQUIRED)  # RFC 4954 6
        if self.messages >= self.config.max_messages:
            raise SmtpError(codes.TOO_MANY_MESSAGES, close=True)
        if cmd.params.size is not None and cmd.params.size > self.config.max_message_size:
            raise SmtpError(codes.MESSAGE_TOO_BIG)  # RFC 1870 6.1
        if cmd.reverse_path is not None and not cmd.reverse_path.is_ascii and not cmd.params.smtputf8:
            raise SmtpError(codes.NON_ASCII_ADDRESS)  # RFC 6531 3.5
        env = Envelope(self.helo or "", self.esmtp, cmd.reverse_path, cmd.params)

        def done(reply: Reply | None) -> None:
            if reply is not None and reply.is_error:
                self._send(reply)
                return
            self.envelope = env
            self._send(reply or codes.SENDER_OK)

        self._wait(CheckMail(env), done)

    def _rcpt(self, cmd: Rcpt) -> None:
        env = self.envelope
        if env is None:
            raise SmtpError(codes.MAIL_FIRST)
        if env.body:
            raise SmtpError(codes.BAD_SEQUENCE)  # RFC 3030 2: no RCPT once BDAT has started
        if len(env.recipients) >= self.config.max_recipients:
            raise SmtpError(codes.TOO_MANY_RECIPIENTS)  # RFC 5321 4.5.3.1.10
        if not cmd.forward_path.is_ascii and not env.smtputf8:
            raise SmtpError(codes.NON_ASCII_ADDRESS)  # RFC 6531 3.5
        rcpt = Recipient(cmd.forward_path, cmd.params)

        def done(result: RcptResult) -> None:
            if result.reply is not None and result.reply.is_error:
                self._send(result.reply)
                return
            rcpt.route = result.route
            env.recipients.append(rcpt)
            self._send(result.reply or codes.RECIPIENT_OK)

        self._wait(CheckRcpt(env, rcpt), done)

    def _data_cmd(self, cmd: Data) -> None:
        env = self.envelope
        if env is None:
            raise SmtpError(codes.MAIL_FIRST)
        if env.body == "BDAT":
            raise SmtpError(codes.MIXED_DATA_BDAT)  # RFC 3030 2
        if not env.recipients:
            raise SmtpError(codes.NO_VALID_RECIPIENTS)  # RFC 5321 3.3 (554 with no valid recipients)
        env.body = "DATA"
        self._data = DataReader(self.config.max_message_size, self.config.max_text_line)
        self._send(codes.START_DATA)
        self._out.append(MessageStart(env))
        self._mode = _DATA

    def _step_data(self) -> bool:
        reader, env = self._data, self.envelope
        assert reader is not None and env is not None
        chunks, done = reader.feed(self._buf)
        for chunk in chunks:
            self._out.append(MessageData(chunk))
        env.size = reader.size
        if reader.error is not None:
            self._abort_message(reader.error.lines[0])  # once: MessageAbort is emitted a single time
        if not done:
            return False
        self._mode = _COMMAND
        self._data = None
        if reader.error is not None:
            reply = reader.error
            self._reset_transaction()
            self._send(reply)
            return True
        self._end_message()
        return True

    def _end_message(self) -> None:
        env = self.envelope
        assert env is not None
        env.ended = True

        def done(reply: Reply) -> None:
            if not reply.is_error:
                self.messages += 1
            self.envelope = None
            self._bdat = None
            self._txn_failed = False
            self._send(reply)

        self._wait(MessageEnd(env), done)

    def _bdat_cmd(self, cmd: Bdat) -> None:
        # RFC 3030 2: the octets follow the command whatever the reply; read them before answering.
        env = self.envelope
        reject: Reply | None = None
        if env is None:
            reject = codes.MAIL_FIRST
        elif env.body == "DATA":
            reject = codes.MIXED_DATA_BDAT
        elif not env.recipients:
            reject = codes.NO_VALID_RECIPIENTS
        elif self._txn_failed:
            reject = codes.BDAT_FAILED_TRANSACTION
        if reject is None and env is not None and not env.body:
            env.body = "BDAT"
            self._bdat = BdatReader(self.config.max_message_size)
            self._out.append(MessageStart(env))
        reader = self._bdat if reject is None else BdatReader(self.config.max_message_size)
        assert reader is not None
        self._bdat_reject = reject
        self._bdat_last = cmd.last
        reader.start_chunk(cmd.size)
        self._bdat_active = reader
        self._mode = _BDAT

    def _step_bdat(self) -> bool:
        reader = self._bdat_active
        assert reader is not None
        data, complete = reader.feed(self._buf)
        if self._bdat_reject is not None:
            if not complete:
                return False
            self._mode = _COMMAND
            self._send(self._bdat_reject)
            return True
        env = self.envelope
        assert env is not None
        if data:
            self._out.append(MessageData(data))
        env.size = reader.size
        if reader.error is not None:
            self._abort_message(reader.error.lines[0])
        if not complete:
            return False
        self._mode = _COMMAND
        if reader.error is None and self._bdat_last:
            reader.finish_message()
            if reader.error is not None:
                self._abort_message(reader.error.lines[0])
        if reader.error is not None:
            reply = reader.error
            if self._bdat_last:
                self._reset_transaction()
            else:
                self._txn_failed = True
            self._send(reply)
            return True
        if self._bdat_last:
            self._end_message()
        else:
            self._send(Reply(250, "2.0.0", f"{reader.size} octets received"))
        return True

    def _rset(self, cmd: Rset) -> None:
        self._reset_transaction()
        self._send(codes.RESET_OK)

    def _noop(self, cmd: Noop) -> None:
        self._send(codes.NOOP_OK)

    def _vrfy(self, cmd: Vrfy) -> None:
        if not cmd.argument:
            raise SmtpError(codes.BAD_ARGUMENTS.with_text("VRFY needs an argument"))
        self._send(codes.CANNOT_VRFY)  # RFC 5321 3.5.3: never disclose accounts

    def _expn(self, cmd: Expn) -> None:
        self._send(codes.NOT_IMPLEMENTED)  # RFC 5321 3.5.2: EXPN may be disabled

    def _help(self, cmd: Help) -> None:
        self._send(codes.HELP)

    def _quit(self, cmd: Quit) -> None:
        self._reset_transaction()
        self._send(codes.BYE)
        self._close()

    def _starttls(self, cmd: StartTls) -> None:
        if self.tls:
            raise SmtpError(codes.BAD_SEQUENCE.with_text("TLS already active"))
        if not self.config.offer_starttls:
            raise SmtpError(codes.NOT_IMPLEMENTED)
        self._send(codes.READY_TLS)
        self._out.append(StartTlsNow())
        # RFC 3207 4.2 / 6 (CVE-2011-0411 class): anything the client sent after STARTTLS arrived in plaintext and
        # must not be executed inside TLS; and all knowledge from before TLS is discarded.
        del self._buf[:]
        self._framer = CommandFramer(self._framer.max_line)
        self._reset_transaction()
        self.helo = None
        self.esmtp = False
        self.identity = None
        self.tls = True

    def _auth(self, cmd: Auth) -> None:
        if not self.config.offer_auth:
            raise SmtpError(codes.NOT_IMPLEMENTED)
        if self.identity is not None:
            raise SmtpError(codes.ALREADY_AUTHENTICATED)  # RFC 4954 4
        if self.envelope is not None:
            raise SmtpError(codes.BAD_SEQUENCE.with_text("AUTH not allowed during a mail transaction"))
        if cmd.mechanism not in SASL_MECHANISMS:
            raise SmtpError(codes.UNKNOWN_MECHANISM)
        if not self._auth_allowed():
            raise SmtpError(codes.ENCRYPTION_REQUIRED)  # RFC 4954 6
        initial = cmd.initial_response.encode("ascii") if cmd.initial_response is not None else None
        try:
            exchange = self._sasl_start(cmd.mechanism, initial)
        except sasl.SaslAuthorizationError:
            raise SmtpError(codes.AUTH_INVALID) from None  # RFC 4954 6: authzid not allowed -> 535 5.7.8
        except sasl.SaslError as e:
            raise SmtpError(codes.SASL_MALFORMED.with_text(f"Authentication failed: {e}")) from None
        self._sasl, self._sasl_mech = exchange, cmd.mechanism
        self._sasl_continue()

    def _sasl_continue(self) -> None:
        exchange = self._sasl
        if exchange.done:
            self._end_sasl()
            check = CheckAuth(self._sasl_mech, exchange.username, exchange.password)

            def done(result: AuthResult) -> None:
                if result.identity is None:
                    self._send(result.reply or codes.AUTH_INVALID)
                    return
                self.identity = result.identity
                self._send(codes.AUTH_OK)

            self._wait(check, done)
            return
        self._mode = _SASL
        challenge = (exchange.challenge or b"").decode("ascii")
        self._send(Reply(334, "", challenge), count=False)  # RFC 4954 4: base64 challenge

    def _end_sasl(self) -> None:
        self._sasl = None
        if self._mode == _SASL:
            self._mode = _COMMAND

    def _sasl_line(self, raw: bytes) -> None:
        try:
            self._sasl.respond(raw)
        except sasl.SaslCancelled:
            self._end_sasl()
            raise SmtpError(codes.AUTH_CANCELLED) from None  # RFC 4954 4: "*" cancels with 501
        except sasl.SaslAuthorizationError:
            self._end_sasl()
            raise SmtpError(codes.AUTH_INVALID) from None
        except sasl.SaslError as e:
            self._end_sasl()
            raise SmtpError(codes.SASL_MALFORMED.with_text(f"Authentication failed: {e}")) from None
        self._sasl_continue()


#: The one command table: handler and whether EHLO/HELO must come first (RFC 5321 4.1.4).
COMMANDS: dict[type, tuple[Callable[[SmtpSession, Command], None], bool]] = {
    Ehlo: (SmtpSession._ehlo, False),
    Mail: (SmtpSession._mail, True),
    Rcpt: (SmtpSession._rcpt, True),
    Data: (SmtpSession._data_cmd, True),
    Bdat: (SmtpSession._bdat_cmd, True),
    Rset: (SmtpSession._rset, False),
    Noop: (SmtpSession._noop, False),
    Quit: (SmtpSession._quit, False),
    Vrfy: (SmtpSession._vrfy, False),
    Expn: (SmtpSession._expn, False),
    Help: (SmtpSession._help, False),
    StartTls: (SmtpSession._starttls, True),
    Auth: (SmtpSession._auth, True),
}
