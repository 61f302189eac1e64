"""The IMAP session: state machine, the command table and error mapping (RFC 3501, RFC 9051 and the extensions
of ``CAPABILITIES``). The handlers live by command family in :mod:`.cmd_auth` (connection, authentication, ENABLE,
IDLE, COMPRESS), :mod:`.cmd_mailbox` (SELECT, mailbox management, LIST, STATUS, APPEND, QUOTA),
:mod:`.cmd_message` (STORE, COPY, MOVE, EXPUNGE, FETCH) and :mod:`.cmd_search` (SEARCH, SORT, THREAD); what they
share (states, :class:`No` / :class:`Bad`, :class:`~.cmd_common.Ok`) is in :mod:`.cmd_common`.

``ImapSession(server, conn, *, client_ip, tls_active, tls_available, recent)``

- ``server`` is the :class:`mailserver.service.MailServer` (``astore``, ``auth``, ``hub``, ``config``, ``store``,
  ``pools``, ``reactor``); ``conn`` is what the Twisted protocol offers the session (:class:`Connection`):
  ``write(bytes)``, ``start_tls()``, ``start_compress()``, ``close()``, ``set_reading(bool)`` (pause/resume the
  transport), ``writable() -> Deferred | None`` (None when the transport can take more output now) and
  ``activity(idle: bool)`` (re-arm the autologout timer).
- ``greeting()``, ``data_received(bytes)``, ``connection_lost()``, ``server_shutdown()``.

Contract:

- Commands run strictly in the order received: while one waits on the database (or a streamed APPEND literal is
  being checked), no further event is taken from the :class:`~mailserver.imap.wire.ImapReader`, and the transport
  is paused (``set_reading(False)``) so pipelined input stays in the kernel.
- One command table, :data:`COMMANDS` (command class -> handler, allowed states); the state check is in
  :meth:`ImapSession._execute` only. Handlers raise :class:`No` / :class:`Bad` (with an optional response code);
  store errors and anything unexpected are mapped to tagged replies in :func:`_reply_for` only.
- Unsolicited updates (EXISTS, FETCH FLAGS, EXPUNGE/VANISHED) from other sessions, SMTP, POP3 and the webmail come
  through the :class:`storage.changes.ChangeHub`; they are told before each tagged reply, and at once in IDLE
  (RFC 9051 7.4.1: no EXPUNGE while answering FETCH, STORE, SEARCH).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import Logger

from mailserver import sasl
from storage.store import (
    AlreadyExists,
    HasChildren,
    Invalid,
    NotFound,
    QuotaExceeded,
    StoreError,
)

from . import cmd_auth, cmd_mailbox, cmd_message, cmd_search
from . import commands as c
from . import response as r
from .cmd_common import (
    ANY,
    AUTH,
    AUTHENTICATED,
    LOGOUT,
    NOT_AUTHENTICATED,
    REPLIED,
    SELECTED,
    Bad,
    No,
    Ok,
)
from .parser import parse_append_prefix, parse_command
from .selected import RecentTracker, SelectedMailbox, UpdateOptions, flag_names
from .wire import (
    CommandReady,
    CommandRejected,
    LiteralAnnounced,
    LiteralChunk,
    LiteralEnd,
    ParseError,
    ParserLimits,
    RejectReason,
)

log = Logger()

# Commands whose responses must not be interleaved with EXPUNGE (RFC 9051 7.4.1; UID variants may).
_NO_EXPUNGE = (c.Fetch, c.Store, c.Search, c.Sort, c.Thread)


class Connection(Protocol):
    def write(self, data: bytes) -> None: ...
    def start_tls(self) -> None: ...
    def start_compress(self) -> None: ...
    def close(self) -> None: ...
    def set_reading(self, on: bool) -> None: ...
    def writable(self) -> Deferred | None: ...
    def activity(self, idle: bool = False) -> None: ...


@dataclass
class _AppendState:
    tag: str
    mailbox: object  # MailboxInfo
    writers: list
    total: int = 0


_STORE_ERRORS = {
    NotFound: ("NONEXISTENT", "no such mailbox"),
    AlreadyExists: ("ALREADYEXISTS", "mailbox already exists"),
    HasChildren: ("HASCHILDREN", "mailbox has children"),
    QuotaExceeded: ("OVERQUOTA", "quota exceeded"),
    Invalid: ("CANNOT", "not allowed"),
}


def _reply_for(tag: str, exc: BaseException, name: str) -> bytes:
    """The one place where errors become tagged replies."""
    if isinstance(exc, No):
        return r.tagged(tag, exc.status, exc.text, exc.code)
    if isinstance(exc, ParseError):
        return r.tagged(tag, exc.status, exc.message, exc.code)
    if isinstance(exc, sasl.SaslAuthorizationError):
        return r.tagged(tag, "NO", "not allowed to act as another identity", "AUTHORIZATIONFAILED")
    if isinstance(exc, sasl.SaslCancelled):
        return r.tagged(tag, "BAD", "AUTHENTICATE cancelled")
    if isinstance(exc, sasl.SaslError):
        return r.tagged(tag, "BAD", f"invalid SASL exchange: {exc}")
    if isinstance(exc, StoreError):
        for cls, (code, text) in _STORE_ERRORS.items():
            if isinstance(exc, cls):
                return r.tagged(tag, "NO", str(exc) or text, code)
        return r.tagged(tag, "NO", str(exc) or "failed", "CANNOT")
    log.failure("IMAP {name} failed", name=name)
    return r.tagged(tag, "NO", f"{name} failed: server error", "SERVERBUG")


class ImapSession:
    def __init__(self, server, conn: Connection, *, client_ip: str = "", tls_active: bool = False,
                 tls_available: bool = False, recent: RecentTracker | None = None,
                 limits: ParserLimits | None = None):
        from .wire import ImapReader

        self.server = server
        self.conn = conn
        self.client_ip = client_ip
        self.tls_active = tls_active
        self.tls_available = tls_available
        self.recent = recent or RecentTracker()
        cfg_limits = server.config.limits
        self.limits = limits or ParserLimits.from_config(cfg_limits)
        self.max_errors = cfg_limits.imap_max_commands_without_progress
        self.append_limit = self.limits.max_literal
        self.reader = ImapReader(self.limits)
        self.state = NOT_AUTHENTICATED
        self.account_id: int | None = None
        self.username = ""
        self.selected: SelectedMailbox | None = None
        self.enabled: set[str] = set()
        self.condstore = False
        self.compressing = False
        self.closed = False
        self.errors = 0
        self._running: Deferred | None = None
        self._line_waiter: Deferred | None = None
        self._literal_busy = False
        self._pumping = False
        self._repump = False
        self._append: _AppendState | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._collect: tuple[int, list] | None = None
        self._idle_tag: str | None = None
        self.commands_run = 0

    # -- derived state ----------------------------------------------------------------------------------------
    @property
    def utf8(self) -> bool:
        # RFC 6855 3 / RFC 9051: mailbox names are UTF-8 once UTF8=ACCEPT or IMAP4rev2 is enabled.
        return "UTF8=ACCEPT" in self.enabled or "IMAP4REV2" in self.enabled

    @property
    def rev2(self) -> bool:
        return "IMAP4REV2" in self.enabled

    @property
    def qresync(self) -> bool:
        return "QRESYNC" in self.enabled

    def enable_condstore(self) -> None:
        """A CONDSTORE-enabling command ran (RFC 7162 3.1). When a mailbox is already selected, the client has not
        seen its HIGHESTMODSEQ yet as a CONDSTORE client: it is sent once in an untagged OK (RFC 7162 3.1)."""
        if self.condstore:
            return
        self.condstore = True
        sel = self.selected
        if sel is not None:
            self.send(r.status_line("OK", "highest", f"HIGHESTMODSEQ {sel.highest_modseq}"))

    def options(self) -> UpdateOptions:
        return UpdateOptions(condstore=self.condstore or self.qresync, qresync=self.qresync, rev1=not self.rev2)

    @property
    def plaintext_allowed(self) -> bool:
        auth = self.server.auth
        if auth is None:
            return self.tls_active
        return bool(auth.plaintext_allowed(self.client_ip, self.tls_active))

    def capabilities(self) -> list[str]:
        caps = ["IMAP4rev1", "IMAP4rev2", "LITERAL+", "SASL-IR", "ID", "ENABLE", "IDLE", "NAMESPACE", "UNSELECT",
                "CHILDREN", "UTF8=ACCEPT"]
        if self.state == NOT_AUTHENTICATED:
            if self.tls_available and not self.tls_active:
                caps.append("STARTTLS")
            if self.plaintext_allowed:
                caps += ["AUTH=PLAIN", "AUTH=LOGIN"]
            else:
                caps.append("LOGINDISABLED")  # RFC 9051 6.2.3
            return caps
        caps += ["UIDPLUS", "MOVE", "LIST-EXTENDED", "LIST-STATUS", "SPECIAL-USE", "CREATE-SPECIAL-USE",
                 "CONDSTORE", "QRESYNC", "ESEARCH", "MULTIAPPEND", "BINARY", f"APPENDLIMIT={self.append_limit}",
                 "STATUS=SIZE", "QUOTA", "QUOTA=RES-STORAGE", "SORT", "ESORT", "THREAD=REFERENCES",
                 "THREAD=ORDEREDSUBJECT"]
        if not self.compressing:
            caps.append("COMPRESS=DEFLATE")
        return caps

    def _capability_code(self) -> str:
        return "CAPABILITY " + " ".join(self.capabilities())

    # -- I/O entry points -------------------------------------------------------------------------------------
    def greeting(self) -> None:
        self.send(r.status_line("OK", f"{self.server.config.hostname} IMAP ready", self._capability_code()))

    def send(self, data: bytes) -> None:
        if not self.closed:
            self.conn.write(data)

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self.reader.feed(data)
        self._pump()

    def connection_lost(self) -> None:
        self.closed = True
        self.state = LOGOUT
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self._abort_append()
        waiter, self._line_waiter = self._line_waiter, None
        if waiter is not None:
            waiter.errback(ConnectionError("connection lost"))

    def server_shutdown(self) -> None:
        if not self.closed and self._running is None:
            self.send(r.status_line("BYE", "server shutting down", "UNAVAILABLE"))
            self._close()

    def _close(self) -> None:
        if not self.closed:
            self.state = LOGOUT
            self.conn.close()
            self.closed = True
            if self._unsubscribe is not None:
                self._unsubscribe()
                self._unsubscribe = None

    @property
    def busy(self) -> bool:
        return self._running is not None or self._literal_busy

    # -- the event pump ---------------------------------------------------------------------------------------
    def _pump(self) -> None:
        if self._pumping:
            self._repump = True
            return
        self._pumping = True
        try:
            while not self.closed:
                self._repump = False
                if self._literal_busy or (self._running is not None and self._line_waiter is None):
                    break
                event = self.reader.next_event()
                if event is None:
                    break
                self._handle(event)
        finally:
            self._pumping = False
        if not self.closed:
            waiting = self._literal_busy or (self._running is not None and self._line_waiter is None)
            self.conn.set_reading(not waiting)

    def _handle(self, event) -> None:
        if isinstance(event, CommandReady):
            if self._line_waiter is not None:
                waiter, self._line_waiter = self._line_waiter, None
                waiter.callback(event.frame)
            else:
                self._start(event.frame)
        elif isinstance(event, LiteralChunk):
            if self._append is not None and self._append.writers:
                self._append.writers[-1].write(event.data)
        elif isinstance(event, LiteralEnd):
            pass
        elif isinstance(event, LiteralAnnounced):
            if event.streamed:
                self._literal_busy = True
                d = ensureDeferred(self._check_append_literal(event))
                d.addBoth(self._literal_checked)
            else:
                self.reader.accept_literal()
                if event.synchronizing:
                    self.send(r.continuation("Ready"))
        elif isinstance(event, CommandRejected):
            self._rejected(event)

    def _literal_checked(self, _result) -> None:
        self._literal_busy = False
        self._pump()

    def _rejected(self, event: CommandRejected) -> None:
        tag = event.tag.decode("ascii", "replace") if event.tag else "*"
        self._abort_append()
        if self._line_waiter is not None:
            waiter, self._line_waiter = self._line_waiter, None
            waiter.errback(Bad(event.reason.value))
            return
        if event.reason is RejectReason.LITERAL_TOO_LARGE:
            # RFC 7889 / RFC 4469: a literal over the limit is refused before it is sent.
            self.send(r.tagged(tag, "NO", "literal too large", "TOOBIG"))
        else:
            self.send(r.tagged(tag, "BAD", event.reason.value))
        self._error()

    def _error(self) -> None:
        """Count a command that made no progress; too many in a row ends the connection."""
        self.errors += 1
        if self.errors > self.max_errors:
            self.send(r.status_line("BYE", "too many invalid commands"))
            self._close()

    def _start(self, frame) -> None:
        try:
            command = parse_command(frame, limits=self.limits, utf8=self.utf8)
        except ParseError as e:
            self._abort_append()
            self.send(r.tagged(e.tag, e.status, e.message, e.code))
            self._error()
            return
        d = ensureDeferred(self._execute(command))
        if not d.called:
            self._running = d
            d.addBoth(self._command_done)

    def _command_done(self, _result) -> None:
        self._running = None
        self.conn.set_reading(True)
        self._pump()

    def next_line(self) -> Deferred:
        """The next line the client sends (AUTHENTICATE responses, IDLE's DONE)."""
        d: Deferred = Deferred()
        self._line_waiter = d
        self.conn.set_reading(True)
        # Input may already be buffered: let the pump hand it over once the caller awaits.
        self.server.reactor.callLater(0, self._pump)
        return d

    # -- dispatch ---------------------------------------------------------------------------------------------
    async def _execute(self, command: c.Command) -> None:
        tag = command.tag
        name = command.name or getattr(command, "command", "?")
        self.conn.activity()
        try:
            entry = COMMANDS.get(type(command))
            if entry is None:
                raise Bad(f"unknown command {name}")
            handler, states = entry
            if not self.state & states:
                raise Bad(f"{name} not allowed in this state")
            result = await handler(self, command)
            if result is REPLIED:
                self.errors = 0
                return
            self._flush_updates(command)
            if self.closed:
                return
            ok = result if isinstance(result, Ok) else Ok()
            code = ok.code
            if code is None and self.selected is not None and self.selected.expunge_issued():
                code = "EXPUNGEISSUED"  # RFC 9051 7.1: the answer may lack messages expunged meanwhile
            self.send(r.tagged(tag, "OK", ok.text or f"{_display_name(command)} completed", code))
            self.errors = 0
        except BaseException as e:  # noqa: BLE001 - every failure becomes a tagged reply
            if self.closed:
                return
            if not isinstance(e, (No, ParseError, StoreError, sasl.SaslError)):
                log.failure("IMAP {name} failed", name=name)
            try:
                self._flush_updates(command)
            except Exception:
                log.failure("flushing updates failed")
            if not self.closed:
                self.send(_reply_for(tag, e, name))
            if isinstance(e, Bad):
                self._error()

    def _flush_updates(self, command: c.Command | None = None) -> None:
        sel = self.selected
        if sel is None or self.closed:
            return
        if sel.deleted:
            self.send(r.status_line("BYE", "the selected mailbox was deleted"))
            self._close()
            return
        allow = not (isinstance(command, _NO_EXPUNGE) and not getattr(command, "uid", False))
        tracker = self.recent if (not sel.readonly and not self.rev2) else None
        lines = sel.flush(allow_expunge=allow, options=self.options(), recent=tracker)
        if lines:
            self.send(b"".join(lines))

    # -- change notifications ---------------------------------------------------------------------------------
    def _on_changes(self, changes: list) -> None:
        sel = self.selected
        collect = self._collect
        for change in changes:
            if sel is not None and change.mailbox_id == sel.mailbox_id:
                sel.on_change(change)
            elif collect is not None and change.mailbox_id == collect[0]:
                collect[1].append(change)
        if self._idle_tag is not None and sel is not None and sel.has_updates():
            # RFC 9051 6.3.13: in IDLE, updates are sent as they happen.
            self._flush_updates()

    def _login(self, account_id: int, username: str) -> None:
        self.state = AUTHENTICATED
        self.account_id = account_id
        self.username = username
        self._unsubscribe = self.server.hub.subscribe(account_id, self._on_changes)
        log.info("imap login {user} from {ip}", user=username, ip=self.client_ip)

    # -- APPEND streaming -------------------------------------------------------------------------------------
    def _abort_append(self) -> None:
        state, self._append = self._append, None
        if state is not None:
            for w in state.writers:
                try:
                    w.abort()
                except Exception:
                    log.failure("aborting a blob writer failed")

    async def _check_append_literal(self, event: LiteralAnnounced) -> None:
        """Before an APPEND message streams: mailbox, APPENDLIMIT and quota (RFC 9051 6.3.12, RFC 7889)."""
        tag = event.tag.decode("ascii", "replace") if event.tag else "*"
        try:
            if not self.state & AUTH:
                raise Bad("APPEND not allowed in this state")
            prefix = parse_append_prefix(event.prefix, limits=self.limits, utf8=self.utf8)
            if prefix.index == 0 or self._append is None:
                self._abort_append()
                mailbox = await self.server.astore.get_mailbox(self.account_id, prefix.mailbox)
                if mailbox is None:
                    raise No("no such mailbox", "TRYCREATE")  # RFC 9051 6.3.12
                self._append = _AppendState(tag, mailbox, [])
            state = self._append
            if event.size > self.append_limit:
                raise No(f"message larger than APPENDLIMIT {self.append_limit}", "TOOBIG")
            used, limit = await self.server.astore.quota(self.account_id)
            if limit and used + state.total + event.size > limit:
                raise No("quota exceeded", "OVERQUOTA")  # RFC 9208 4.3
            if self.closed:
                return
            state.total += event.size
            state.writers.append(self.server.store.blobs.writer())
            self.reader.accept_literal()
            if event.synchronizing:
                self.send(r.continuation("Ready"))
        except BaseException as e:  # noqa: BLE001
            self._abort_append()
            if self.closed:
                return
            self.reader.reject_literal()
            self.send(_reply_for(tag, e, "APPEND"))
            if isinstance(e, Bad):
                self._error()

    # -- output with backpressure -----------------------------------------------------------------------------
    async def drain(self) -> None:
        """Wait while the transport's buffer is full (large FETCH output)."""
        d = self.conn.writable()
        if d is not None:
            await d


def _display_name(command: c.Command) -> str:
    name = command.name
    if getattr(command, "uid", False) or (isinstance(command, c.Expunge) and command.uid_set is not None):
        name = "UID " + name
    if isinstance(command, c.Select) and command.readonly:
        name = "EXAMINE"
    return name


async def _unknown(s: ImapSession, cmd: c.Unknown):
    raise Bad(f"unknown command {cmd.command}")


#: The command table: command class -> (handler, states in which it is allowed).
COMMANDS: dict[type, tuple[Callable, int]] = {
    c.Capability: (cmd_auth.capability, ANY),
    c.Noop: (cmd_auth.noop, ANY),
    c.Logout: (cmd_auth.logout, ANY),
    c.Id: (cmd_auth.id_, ANY),
    c.Unknown: (_unknown, ANY),
    c.StartTLS: (cmd_auth.starttls, NOT_AUTHENTICATED),
    c.Login: (cmd_auth.login, NOT_AUTHENTICATED),
    c.Authenticate: (cmd_auth.authenticate, NOT_AUTHENTICATED),
    c.Enable: (cmd_auth.enable, AUTH),
    c.Namespace: (cmd_auth.namespace, AUTH),
    c.Select: (cmd_mailbox.select, AUTH),
    c.Create: (cmd_mailbox.create, AUTH),
    c.Delete: (cmd_mailbox.delete, AUTH),
    c.Rename: (cmd_mailbox.rename, AUTH),
    c.Subscribe: (cmd_mailbox.subscribe, AUTH),
    c.Unsubscribe: (cmd_mailbox.unsubscribe, AUTH),
    c.List: (cmd_mailbox.list_, AUTH),
    c.Lsub: (cmd_mailbox.lsub, AUTH),
    c.Status: (cmd_mailbox.status, AUTH),
    c.Append: (cmd_mailbox.append, AUTH),
    c.Idle: (cmd_auth.idle, AUTH),
    c.GetQuota: (cmd_mailbox.getquota, AUTH),
    c.GetQuotaRoot: (cmd_mailbox.getquotaroot, AUTH),
    c.SetQuota: (cmd_mailbox.setquota, AUTH),
    c.Compress: (cmd_auth.compress, AUTH),
    c.Check: (cmd_message.check, SELECTED),
    c.Close: (cmd_message.close, SELECTED),
    c.Unselect: (cmd_message.unselect, SELECTED),
    c.Expunge: (cmd_message.expunge, SELECTED),
    c.Store: (cmd_message.store, SELECTED),
    c.Copy: (cmd_message.copy, SELECTED),
    c.Move: (cmd_message.move, SELECTED),
    c.Fetch: (cmd_message.fetch, SELECTED),
    c.Search: (cmd_search.search, SELECTED),
    c.Sort: (cmd_search.sort, SELECTED),
    c.Thread: (cmd_search.thread, SELECTED),
}

__all__ = ["ImapSession", "COMMANDS", "No", "Bad", "NOT_AUTHENTICATED", "AUTHENTICATED", "SELECTED", "LOGOUT",
           "ANY", "AUTH", "REPLIED", "flag_names"]
