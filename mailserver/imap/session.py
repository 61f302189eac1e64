"""The IMAP session: state machine, the command table and error mapping (RFC 3501, RFC 9051 and the extensions
of ``CAPABILITIES``). The handlers live by command family in :mod:`.cmd_auth` (connection, authentication, ENABLE,
IDLE, COMPRESS), :mod:`.cmd_mailbox` (SELECT, mailbox management, LIST, STATUS, APPEND, QUOTA),
:mod:`.cmd_message` (STORE, COPY, MOVE, EXPUNGE, FETCH) and :mod:`.cmd_search` (SEARCH, SORT, THREAD); what they
share (states, :class:`No` / :class:`Bad`, :class:`~.cmd_common.Ok`) is in :mod:`.cmd_common`.

``ImapSession(services, conn, *, client_ip, tls_active, tls_available, recent)``

- ``services`` is the server's :class:`mailserver.services.Services` (``astore``, ``auth``, ``hub``, ``config``,
  ``store``, ``pools``, ``reactor``, ``pipeline``, the per-process ``state``); ``conn`` is what the Twisted protocol offers the session (:class:`Connection`):
  ``write(bytes)``, ``start_tls()``, ``start_compress()``, ``close()``, ``set_reading(bool)`` (pause/resume the
  transport), ``writable() -> Deferred | None`` (None when the transport can take more output now) and
  ``activity(idle: bool)`` (re-arm the autologout timer).
- ``greeting()``, ``data_received(bytes)``, ``connection_lost()``, ``server_shutdown()``.

Contract:

- Commands run strictly in the order received: while one waits on the database (or a streamed APPEND literal is
  being checked), no further event is taken from the :class:`~mailserver.imap.wire.ImapReader`, and the transport
  is paused (``set_reading(False)``) so pipelined input stays in the kernel.
- One command table, :data:`COMMANDS` (command class -> :class:`Spec`: handler, allowed states, and the RFC 4314
  rights the command needs); the state check and the check of the rights on the selected mailbox are in
  :meth:`ImapSession._execute` only (in another account's selected mailbox the rights are read again there for each
  command that uses them, so an ACL change holds from the next command). A mailbox the command names is opened with :meth:`ImapSession.open_mailbox`,
  which goes through :class:`mailserver.access.MailboxAccess` with the rights the table names: a missing mailbox and
  one the principal may not use get the same answer. Handlers raise :class:`No` / :class:`Bad` (with an optional
  response code); store errors and anything unexpected are mapped to tagged replies in :func:`_reply_for` only.
- Unsolicited updates (EXISTS, FETCH FLAGS, EXPUNGE/VANISHED) from other sessions, SMTP, POP3 and the webmail come
  through the :class:`storage.changes.ChangeHub`, subscribed for the selected mailbox only (whoever's it is); they
  are told before each tagged reply, and at once in IDLE (RFC 9051 7.4.1: no EXPUNGE while answering FETCH, STORE,
  SEARCH).
- Handlers see the session through its public members only (``tests/imap/test_handler_context.py`` checks that no
  ``cmd_*`` module touches a ``_private`` one): state (``state``, ``principal``, ``selected``, ``selected_rights``,
  ``enabled``, ``condstore``, ``contexts``, ``limits``, ``services``, ``conn``), output (``send``, ``drain``,
  ``flush_updates``, ``capability_code``), input (``next_line``), authorization (``open_mailbox``,
  ``create_target``), changes (``watch``/``unwatch``, ``collect_changes``/``collected_changes`` around a SELECT's
  load, ``flush_in_idle``), IDLE (``enter_idle``/``leave_idle``/``idling``), the streamed APPEND (``take_append``,
  ``abort_append``), and ``sign_in`` / ``close``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import Logger

from mailserver import sasl
from mailserver.access import Forbidden, MailboxAccess, MailboxNotFound, Principal, Rights, flag_rights
from mailserver.connections import COMMANDS_PER_TURN
from storage import changes as ch
from storage.store import (
    AlreadyExists,
    HasChildren,
    Invalid,
    NotFound,
    QuotaExceeded,
    StoreError,
)

from . import cmd_acl, cmd_auth, cmd_mailbox, cmd_message, cmd_search
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
from .context import SearchContexts
from .parser import parse_append_prefix, parse_command
from .reader_recent import ReaderRecent
from .resync import catch_up
from .selected import RecentTracker, SelectedMailbox, UpdateOptions, flag_names, split_flags
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

#: Commands one session may run in one reactor turn before it lets the other clients' turns come (those that
#: finish at once: NOOP, CAPABILITY, a cached FETCH); the rest wait for the next turn.
MAX_COMMANDS_PER_TURN = COMMANDS_PER_TURN

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
    def call_soon(self, f) -> None: ...


@dataclass
class AppendState:
    tag: str
    mailbox: object  # MailboxInfo
    writers: list
    total: int = 0

    def abort(self) -> None:
        """Drop the blobs streamed so far."""
        for w in self.writers:
            try:
                w.abort()
            except Exception:
                log.failure("aborting a blob writer failed")


@dataclass(frozen=True)
class Spec:
    """One row of the command table."""

    handler: Callable
    #: The states the command is allowed in.
    states: int
    #: Rights on the mailbox the command names (``command.mailbox``; for LIST and LSUB: on each mailbox listed).
    mailbox: Rights = Rights.NONE
    #: The response code when that mailbox is missing or not permitted (one answer for both).
    missing: str = "NONEXISTENT"
    #: Rights on the parent a new name goes under (CREATE; RENAME's new name).
    parent: Rights = Rights.NONE
    #: Rights on the selected mailbox, or a function of the command giving them (STORE: by the flags it changes).
    selected: Rights | Callable[[c.Command], Rights] = Rights.NONE


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
    def __init__(self, services, conn: Connection, *, client_ip: str = "", tls_active: bool = False,
                 tls_available: bool = False, recent: RecentTracker | None = None,
                 limits: ParserLimits | None = None):
        from .wire import ImapReader

        self.services = services
        self.conn = conn
        self.client_ip = client_ip
        self.tls_active = tls_active
        self.tls_available = tls_available
        self.recent = recent or RecentTracker()
        self._reader_recent: ReaderRecent | None = None
        cfg_limits = services.config.limits
        self.limits = limits or ParserLimits.from_config(cfg_limits)
        self.max_errors = cfg_limits.imap_max_commands_without_progress
        self.append_limit = self.limits.max_literal
        self.reader = ImapReader(self.limits)
        self.state = NOT_AUTHENTICATED
        self.principal: Principal | None = None
        self.access = MailboxAccess(services.astore)
        self.spec: Spec | None = None  # the table row of the command running
        self.selected: SelectedMailbox | None = None
        self.selected_rights = Rights.NONE  # the principal's rights on the selected mailbox (see _execute)
        #: The selected mailbox is another account's (an ACL gives the rights): they are read again per command.
        self.selected_foreign = False
        self.contexts = SearchContexts()  # RFC 5267 UPDATE contexts of the selected mailbox
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
        self._turn_pending = False  # the pump yielded the reactor and goes on in a later turn
        self._output_wait: Deferred | None = None  # the pump waits for unsent replies to drain
        self._append: AppendState | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._collect: tuple[int, list] | None = None
        self._idle_tag: str | None = None
        #: Untagged output held back to go out with the next write (``hold``).
        self._held = b""
        self.commands_run = 0
        #: Command counts and durations (``mailserver.metrics``), or None; the clock they are timed with.
        self._metrics = getattr(services, "metrics", None)
        self._seconds = services.reactor.seconds if self._metrics is not None else None

    # -- derived state ----------------------------------------------------------------------------------------
    @property
    def account_id(self) -> int | None:
        """The signed-in account: the owner of the session's own state (subscriptions, its quota root), never
        the authorization for a mailbox (that is :meth:`open_mailbox`)."""
        return self.principal.account_id if self.principal is not None else None

    @property
    def username(self) -> str:
        return self.principal.address if self.principal is not None else ""

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
        return self.services.auth.plaintext_allowed(self.client_ip, self.tls_active)

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
                 "STATUS=SIZE", "QUOTA", "QUOTA=RES-STORAGE", "SORT", "ESORT", "SORT=DISPLAY", "CONTEXT=SEARCH",
                 "CONTEXT=SORT", "THREAD=REFERENCES", "THREAD=ORDEREDSUBJECT", "ACL", "RIGHTS=texk"]
        if not self.compressing:
            caps.append("COMPRESS=DEFLATE")
        return caps

    def capability_code(self) -> str:
        return "CAPABILITY " + " ".join(self.capabilities())

    # -- I/O entry points -------------------------------------------------------------------------------------
    def greeting(self) -> None:
        self.send(r.status_line("OK", f"{self.services.config.hostname} IMAP ready", self.capability_code()))

    def send(self, data: bytes) -> None:
        if not self.closed:
            if self._held:
                data = self._held + data
                self._held = b""
            self.conn.write(data)

    def hold(self, data: bytes) -> None:
        """Send ``data`` together with the next output, not on its own: the bytes and their order are the same,
        but a reply that waits for the store (SELECT's ``[CLOSED]`` before the new mailbox is read) leaves in one
        write, not in a first one the reactor would send while the store is still working."""
        if not self.closed:
            self._held += data

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
        self.abort_append()
        waiter, self._line_waiter = self._line_waiter, None
        if waiter is not None:
            waiter.errback(ConnectionError("connection lost"))

    def server_shutdown(self) -> None:
        if not self.closed and self._running is None:
            self.send(r.status_line("BYE", "server shutting down", "UNAVAILABLE"))
            self.close()

    def close(self) -> None:
        if not self.closed:
            if self._held:
                self.send(b"")
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
        handled = 0
        try:
            while not self.closed:
                self._repump = False
                if self._literal_busy or (self._running is not None and self._line_waiter is None):
                    break
                if self._output_wait is not None or self._output_blocked():
                    break
                if handled >= MAX_COMMANDS_PER_TURN:
                    # Pipelined commands that finish at once (2,000,000 NOOPs inflated from 23 KB of COMPRESS
                    # input) would keep the reactor from every other client: go on in a later turn, and read
                    # nothing more meanwhile.
                    if not self._turn_pending:
                        self._turn_pending = True
                        self.conn.call_soon(self._next_turn)
                    break
                event = self.reader.next_event()
                if event is None:
                    break
                self._handle(event)
                handled += 1
        finally:
            self._pumping = False
        if not self.closed:
            waiting = self._literal_busy or (self._running is not None and self._line_waiter is None)
            self.conn.set_reading(not (waiting or self._turn_pending))

    def _next_turn(self) -> None:
        self._turn_pending = False
        if not self.closed:
            self._pump()

    def _output_blocked(self) -> bool:
        """The replies written so far have not drained (a client that does not read): take no further command
        until they have; the pump goes on when the transport has room again."""
        d = self.conn.writable()
        if d is None:
            return False
        self._output_wait = d
        d.addBoth(self._output_drained)
        return True

    def _output_drained(self, _result) -> None:
        self._output_wait = None
        if not self.closed:
            self._pump()

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
        self.abort_append()
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
            self.close()

    def _start(self, frame) -> None:
        try:
            command = parse_command(frame, limits=self.limits, utf8=self.utf8)
        except ParseError as e:
            self.abort_append()
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
        self.services.reactor.callLater(0, self._pump)
        return d

    # -- dispatch ---------------------------------------------------------------------------------------------
    async def _execute(self, command: c.Command) -> None:
        tag = command.tag
        name = command.name or getattr(command, "command", "?")
        metrics = self._metrics
        started = self._seconds() if metrics is not None else 0.0
        self.conn.activity()
        try:
            try:
                entry = COMMANDS.get(type(command))
                if entry is None:
                    raise Bad(f"unknown command {name}")
                if not self.state & entry.states:
                    raise Bad(f"{name} not allowed in this state")
                need = entry.selected(command) if callable(entry.selected) else entry.selected
                if self.state & SELECTED and self.selected_foreign and (need or entry.states == SELECTED):
                    # Another account's mailbox: its ACL may have changed since SELECT, here or on another node (or
                    # by the CLI), so the rights are read again (one query) for each command that uses them.
                    letters = await self.services.astore.mailbox_rights(self.selected.mailbox_id, self.account_id)
                    self.selected_rights = Rights.parse(letters)
                if need and self.state & SELECTED and need not in self.selected_rights:
                    # RFC 4314 4 / RFC 5530: the mailbox is known to the client (it selected it), so this may say why.
                    raise No(f"{name} not permitted in this mailbox", "NOPERM")
                self.spec = entry
                result = await entry.handler(self, command)
                if result is REPLIED:
                    self.errors = 0
                    return
                if self.selected is not None:
                    self.heard_all()
                    if self.selected.pending:
                        await self._prepare_flush()
                self.flush_updates(command)
                if self.contexts:
                    await cmd_search.update_contexts(self)  # RFC 5267 4.3: ADDTO/REMOVEFROM before the tagged reply
                if self.closed:
                    return
                ok = result if isinstance(result, Ok) else Ok()
                code = ok.code
                if code is None and self.selected is not None and self.selected.expunge_issued():
                    code = "EXPUNGEISSUED"  # RFC 9051 7.1: the answer may lack messages expunged meanwhile
                self.send(r.tagged(tag, "OK", ok.text or f"{_display_name(command)} completed", code))
                self.errors = 0
            except Exception as e:  # every failure of the command becomes a tagged reply (not a KeyboardInterrupt)
                if self.closed:
                    return
                if not isinstance(e, (No, ParseError, StoreError, sasl.SaslError)):
                    log.failure("IMAP {name} failed", name=name)
                try:
                    self.heard_all()
                    await self._prepare_flush()
                    self.flush_updates(command)
                except Exception:
                    log.failure("flushing updates failed")
                if not self.closed:
                    self.send(_reply_for(tag, e, name))
                if isinstance(e, Bad):
                    self._error()
        finally:
            if metrics is not None:  # the command's duration, to its tagged reply
                metrics.command("imap", str(command.name or getattr(command, "command", "") or "OTHER"),
                                self._seconds() - started)

    def flush_updates(self, command: c.Command | None = None) -> None:
        sel = self.selected
        if sel is None or self.closed:
            return
        if sel.deleted:
            self.send(r.status_line("BYE", "the selected mailbox was deleted"))
            self.close()
            return
        contexts = self.contexts
        if self._idle_tag is None and sel.up_to_date() and not contexts and contexts.sel is sel:
            return  # no change arrived since the last reply: nothing to tell, nothing to apply
        allow = not (isinstance(command, _NO_EXPUNGE) and not getattr(command, "uid", False))
        tracker = self.recent_for(sel) if (not sel.readonly and not self.rev2) else None
        live = bool(contexts.contexts)  # SearchContexts.__bool__, without the call (this runs per IDLE session)
        if live or contexts.sel is not sel:
            before = contexts.before_flush(sel)
            lines = sel.flush(allow_expunge=allow, options=self.options(), recent=tracker)
            lines = contexts.after_flush(sel, before, lines)  # RFC 5267 4.3.4: REMOVEFROM before EXPUNGE
        else:  # no UPDATE context of this mailbox (every IDLE session of the fan-out): after_flush's one step
            lines = sel.flush(allow_expunge=allow, options=self.options(), recent=tracker)
            contexts.dirty.clear()
        if lines:
            self.send(b"".join(lines))
        if self._idle_tag is not None and live:
            cmd_search.schedule_context_update(self)

    def heard_all(self) -> None:
        """With worker processes: when another worker committed a change in the selected mailbox since this session
        last looked (its commit board, mailserver.commitboard), queue a catch-up from the database, so the updates
        this command ends with include it even if its event is still on the way.  Plain reads when nothing did."""
        sel = self.selected
        if sel is None:
            return
        hub = self.services.hub
        board = hub.board if hub is not None else None
        if board is None:
            return
        state = board.state(sel.mailbox_id)
        count = -1 if state is None else state[0]
        if count < 0 or count != sel.board_seen:
            sel.board_seen = count
            if not sel.board_catch_up:
                sel.board_catch_up = True
                sel.pending.append(ch.Change(ch.RESYNC, 0, mailbox_id=sel.mailbox_id))

    def board_mark(self, mailbox) -> int:
        """The commit board's count a session selecting ``mailbox`` (a MailboxInfo just read) starts from: -1 (catch
        up at the end of the SELECT) when another worker's latest commit there may be newer than what was read."""
        hub = self.services.hub
        board = hub.board if hub is not None else None
        if board is None:
            return 0
        state = board.state(mailbox.id)
        if state is None or state[1] > mailbox.highest_modseq:
            return -1
        return state[0]

    async def _prepare_flush(self) -> None:
        """Before queued updates are told: catch up after lost events (a RESYNC is queued), and when this session
        takes \\Recent, reserve the new UIDs with the cluster state (another process's session may want them too).
        In one process, without a RESYNC, this returns without waiting."""
        sel = self.selected
        if sel is None or not sel.pending:
            return  # nothing queued: no RESYNC to act on, no new UIDs to reserve
        if any(e.kind == ch.RESYNC for e in sel.pending):
            sel.pending = [e for e in sel.pending if e.kind != ch.RESYNC]
            board, sel.board_catch_up = sel.board_catch_up, False
            try:
                # The board's catch-up reads from what was known complete: this session's own commits may have
                # raised its highest_modseq past a change of another worker it has not heard of.
                newest = await catch_up(self, sel.complete_modseq if board else None)
                if board and newest > sel.complete_modseq:
                    sel.complete_modseq = newest
            except Exception:
                log.failure("catching up after lost change events failed")
                if board:
                    sel.board_seen = -1  # the next command tries again
            if self.selected is not sel:
                return
        if sel.readonly or self.rev2:
            return
        up_to = max((e.uid for e in sel.pending if e.kind == ch.EXISTS), default=0)
        if up_to:
            try:
                await self.recent_for(sel).reserve(sel.mailbox_id, sel.uid_validity, up_to)
            except Exception:
                log.failure("reserving \\Recent messages failed")  # they are then not \Recent here

    def flush_in_idle(self) -> None:
        """RFC 9051 6.3.13: in IDLE, updates are sent as they happen (once \\Recent is settled).

        This runs for every IDLE session of a mailbox on each of its changes, so the common path is plain calls:
        the sessions waiting for new UIDs' \\Recent reservation share one per mailbox and process
        (``RecentClaims.after_reserve``); the first of them to flush claims the messages (RFC 3501 2.3.2), the
        others tell EXISTS without them. Only a RESYNC (lost events: read the database) takes the coroutine path."""
        sel = self.selected
        if sel is None:
            return
        up_to = 0  # the highest new UID, in one pass over the queue (this runs once per session and change)
        for e in sel.pending:
            kind = e.kind
            if kind == ch.RESYNC:
                d = ensureDeferred(self._prepare_flush())
                d.addCallback(lambda _: self._flush_if_idle())
                d.addErrback(lambda f: log.failure("flushing updates in IDLE failed", f))
                return
            if kind == ch.EXISTS and e.uid > up_to:
                up_to = e.uid
        if up_to and (sel.readonly or self.rev2):
            up_to = 0  # no \Recent taken here
        if up_to:
            self.recent_for(sel).after_reserve(sel.mailbox_id, sel.uid_validity, up_to, self._flush_if_idle)
        else:
            self._flush_if_idle()

    def _flush_if_idle(self) -> None:
        if self._idle_tag is not None and not self.closed:
            try:
                self.flush_updates()
            except Exception:
                log.failure("flushing updates in IDLE failed")

    # -- change notifications ---------------------------------------------------------------------------------
    def _on_changes(self, changes: list) -> None:
        sel = self.selected
        collect = self._collect
        for change in changes:
            if change.kind == ch.RESYNC:
                # Events may have been lost: the next flush catches up from the database (mailserver.imap.resync).
                if sel is not None and change.mailbox_id in (0, sel.mailbox_id):
                    sel.pending.append(change)
                if collect is not None and change.mailbox_id in (0, collect[0]):
                    collect[1].append(change)
            elif sel is not None and change.mailbox_id == sel.mailbox_id:
                sel.on_change(change)
                self.contexts.on_change(change)
            elif collect is not None and change.mailbox_id == collect[0]:
                collect[1].append(change)
        if self._idle_tag is not None and sel is not None and sel.has_updates():
            self.flush_in_idle()

    def watch(self, mailbox_id: int) -> None:
        """Receive the change events of mailbox ``mailbox_id`` (the one being selected), instead of any before."""
        self.unwatch()
        self._unsubscribe = self.services.hub.subscribe_mailbox(mailbox_id, self._on_changes)

    def unwatch(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    # -- IDLE, and events collected during SELECT --------------------------------------------------------------
    @property
    def idling(self) -> bool:
        """An IDLE command is running: updates are sent as they happen."""
        return self._idle_tag is not None

    def enter_idle(self, tag: str) -> None:
        self._idle_tag = tag

    def leave_idle(self) -> None:
        self._idle_tag = None

    def collect_changes(self, mailbox_id: int) -> None:
        """Keep the events of ``mailbox_id`` published from now on (while a SELECT loads its messages)."""
        self._collect = (mailbox_id, [])

    def collected_changes(self) -> list:
        """Stop collecting; the events kept since :meth:`collect_changes`."""
        collect, self._collect = self._collect, None
        return collect[1] if collect is not None else []

    def recent_for(self, mailbox):
        """Who takes \\Recent in ``mailbox`` (a MailboxInfo or the SelectedMailbox): every session of the
        cluster, or, where \\Seen is per reader, this reader's sessions (:mod:`.reader_recent`)."""
        per_reader = mailbox.seen_per_reader if hasattr(mailbox, "seen_per_reader") else bool(mailbox.reader)
        if per_reader:
            if self._reader_recent is None:
                self._reader_recent = ReaderRecent(self.services.astore, self.account_id)
            return self._reader_recent
        return self.recent

    def sign_in(self, account_id: int, username: str) -> None:
        self.state = AUTHENTICATED
        self.principal = Principal(account_id, username)

    # -- authorization ----------------------------------------------------------------------------------------
    async def open_mailbox(self, name: str, spec: Spec | None = None, *, with_quota: bool = False):
        """The principal's mailbox ``name`` with the rights the command table names for the running command (or
        ``spec``): the one way a handler reaches a mailbox. A missing mailbox and a forbidden one both answer
        ``NO [<spec.missing>] no mailbox <name>``. ``with_quota``: (mailbox, the owner's (used, limit)), read in
        the same store call."""
        spec = spec or self.spec
        try:
            if with_quota:
                return await self.access.open_mailbox_quota(self.principal, name, spec.mailbox)
            return await self.access.open_mailbox(self.principal, name, spec.mailbox)
        except Forbidden as e:
            raise No(str(e), "NOPERM") from None  # RFC 4314 6: it has "l", so it may know why
        except MailboxNotFound as e:
            raise No(str(e), spec.missing) from None

    async def create_target(self, name: str) -> tuple[int, str]:
        """(account, its own name for ``name``) a new mailbox goes to, with the table's ``parent`` rights checked
        (RFC 4314 4: ``k``)."""
        try:
            return await self.access.create_target_name(self.principal, name, self.spec.parent)
        except MailboxNotFound:
            raise No(f"no permission to create {name}", "NOPERM") from None

    # -- APPEND streaming -------------------------------------------------------------------------------------
    def take_append(self) -> "AppendState | None":
        """The APPEND whose messages have streamed (the command now runs), and no longer the session's."""
        state, self._append = self._append, None
        return state

    def abort_append(self) -> None:
        state, self._append = self._append, None
        if state is not None:
            state.abort()

    async def _check_append_literal(self, event: LiteralAnnounced) -> None:
        """Before an APPEND message streams: mailbox, APPENDLIMIT and quota (RFC 9051 6.3.12, RFC 7889)."""
        tag = event.tag.decode("ascii", "replace") if event.tag else "*"
        try:
            if not self.state & AUTH:
                raise Bad("APPEND not allowed in this state")
            prefix = parse_append_prefix(event.prefix, limits=self.limits, utf8=self.utf8)
            quota = None
            if prefix.index == 0 or self._append is None:
                self.abort_append()
                # RFC 9051 6.3.12: a missing target is NO [TRYCREATE]; RFC 4314 4: APPEND needs "i".  The owner's
                # quota comes in the same store call.
                mailbox, quota = await self.open_mailbox(prefix.mailbox, COMMANDS[c.Append], with_quota=True)
                self._append = AppendState(tag, mailbox, [])
            state = self._append
            if event.size > self.append_limit:
                raise No(f"message larger than APPENDLIMIT {self.append_limit}", "TOOBIG")
            if quota is None:  # a later message of a MULTIAPPEND: the owner's quota now
                quota = await self.services.astore.quota(state.mailbox.account_id)
            used, limit = quota
            if limit and used + state.total + event.size > limit:
                raise No("quota exceeded", "OVERQUOTA")  # RFC 9208 4.3
            if self.closed:
                return
            state.total += event.size
            state.writers.append(self.services.store.blobs.writer())
            self.reader.accept_literal()
            if event.synchronizing:
                self.send(r.continuation("Ready"))
        except Exception as e:
            self.abort_append()
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


_R, _L, _I, _K, _X = Rights.READ, Rights.LOOKUP, Rights.INSERT, Rights.CREATE, Rights.DELETE_MAILBOX
_T, _E = Rights.DELETE_MESSAGES, Rights.EXPUNGE


def _store_rights(cmd: c.Store) -> Rights:
    """RFC 4314 4: STORE needs "s" for \\Seen, "t" for \\Deleted, "w" for other flags and keywords; replacing the
    flags may clear any of them."""
    if cmd.mode is c.StoreMode.REPLACE:
        return Rights.SEEN | Rights.WRITE | _T
    try:
        bits, keywords, _recent = split_flags(cmd.flags)
    except ValueError:
        return Rights.NONE  # the handler answers BAD
    return flag_rights(bits, bool(keywords))


#: The command table: command class -> handler, the states it is allowed in and the rights it needs (RFC 4314 4).
COMMANDS: dict[type, Spec] = {
    c.Capability: Spec(cmd_auth.capability, ANY),
    c.Noop: Spec(cmd_auth.noop, ANY),
    c.Logout: Spec(cmd_auth.logout, ANY),
    c.Id: Spec(cmd_auth.id_, ANY),
    c.Unknown: Spec(_unknown, ANY),
    c.StartTLS: Spec(cmd_auth.starttls, NOT_AUTHENTICATED),
    c.Login: Spec(cmd_auth.login, NOT_AUTHENTICATED),
    c.Authenticate: Spec(cmd_auth.authenticate, NOT_AUTHENTICATED),
    c.Enable: Spec(cmd_auth.enable, AUTH),
    c.Namespace: Spec(cmd_auth.namespace, AUTH),
    c.Select: Spec(cmd_mailbox.select, AUTH, mailbox=_R),  # SELECT and EXAMINE
    c.Create: Spec(cmd_mailbox.create, AUTH, parent=_K),
    c.Delete: Spec(cmd_mailbox.delete, AUTH, mailbox=_X),
    c.Rename: Spec(cmd_mailbox.rename, AUTH, mailbox=_X, parent=_K),
    # RFC 4314 4 / RFC 9051 6.3.7: a name is subscribed whether or not a mailbox has it: no right is checked.
    c.Subscribe: Spec(cmd_mailbox.subscribe, AUTH),
    c.Unsubscribe: Spec(cmd_mailbox.unsubscribe, AUTH),
    c.List: Spec(cmd_mailbox.list_, AUTH, mailbox=_L),
    c.Lsub: Spec(cmd_mailbox.lsub, AUTH, mailbox=_L),
    c.Status: Spec(cmd_mailbox.status, AUTH, mailbox=_R),
    # RFC 9051 6.3.12: a missing target is NO [TRYCREATE]; checked before the literal is taken.
    c.Append: Spec(cmd_mailbox.append, AUTH, mailbox=_I, missing="TRYCREATE"),
    c.Idle: Spec(cmd_auth.idle, AUTH),
    c.GetQuota: Spec(cmd_mailbox.getquota, AUTH),
    c.GetQuotaRoot: Spec(cmd_mailbox.getquotaroot, AUTH, mailbox=_R),
    c.SetQuota: Spec(cmd_mailbox.setquota, AUTH),
    c.Compress: Spec(cmd_auth.compress, AUTH),
    c.Check: Spec(cmd_message.check, SELECTED),
    c.Close: Spec(cmd_message.close, SELECTED),  # expunges only with "e" (RFC 4314 4)
    c.Unselect: Spec(cmd_message.unselect, SELECTED),
    c.Expunge: Spec(cmd_message.expunge, SELECTED, selected=_E),
    c.Store: Spec(cmd_message.store, SELECTED, selected=_store_rights),
    # RFC 9051 6.4.7: a missing target is NO [TRYCREATE].
    c.Copy: Spec(cmd_message.copy, SELECTED, mailbox=_I, missing="TRYCREATE", selected=_R),
    # RFC 6851 3.3: MOVE is COPY, then STORE \Deleted and EXPUNGE of the source: RFC 4314 4 gives "t" and "e".
    c.Move: Spec(cmd_message.move, SELECTED, mailbox=_I, missing="TRYCREATE", selected=_R | _T | _E),
    c.Fetch: Spec(cmd_message.fetch, SELECTED, selected=_R),  # sets \Seen only with "s"
    c.Search: Spec(cmd_search.search, SELECTED, selected=_R),
    c.Sort: Spec(cmd_search.sort, SELECTED, selected=_R),
    c.Thread: Spec(cmd_search.thread, SELECTED, selected=_R),
    c.CancelUpdate: Spec(cmd_search.cancel_update, SELECTED),
    # RFC 4314 4: the ACL commands need "a" (MYRIGHTS: any right; "l" is what makes the mailbox be there).
    c.SetAcl: Spec(cmd_acl.setacl, AUTH, mailbox=Rights.ADMIN),
    c.DeleteAcl: Spec(cmd_acl.deleteacl, AUTH, mailbox=Rights.ADMIN),
    c.GetAcl: Spec(cmd_acl.getacl, AUTH, mailbox=Rights.ADMIN),
    c.ListRights: Spec(cmd_acl.listrights, AUTH, mailbox=Rights.ADMIN),
    c.MyRights: Spec(cmd_acl.myrights, AUTH, mailbox=_L),  # without "l" it is missing; any right then
}

__all__ = ["ImapSession", "COMMANDS", "Spec", "No", "Bad", "NOT_AUTHENTICATED", "AUTHENTICATED", "SELECTED", "LOGOUT",
           "ANY", "AUTH", "REPLIED", "flag_names"]
