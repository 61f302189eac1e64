"""The IMAP session: state machine, command table and handlers (RFC 3501, RFC 9051 and the extensions of
``CAPABILITIES``).

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

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable, Protocol

from twisted.internet import defer
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import Logger

from mailserver import sasl
from mailserver.threads import run_in
from storage.models import FLAG_DELETED, FLAG_SEEN
from storage.store import (
    AlreadyExists,
    HasChildren,
    Invalid,
    MessageMeta,
    NotFound,
    QuotaExceeded,
    StoreError,
)

from . import commands as c
from . import response as r
from .mailboxes import list_entries, lsub_entries
from .parser import is_idle_done, parse_append_prefix, parse_command
from .selected import RecentTracker, SelectedMailbox, UpdateOptions, flag_names, split_flags
from .seqset import SeqSet
from .snapshot import Snapshot, SnapshotCache
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

# -- states -------------------------------------------------------------------------------------------------
NOT_AUTHENTICATED = 1
AUTHENTICATED = 2
SELECTED = 4
LOGOUT = 8
ANY = NOT_AUTHENTICATED | AUTHENTICATED | SELECTED
AUTH = AUTHENTICATED | SELECTED

SERVER_NAME = "mailserver"
SERVER_VERSION = "1.0"
#: Special-use attributes CREATE accepts (RFC 6154 2; \All and \Flagged are virtual mailboxes we do not offer).
CREATE_SPECIAL_USE = frozenset({"\\Archive", "\\Drafts", "\\Junk", "\\Sent", "\\Trash"})
ENABLE_KNOWN = ("CONDSTORE", "QRESYNC", "UTF8=ACCEPT", "IMAP4REV2")

# Commands whose responses must not be interleaved with EXPUNGE (RFC 9051 7.4.1; UID variants may).
_NO_EXPUNGE = (c.Fetch, c.Store, c.Search, c.Sort, c.Thread)


class No(Exception):
    """Answer the command ``NO [code] text``."""

    status = "NO"

    def __init__(self, text: str, code: str | None = None):
        super().__init__(text)
        self.text = text
        self.code = code


class Bad(No):
    """Answer the command ``BAD [code] text``."""

    status = "BAD"


class Connection(Protocol):
    def write(self, data: bytes) -> None: ...
    def start_tls(self) -> None: ...
    def start_compress(self) -> None: ...
    def close(self) -> None: ...
    def set_reading(self, on: bool) -> None: ...
    def writable(self) -> Deferred | None: ...
    def activity(self, idle: bool = False) -> None: ...


@dataclass
class _Ok:
    """What a handler returns for the tagged OK (None means plain ``OK <NAME> completed``)."""

    text: str = ""
    code: str | None = None


#: A handler that wrote its tagged reply itself (STARTTLS, COMPRESS, LOGOUT) returns this.
REPLIED = object()


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
            ok = result if isinstance(result, _Ok) else _Ok()
            self.send(r.tagged(tag, "OK", ok.text or f"{_display_name(command)} completed", ok.code))
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


# ---------------------------------------------------------------------------------------------- any state

async def _capability(s: ImapSession, cmd: c.Capability):
    s.send(r.untagged("CAPABILITY " + " ".join(s.capabilities())))


async def _noop(s: ImapSession, cmd):
    return None


async def _logout(s: ImapSession, cmd: c.Logout):
    s._flush_updates(cmd)
    s.send(r.status_line("BYE", "logging out"))
    s.send(r.tagged(cmd.tag, "OK", "LOGOUT completed"))
    s._close()
    return REPLIED


async def _id(s: ImapSession, cmd: c.Id):
    # RFC 2971 3.1: the server answers with its own identification.
    s.send(r.untagged(b'ID ("name" "' + SERVER_NAME.encode() + b'" "version" "' + SERVER_VERSION.encode() + b'")'))


# ---------------------------------------------------------------------------------------------- not authenticated

async def _starttls(s: ImapSession, cmd: c.StartTLS):
    if s.tls_active or not s.tls_available:
        raise Bad("TLS is not available here" if not s.tls_active else "TLS is already active")
    s.send(r.tagged(cmd.tag, "OK", "begin TLS negotiation now"))
    # RFC 9051 6.2.1 / RFC 3207 class: plaintext pipelined after STARTTLS is discarded, never executed in TLS.
    dropped = s.reader.discard_buffer()
    if dropped:
        log.info("imap STARTTLS from {ip}: discarded {n} octets sent before TLS", ip=s.client_ip, n=dropped)
    s.conn.start_tls()
    s.tls_active = True
    return REPLIED


async def _authenticated(s: ImapSession, username: str, password: str) -> _Ok:
    result = await s.server.auth.authenticate(username, password, s.client_ip)
    if not result.ok:
        log.info("imap login failed for {user} from {ip} ({reason})", user=username[:100], ip=s.client_ip,
                 reason=result.reason)
        if result.reason == "throttled":
            raise No("too many failed attempts, try later", "UNAVAILABLE")
        raise No("authentication failed", "AUTHENTICATIONFAILED")
    s._login(result.account_id, result.address or username)
    # RFC 9051 6.2.2: the tagged OK may carry the new capabilities.
    return _Ok("logged in", s._capability_code())


async def _login(s: ImapSession, cmd: c.Login):
    if not s.plaintext_allowed:
        raise No("LOGIN needs TLS (use STARTTLS)", "PRIVACYREQUIRED")  # RFC 9051 6.2.3 LOGINDISABLED
    return await _authenticated(s, cmd.username, cmd.password)


async def _authenticate(s: ImapSession, cmd: c.Authenticate):
    if cmd.mechanism not in sasl.MECHANISMS:
        raise No(f"mechanism {cmd.mechanism} not supported", "CANNOT")
    if not s.plaintext_allowed:
        raise No("authentication needs TLS (use STARTTLS)", "PRIVACYREQUIRED")
    initial = cmd.initial_response.encode("ascii") if cmd.initial_response is not None else None
    exchange = sasl.start(cmd.mechanism, initial)
    while not exchange.done:
        s.send(r.continuation(exchange.challenge or b""))
        frame = await s.next_line()
        line = frame.line
        if line is None:
            raise Bad("literal in SASL response")
        exchange.respond(line.strip())
    return await _authenticated(s, exchange.username, exchange.password)


# ---------------------------------------------------------------------------------------------- authenticated

async def _enable(s: ImapSession, cmd: c.Enable):
    newly = []
    for cap in cmd.capabilities:
        if cap in ENABLE_KNOWN and cap not in s.enabled:
            s.enabled.add(cap)
            newly.append(cap)
            if cap == "QRESYNC":
                s.condstore = True  # RFC 7162 3.2.3: QRESYNC implies CONDSTORE
            elif cap == "CONDSTORE":
                s.condstore = True
    names = {"IMAP4REV2": "IMAP4rev2"}
    # RFC 5161 3.1: only the extensions newly enabled by this command are listed.
    s.send(r.untagged("ENABLED" + "".join(" " + names.get(x, x) for x in newly)))


async def _namespace(s: ImapSession, cmd):
    # RFC 2342 / RFC 9051 6.3.10: one personal namespace, no shared or other users' namespaces.
    s.send(r.untagged('NAMESPACE (("" "/")) NIL NIL'))


def _unselect(s: ImapSession, *, closed_code: bool) -> None:
    if s.selected is not None:
        s.selected = None
        if closed_code:
            # RFC 7162 3.2.11 / RFC 9051 7.1: the previous mailbox is closed.
            s.send(r.status_line("OK", "previous mailbox closed", "CLOSED"))
    s.state = AUTHENTICATED


async def _load_selected(s: ImapSession, mailbox, readonly: bool) -> SelectedMailbox:
    """The mailbox's messages for a new selection: from the process's snapshot plus what changed since, or listed.

    Refreshes of one mailbox's snapshot are serialised (a lock per mailbox), so two sessions selecting it at once
    never fold results of different ages into it.
    """
    extra = s.server.extra
    cache: SnapshotCache = extra.setdefault("imap_snapshots", SnapshotCache())
    locks: dict = extra.setdefault("imap_snapshot_locks", {})
    lock = locks.setdefault(mailbox.id, defer.DeferredLock())
    await lock.acquire()
    try:
        snap = cache.get(mailbox.id, mailbox.uid_validity)
        if snap is None:
            cache.misses += 1
            messages = await s.server.astore.list_messages(mailbox.id)
            snap = Snapshot.from_messages(mailbox.uid_validity, mailbox.highest_modseq, messages)
        else:
            cache.hits += 1
            if snap.modseq < mailbox.highest_modseq:
                changed, vanished = await s.server.astore.changes_since(mailbox.id, snap.modseq)
                snap.apply(changed, vanished, mailbox.highest_modseq)
        cache.put(mailbox.id, snap)
        return SelectedMailbox.from_snapshot(mailbox, snap, readonly=readonly)
    finally:
        lock.release()
        if not lock.locked and not lock.waiting:
            locks.pop(mailbox.id, None)


async def _select(s: ImapSession, cmd: c.Select):
    if cmd.qresync is not None and not s.qresync:
        raise Bad("QRESYNC parameter needs ENABLE QRESYNC")  # RFC 7162 3.2.5
    _unselect(s, closed_code=True)
    astore = s.server.astore
    mailbox = await astore.get_mailbox(s.account_id, cmd.mailbox)
    if mailbox is None:
        raise No(f"no mailbox {cmd.mailbox}", "NONEXISTENT")
    # Events for the mailbox published while its messages load are kept and applied (idempotently) afterwards.
    s._collect = (mailbox.id, [])
    try:
        sel = await _load_selected(s, mailbox, cmd.readonly)
    finally:
        collected = s._collect[1]
        s._collect = None
    if cmd.condstore:
        s.condstore = True  # RFC 7162 3.1.8
    if not s.rev2:
        if cmd.readonly:
            unclaimed = s.recent.unclaimed_count(mailbox.id, mailbox.uid_validity, sel.uids)
            sel.recent = set(sel.uids[len(sel.uids) - unclaimed:])
        else:
            sel.recent = set(s.recent.claim(mailbox.id, mailbox.uid_validity, sel.uids))
    out = [sel.flags_response(), r.untagged(b"%d EXISTS" % sel.exists)]
    if not s.rev2:
        out.append(r.untagged(b"%d RECENT" % len(sel.recent)))  # RFC 3501 7.3.2
        unseen = sel.first_unseen()
        if unseen is not None:
            out.append(r.status_line("OK", "first unseen", f"UNSEEN {unseen}"))  # RFC 3501 6.3.1
    out.append(r.status_line("OK", "UIDs valid", f"UIDVALIDITY {sel.uid_validity}"))
    out.append(r.status_line("OK", "predicted next UID", f"UIDNEXT {sel.uid_next}"))
    out.append(sel.permanent_flags_response())
    # RFC 7162 3.1.2.1: HIGHESTMODSEQ in every successful SELECT/EXAMINE.
    out.append(r.status_line("OK", "highest", f"HIGHESTMODSEQ {sel.highest_modseq}"))
    if s.rev2:
        # RFC 9051 6.3.2: the server sends the mailbox's LIST response.
        out.append(r.untagged(b'LIST () "/" ' + r.mailbox(sel.name, utf8=s.utf8)))
    s.send(b"".join(out))
    s.selected = sel
    s.state = SELECTED
    sel.pending = collected
    q = cmd.qresync
    if q is not None and q.uid_validity == sel.uid_validity:
        await _qresync(s, sel, q)
    return _Ok(f"{'EXAMINE' if cmd.readonly else 'SELECT'} completed", "READ-ONLY" if cmd.readonly else "READ-WRITE")


async def _qresync(s: ImapSession, sel: SelectedMailbox, q: c.QresyncParams) -> None:
    """RFC 7162 3.2.5.2: VANISHED (EARLIER) and FETCH for what changed since the client's modseq."""
    changed, vanished = await s.server.astore.changes_since(sel.mailbox_id, q.modseq)
    known = q.known_uids
    largest = sel.uids[-1] if sel.uids else 0
    if known is not None:
        vanished = [u for u in vanished if known.contains(u, max(largest, vanished[-1] if vanished else 0))]
    vanished = [u for u in vanished if sel.index_of(u) is None]
    out = []
    if vanished:
        out.append(r.untagged("VANISHED (EARLIER) " + SeqSet.from_numbers(vanished).render()))
    opts = UpdateOptions(condstore=True, qresync=True)
    for m in changed:
        seq = sel.seq_of(m.uid)
        if seq is None or (known is not None and not known.contains(m.uid, largest)):
            continue
        out.append(sel.fetch_flags_line(seq, m.uid, opts, with_uid=True))
    if out:
        s.send(b"".join(out))


async def _create(s: ImapSession, cmd: c.Create):
    special = ""
    if cmd.special_use:
        uses = [u for u in cmd.special_use]
        canon = {u.lower(): u for u in CREATE_SPECIAL_USE}
        if len(uses) > 1 or uses[0].lower() not in canon:
            raise No("unsupported special-use attribute", "USEATTR")  # RFC 6154 5.2
        special = canon[uses[0].lower()]
    if cmd.mailbox.rstrip("/") == "INBOX":
        raise No("INBOX exists", "ALREADYEXISTS")  # RFC 9051 6.3.4
    # RFC 9051 6.3.4: CREATE does not subscribe; the parents it creates are not subscribed either.
    await s.server.astore.create_mailbox(s.account_id, cmd.mailbox, special, subscribed=False)


async def _delete(s: ImapSession, cmd: c.Delete):
    if cmd.mailbox == "INBOX":
        raise No("INBOX cannot be deleted", "CANNOT")  # RFC 9051 6.3.5
    if s.selected is not None and s.selected.name == cmd.mailbox:
        _unselect(s, closed_code=False)
    await s.server.astore.delete_mailbox(s.account_id, cmd.mailbox)


async def _rename(s: ImapSession, cmd: c.Rename):
    try:
        await s.server.astore.rename_mailbox(s.account_id, cmd.mailbox, cmd.new_mailbox)
    except Invalid as e:
        raise No(str(e), "CANNOT") from None


async def _subscribe(s: ImapSession, cmd: c.Subscribe):
    await s.server.astore.set_subscribed(s.account_id, cmd.mailbox, True)


async def _unsubscribe(s: ImapSession, cmd: c.Unsubscribe):
    await s.server.astore.set_subscribed(s.account_id, cmd.mailbox, False)


def _list_line(kind: str, entry, utf8: bool) -> bytes:
    line = kind.encode() + b" " + r.flag_list(entry.attributes) + b' "/" ' + r.mailbox(entry.name, utf8=utf8)
    if entry.childinfo:
        line += b' ("CHILDINFO" ("SUBSCRIBED"))'  # RFC 5258 3.5
    return r.untagged(line)


async def _list(s: ImapSession, cmd: c.List):
    if not cmd.extended and len(cmd.patterns) == 1 and cmd.patterns[0] == "":
        # RFC 9051 6.3.9: an empty pattern asks for the hierarchy delimiter and the root.
        s.send(r.untagged('LIST (\\Noselect) "/" ""'))
        return None
    mailboxes = await s.server.astore.list_mailboxes(s.account_id)
    subs = None
    if "SUBSCRIBED" in cmd.selection or "SUBSCRIBED" in cmd.return_options:
        subs = set(await s.server.astore.list_subscriptions(s.account_id))
    entries = list_entries(mailboxes, cmd.patterns, reference=cmd.reference, selection=cmd.selection,
                           return_options=cmd.return_options, subscriptions=subs)
    by_name = {m.name: m for m in mailboxes}
    for e in entries:
        s.send(_list_line("LIST", e, s.utf8))
        if "STATUS" in cmd.return_options and e.selectable and e.name in by_name:
            # RFC 5819 2: the STATUS response follows the mailbox's LIST response.
            s.send(await _status_line(s, by_name[e.name], cmd.return_status))


async def _lsub(s: ImapSession, cmd: c.Lsub):
    if cmd.pattern is None:
        return None
    mailboxes = await s.server.astore.list_mailboxes(s.account_id)
    subs = set(await s.server.astore.list_subscriptions(s.account_id))
    for e in lsub_entries(mailboxes, cmd.reference, cmd.pattern, subs):
        s.send(_list_line("LSUB", e, s.utf8))


async def _status_line(s: ImapSession, mailbox, items: tuple[str, ...]) -> bytes:
    uids = None
    deleted = None
    if "RECENT" in items or "DELETED" in items:
        sel = s.selected
        if sel is not None and sel.mailbox_id == mailbox.id:
            uids = list(sel.uids)
            deleted = sel.count_flag(FLAG_DELETED)
        else:
            metas = await s.server.astore.list_messages(mailbox.id)
            uids = [m.uid for m in metas]
            deleted = sum(1 for m in metas if m.flags & FLAG_DELETED)
    values = {
        "MESSAGES": mailbox.message_count,
        "UIDNEXT": mailbox.uid_next,
        "UIDVALIDITY": mailbox.uid_validity,
        "UNSEEN": mailbox.unseen_count,
        "SIZE": mailbox.total_size,  # RFC 8438
        "HIGHESTMODSEQ": mailbox.highest_modseq,  # RFC 7162 3.1.6
        "APPENDLIMIT": s.append_limit,  # RFC 7889 3
    }
    parts = []
    for item in items:
        if item == "RECENT":
            value = s.recent.unclaimed_count(mailbox.id, mailbox.uid_validity, uids)
            sel = s.selected
            if sel is not None and sel.mailbox_id == mailbox.id:
                value += len(sel.recent)
        elif item == "DELETED":
            value = deleted
        else:
            value = values[item]
        parts.append(f"{item} {value}")
    if "HIGHESTMODSEQ" in items:
        s.enable_condstore()  # RFC 7162 3.1: STATUS (HIGHESTMODSEQ) is a CONDSTORE-enabling command
    return r.untagged(b"STATUS " + r.mailbox(mailbox.name, utf8=s.utf8) + b" (" + " ".join(parts).encode() + b")")


async def _status(s: ImapSession, cmd: c.Status):
    mailbox = await s.server.astore.get_mailbox(s.account_id, cmd.mailbox)
    if mailbox is None:
        raise No(f"no mailbox {cmd.mailbox}", "NONEXISTENT")
    s.send(await _status_line(s, mailbox, cmd.items))


def _read_and_parse(store, blob_id: str) -> dict:
    from mailserver.ingest import parsed_columns

    return parsed_columns(store.blobs.read(blob_id))


async def _append(s: ImapSession, cmd: c.Append):
    state, s._append = s._append, None
    if state is None or len(state.writers) != len(cmd.messages):
        if state is not None:
            s._append = state
            s._abort_append()
        raise Bad("APPEND data was not received")
    server = s.server
    astore = server.astore
    uid_validity = 0
    uids: list[int] = []
    try:
        prepared = []
        for msg, writer in zip(cmd.messages, state.writers, strict=True):
            try:
                bits, keywords, _recent = split_flags(msg.flags)
            except ValueError as e:
                raise Bad(str(e)) from None
            prepared.append((msg, writer, bits, keywords))
        for msg, writer, bits, keywords in prepared:
            ref = await astore.finish_blob(writer)
            parsed = await run_in(server.reactor, server.pools.cpu, _read_and_parse, server.store, ref.id)
            when = msg.internal_date.timestamp() if msg.internal_date is not None else None
            changed = await astore.append(s.account_id, state.mailbox.id, ref, parsed, bits, keywords, when)
            uid_validity, uid = changed.value
            uids.append(uid)
    except BaseException:
        for w in state.writers[len(uids):]:
            try:
                w.abort()
            except Exception:
                pass
        raise
    # RFC 4315 3 / RFC 3502: APPENDUID with the UIDs of every appended message.
    return _Ok("APPEND completed", f"APPENDUID {uid_validity} {SeqSet.from_numbers(uids).render()}")


async def _idle(s: ImapSession, cmd: c.Idle):
    s.send(r.continuation("idling"))
    s._idle_tag = cmd.tag
    s.conn.activity(idle=True)  # RFC 9051 6.3.13: IDLE re-arms the autologout timer
    try:
        s._flush_updates()
        while True:
            frame = await s.next_line()
            if is_idle_done(frame):
                break
            raise Bad("expected DONE")
    finally:
        s._idle_tag = None
    return _Ok("IDLE terminated")


def _quota_line(used: int, limit: int) -> bytes:
    # RFC 9208 5.1: STORAGE in units of 1024 octets.
    return r.untagged('QUOTA "" (STORAGE %d %d)' % ((used + 1023) // 1024, limit // 1024))


async def _getquota(s: ImapSession, cmd: c.GetQuota):
    if cmd.root != "":
        raise No("no such quota root", "NONEXISTENT")
    used, limit = await s.server.astore.quota(s.account_id)
    if not limit:
        raise No("no quota on this account", "NONEXISTENT")
    s.send(_quota_line(used, limit))


async def _getquotaroot(s: ImapSession, cmd: c.GetQuotaRoot):
    mailbox = await s.server.astore.get_mailbox(s.account_id, cmd.mailbox)
    if mailbox is None:
        raise No(f"no mailbox {cmd.mailbox}", "NONEXISTENT")
    used, limit = await s.server.astore.quota(s.account_id)
    if not limit:
        s.send(r.untagged(b"QUOTAROOT " + r.mailbox(mailbox.name, utf8=s.utf8)))
        return None
    s.send(r.untagged(b'QUOTAROOT ' + r.mailbox(mailbox.name, utf8=s.utf8) + b' ""'))
    s.send(_quota_line(used, limit))


async def _setquota(s: ImapSession, cmd: c.SetQuota):
    raise No("quotas are set by the administrator", "NOPERM")  # RFC 9208 4.1.3


async def _compress(s: ImapSession, cmd: c.Compress):
    if cmd.mechanism != "DEFLATE":
        raise Bad(f"unknown compression mechanism {cmd.mechanism}")
    if s.compressing:
        raise No("compression already active", "COMPRESSIONACTIVE")  # RFC 4978 3
    s.send(r.tagged(cmd.tag, "OK", "DEFLATE active"))
    s.reader.discard_buffer()  # RFC 4978 3: everything after the OK is compressed
    s.conn.start_compress()
    s.compressing = True
    return REPLIED


# ---------------------------------------------------------------------------------------------- selected

def _require_writable(s: ImapSession, what: str) -> SelectedMailbox:
    sel = s.selected
    if sel.readonly:
        raise No(f"mailbox is read-only: {what} not allowed", "READ-ONLY")
    return sel


def _target_uids(s: ImapSession, uid: bool, seq_set: SeqSet) -> list[int]:
    sel = s.selected
    if uid:
        return sel.uids_in(seq_set)
    try:
        return sel.seqs_to_uids(seq_set)
    except ValueError as e:
        raise Bad(str(e)) from None


async def _check(s: ImapSession, cmd):
    return None


async def _close(s: ImapSession, cmd: c.Close):
    sel = s.selected
    if not sel.readonly:
        # RFC 9051 6.4.1: CLOSE expunges silently.
        await s.server.astore.expunge(sel.mailbox_id)
    _unselect(s, closed_code=False)


async def _unselect_cmd(s: ImapSession, cmd: c.Unselect):
    _unselect(s, closed_code=False)


async def _expunge(s: ImapSession, cmd: c.Expunge):
    sel = _require_writable(s, "EXPUNGE")
    uids = None
    if cmd.uid_set is not None:
        uids = sel.uids_in(cmd.uid_set)  # RFC 4315 2.1 UID EXPUNGE
        if not uids:
            return None
    await s.server.astore.expunge(sel.mailbox_id, uids)
    # The EXPUNGE (or VANISHED) responses come from the change events, told by the dispatcher.
    return None


_STORE_MODES = {c.StoreMode.ADD: "add", c.StoreMode.REMOVE: "remove", c.StoreMode.REPLACE: "replace"}


async def _store(s: ImapSession, cmd: c.Store):
    sel = _require_writable(s, "STORE")
    try:
        bits, keywords, _recent = split_flags(cmd.flags)
    except ValueError as e:
        raise Bad(str(e)) from None
    if cmd.unchanged_since is not None:
        s.enable_condstore()  # RFC 7162 3.1: UNCHANGEDSINCE enables CONDSTORE
    uids = _target_uids(s, cmd.uid, cmd.seq_set)
    if not uids:
        return None
    changed = await s.server.astore.set_flags(sel.mailbox_id, uids, _STORE_MODES[cmd.mode], bits, keywords,
                                              cmd.unchanged_since)
    result = changed.value
    out = []
    if keywords and cmd.mode is not c.StoreMode.REMOVE and sel.new_keywords(keywords):
        out.append(sel.flags_response())
        out.append(sel.permanent_flags_response())
    opts = s.options()
    for fu in result.updated:
        sel.set_cached_flags(fu.uid, fu.flags, fu.keywords, fu.modseq)
    if not cmd.silent or cmd.unchanged_since is not None:
        for fu in result.updated:
            seq = sel.seq_of(fu.uid)
            if seq is None:
                continue
            if cmd.silent and fu.modseq <= (cmd.unchanged_since or 0):
                continue
            out.append(sel.fetch_flags_line(seq, fu.uid, opts, with_uid=cmd.uid))
    if out:
        s.send(b"".join(out))
    if result.modified:
        # RFC 7162 3.1.3: MODIFIED lists what failed the UNCHANGEDSINCE test (UIDs for UID STORE).
        numbers = result.modified if cmd.uid else [sel.seq_of(u) for u in result.modified if sel.seq_of(u)]
        return _Ok("conditional STORE failed for some messages", "MODIFIED " + SeqSet.from_numbers(numbers).render())
    return None


async def _copy_move(s: ImapSession, cmd, move: bool):
    sel = s.selected
    if move:
        _require_writable(s, "MOVE")
    uids = _target_uids(s, cmd.uid, cmd.seq_set)
    astore = s.server.astore
    target = await astore.get_mailbox(s.account_id, cmd.mailbox)
    if target is None:
        raise No(f"no mailbox {cmd.mailbox}", "TRYCREATE")  # RFC 9051 6.4.7
    if not uids:
        return None
    changed = await astore.copy(sel.mailbox_id, uids, target.id, move=move)
    result = changed.value
    if not result.pairs:
        return None
    src = SeqSet.from_numbers(p[0] for p in result.pairs).render()
    dst = SeqSet.from_numbers(p[1] for p in result.pairs).render()
    code = f"COPYUID {result.uid_validity} {src} {dst}"  # RFC 4315 3
    if move:
        # RFC 6851 4.3: COPYUID goes in an untagged OK before the expunges.
        s.send(r.status_line("OK", "moved", code))
        return None
    return _Ok("COPY completed", code)


async def _copy(s: ImapSession, cmd: c.Copy):
    return await _copy_move(s, cmd, move=False)


async def _move(s: ImapSession, cmd: c.Move):
    return await _copy_move(s, cmd, move=True)


#: FETCH works through the selected messages in batches: at most this many per database round trip ...
FETCH_BATCH = 500
#: ... and at most this many body octets read ahead per batch (bodies stream, never a whole mailbox in memory).
FETCH_BATCH_OCTETS = 4 * 1024 * 1024


def _read_ranges(store, wanted: list[tuple[str, list[tuple[int, int]]]]) -> list[dict]:
    """Blocking (blob pool): the byte ranges of each blob, ``[{(start, end): bytes}]``."""
    out = []
    for blob_id, ranges in wanted:
        chunks = {}
        for start, end in ranges:
            chunks[(start, end)] = store.blobs.read(blob_id, start, end)
        out.append(chunks)
    return out


def _fetch_batches(uids: list[int], sel: SelectedMailbox, plan) -> list[list[int]]:
    if not plan.needs_body:
        return [uids[i:i + FETCH_BATCH] for i in range(0, len(uids), FETCH_BATCH)]
    batches: list[list[int]] = []
    current: list[int] = []
    octets = 0
    for uid in uids:
        i = sel.index_of(uid)
        size = sel.sizes[i] if i is not None else 0
        if current and (len(current) >= FETCH_BATCH or octets + size > FETCH_BATCH_OCTETS):
            batches.append(current)
            current, octets = [], 0
        current.append(uid)
        octets += size if not plan.header_only else 0
    if current:
        batches.append(current)
    return batches


async def _fetch(s: ImapSession, cmd: c.Fetch):
    from . import fetch as F

    sel = s.selected
    if cmd.changed_since is not None or any(a.name == "MODSEQ" for a in cmd.items):
        s.enable_condstore()  # RFC 7162 3.1: CHANGEDSINCE and the MODSEQ item enable CONDSTORE
    if cmd.vanished and not (cmd.uid and s.qresync and cmd.changed_since is not None):
        raise Bad("VANISHED needs UID FETCH, CHANGEDSINCE and ENABLE QRESYNC")  # RFC 7162 3.2.6
    uids = _target_uids(s, cmd.uid, cmd.seq_set)
    opts = s.options()
    plan = F.plan_fetch(cmd.items, uid_command=cmd.uid, condstore=opts.condstore, changed_since=cmd.changed_since)
    astore = s.server.astore
    if cmd.changed_since is not None:
        uids = [u for u in uids if sel.modseq_of(u) > cmd.changed_since]  # RFC 7162 3.1.4.1
    if cmd.vanished:
        _changed, vanished = await astore.changes_since(sel.mailbox_id, cmd.changed_since)
        largest = max(sel.uids[-1] if sel.uids else 0, vanished[-1] if vanished else 0)
        vanished = [u for u in vanished if cmd.seq_set.contains(u, largest) and sel.index_of(u) is None]
        if vanished:
            s.send(r.untagged("VANISHED (EARLIER) " + SeqSet.from_numbers(vanished).render()))
    want_date = any(a.name == "INTERNALDATE" for a in plan.items)
    set_seen = plan.sets_seen and not sel.readonly
    for batch in _fetch_batches(uids, sel, plan):
        infos: dict[int, object] = {}
        need_info = plan.needs_info or (want_date and any(_unknown_date(sel, u) for u in batch))
        if need_info:
            for info in await astore.get_messages(sel.mailbox_id, batch):
                infos[info.uid] = info
                sel.set_date(info.uid, info.internal_date)
        else:
            for u in batch:
                meta = sel.meta_of(u)
                if meta is not None:
                    infos[u] = meta
        seen_now: set[int] = set()
        if set_seen:
            # RFC 3501 6.4.5: a non-PEEK body fetch sets \Seen; the response then carries FLAGS too.
            unseen = [u for u in batch if u in infos and not sel.flags_of(u)[0] & FLAG_SEEN]
            if unseen:
                changed = await astore.set_flags(sel.mailbox_id, unseen, "add", FLAG_SEEN)
                for fu in changed.value.updated:
                    sel.set_cached_flags(fu.uid, fu.flags, fu.keywords, fu.modseq)
                    seen_now.add(fu.uid)
                    infos[fu.uid] = _with_modseq(infos[fu.uid], fu.modseq)
        bodies: dict[int, dict] = {}
        if plan.needs_body:
            wanted = [(u, infos[u].blob_id, plan.ranges(infos[u])) for u in batch if u in infos]
            wanted = [w for w in wanted if w[2]]
            if wanted:
                server = s.server
                chunks = await run_in(server.reactor, server.pools.blob, _read_ranges, server.store,
                                      [(b, rs) for _u, b, rs in wanted])
                bodies = {u: ch_ for (u, _b, _r), ch_ in zip(wanted, chunks, strict=True)}
        out = []
        for u in batch:
            info = infos.get(u)
            seq = sel.seq_of(u)
            if info is None or seq is None:
                continue  # expunged meanwhile: the EXPUNGE is told after this command (RFC 9051 7.4.1)
            bits, keywords = sel.flags_of(u)
            try:
                out.append(F.fetch_response(
                    seq, info, plan.items, body_reader=F.RangeReader(bodies.get(u, {})), flags=bits,
                    keywords=keywords, recent=u in sel.recent, uid_command=cmd.uid, condstore=opts.condstore,
                    utf8=s.utf8, rev2=s.rev2, include_flags=u in seen_now))
            except F.FetchError as e:
                if out:
                    s.send(b"".join(out))
                raise No(e.text, e.code) from None
        if out:
            s.send(b"".join(out))
        await s.drain()
    return None


def _unknown_date(sel: SelectedMailbox, uid: int) -> bool:
    i = sel.index_of(uid)
    return i is not None and math.isnan(sel.dates[i])


def _with_modseq(info, modseq: int):
    return dataclasses.replace(info, modseq=modseq)


#: A message as the search engine sees it, from the selected-mailbox cache (no database round trip); a tuple type,
#: so building 100,000 of them for a SEARCH stays cheap.
_SearchMeta = MessageMeta


def _snapshot(sel: SelectedMailbox) -> list[_SearchMeta]:
    kws = sel.keywords
    if not kws:
        return list(map(_SearchMeta, sel.uids, sel.modseqs, sel.flags, [()] * len(sel.uids), sel.sizes, sel.dates))
    return [_SearchMeta(u, m, f, kws.get(u, ()), z, d)
            for u, m, f, z, d in zip(sel.uids, sel.modseqs, sel.flags, sel.sizes, sel.dates, strict=True)]


def _needs_content(key) -> bool:
    from . import searchkeys as K

    if isinstance(key, (K.HeaderKey, K.BodyKey, K.TextKey)):
        return True
    if isinstance(key, K.DateKey):
        return key.field == "SENT"
    if isinstance(key, K.Not):
        return _needs_content(key.key)
    if isinstance(key, K.Or):
        return _needs_content(key.left) or _needs_content(key.right)
    if isinstance(key, K.And):
        return any(_needs_content(k) for k in key.keys)
    return False


class _ContentLoader:
    """Headers and decoded text for the search engine, loaded on demand in a pool thread (blocking)."""

    CHUNK = 200

    def __init__(self, store, mailbox_id: int, uids: list[int]):
        self.store = store
        self.mailbox_id = mailbox_id
        self.uids = uids
        self.infos: dict[int, object] = {}

    def info(self, uid: int):
        if uid not in self.infos:
            import bisect

            i = bisect.bisect_left(self.uids, uid)
            chunk = self.uids[i:i + self.CHUNK] or [uid]
            for info in self.store.get_messages(self.mailbox_id, chunk):
                self.infos[info.uid] = info
            self.infos.setdefault(uid, None)
        return self.infos[uid]

    def header_of(self, msg) -> bytes:
        info = self.info(msg.uid)
        if info is None:
            return b""
        return self.store.blobs.read(info.blob_id, 0, info.header_size or None)

    def text_of(self, msg) -> tuple[bytes, str]:
        from .search import message_text

        info = self.info(msg.uid)
        if info is None:
            return b"", ""
        return message_text(self.store.blobs.read(info.blob_id), info.bodystructure or None)


async def _refresh_dates(s: ImapSession) -> None:
    """Load the internal dates the cache does not know (messages that arrived after SELECT)."""
    sel = s.selected
    missing = [u for u, d in zip(sel.uids, sel.dates, strict=True) if math.isnan(d)]
    for i in range(0, len(missing), FETCH_BATCH):
        for info in await s.server.astore.get_messages(sel.mailbox_id, missing[i:i + FETCH_BATCH]):
            sel.set_date(info.uid, info.internal_date)


async def _matching_uids(s: ImapSession, keys) -> list[int]:
    """The UIDs of the selected messages matching ``keys`` (ascending)."""
    from . import search as S

    sel = s.selected
    await _refresh_dates(s)
    messages = _snapshot(sel)
    largest_uid = sel.uids[-1] if sel.uids else 0
    kwargs = dict(seq_of=None, max_uid=largest_uid, max_seq=sel.exists, recent_uids=frozenset(sel.recent),
                  now=s.server.reactor.seconds())
    if not _needs_content(keys):
        return S.search(keys, messages, **kwargs)
    server = s.server
    loader = _ContentLoader(server.store, sel.mailbox_id, list(sel.uids))
    return await run_in(server.reactor, server.pools.db_read, S.search, keys, messages, text_of=loader.text_of,
                        header_of=loader.header_of, **kwargs)


async def _search(s: ImapSession, cmd: c.Search):
    from . import search as S

    sel = s.selected
    with_modseq = S.uses_modseq(cmd.keys)
    if with_modseq:
        s.enable_condstore()  # RFC 7162 3.1.5: SEARCH MODSEQ enables CONDSTORE
    uids = await _matching_uids(s, cmd.keys)
    if cmd.return_options is None:
        numbers = uids if cmd.uid else [sel.seq_of(u) for u in uids]
        highest = max((sel.modseq_of(u) for u in uids), default=0) if with_modseq else None
        s.send(S.search_response(numbers, highest))
        return None
    # RFC 4731 / RFC 9051 6.4.4.4: ESEARCH
    seqs = None if cmd.uid else [sel.seq_of(u) for u in uids]
    s.send(S.esearch_response(cmd.tag, cmd.uid, uids, cmd.return_options, seq_numbers=seqs,
                              modseq_of=sel.modseq_of if with_modseq else None))
    return None


async def _infos(s: ImapSession, uids: list[int]) -> list:
    """MessageInfo of the given selected UIDs (the parse stored at delivery), in UID order."""
    out: list = []
    sel = s.selected
    for i in range(0, len(uids), FETCH_BATCH):
        out.extend(await s.server.astore.get_messages(sel.mailbox_id, uids[i:i + FETCH_BATCH]))
    return out


async def _sort(s: ImapSession, cmd: c.Sort):
    from . import search as S
    from . import sort as O

    sel = s.selected
    with_modseq = S.uses_modseq(cmd.keys)
    if with_modseq:
        s.enable_condstore()  # RFC 7162 3.1.5: SEARCH MODSEQ enables CONDSTORE
    uids = await _matching_uids(s, cmd.keys)
    infos = [i for i in await _infos(s, uids) if sel.index_of(i.uid) is not None]
    ordered = O.sort_messages(cmd.criteria, infos, seq_of=sel.seq_of)  # RFC 5256 3
    numbers = ordered if cmd.uid else [sel.seq_of(u) for u in ordered]
    if cmd.return_options is None:
        highest = max((sel.modseq_of(u) for u in ordered), default=0) if with_modseq else None
        s.send(O.sort_response(numbers, highest))
    else:
        # RFC 5267 ESORT
        modseq_of = None
        if with_modseq:
            modseq_of = sel.modseq_of if cmd.uid else (lambda n: sel.modseq_of(sel.uid_of(n)))
        s.send(O.esort_response(cmd.tag, cmd.uid, numbers, cmd.return_options, modseq_of=modseq_of))
    return None


async def _thread(s: ImapSession, cmd: c.Thread):
    from . import thread as T

    sel = s.selected
    uids = await _matching_uids(s, cmd.keys)
    infos = [i for i in await _infos(s, uids) if sel.index_of(i.uid) is not None]
    threads = T.thread_messages(cmd.algorithm, infos, seq_of=sel.seq_of)  # RFC 5256 3
    s.send(T.thread_response(threads, None if cmd.uid else sel.seq_of))
    return None


async def _unknown(s: ImapSession, cmd: c.Unknown):
    raise Bad(f"unknown command {cmd.command}")


#: The command table: command class -> (handler, states in which it is allowed).
COMMANDS: dict[type, tuple[Callable, int]] = {
    c.Capability: (_capability, ANY),
    c.Noop: (_noop, ANY),
    c.Logout: (_logout, ANY),
    c.Id: (_id, ANY),
    c.Unknown: (_unknown, ANY),
    c.StartTLS: (_starttls, NOT_AUTHENTICATED),
    c.Login: (_login, NOT_AUTHENTICATED),
    c.Authenticate: (_authenticate, NOT_AUTHENTICATED),
    c.Enable: (_enable, AUTH),
    c.Namespace: (_namespace, AUTH),
    c.Select: (_select, AUTH),
    c.Create: (_create, AUTH),
    c.Delete: (_delete, AUTH),
    c.Rename: (_rename, AUTH),
    c.Subscribe: (_subscribe, AUTH),
    c.Unsubscribe: (_unsubscribe, AUTH),
    c.List: (_list, AUTH),
    c.Lsub: (_lsub, AUTH),
    c.Status: (_status, AUTH),
    c.Append: (_append, AUTH),
    c.Idle: (_idle, AUTH),
    c.GetQuota: (_getquota, AUTH),
    c.GetQuotaRoot: (_getquotaroot, AUTH),
    c.SetQuota: (_setquota, AUTH),
    c.Compress: (_compress, AUTH),
    c.Check: (_check, SELECTED),
    c.Close: (_close, SELECTED),
    c.Unselect: (_unselect_cmd, SELECTED),
    c.Expunge: (_expunge, SELECTED),
    c.Store: (_store, SELECTED),
    c.Copy: (_copy, SELECTED),
    c.Move: (_move, SELECTED),
    c.Fetch: (_fetch, SELECTED),
    c.Search: (_search, SELECTED),
    c.Sort: (_sort, SELECTED),
    c.Thread: (_thread, SELECTED),
}

__all__ = ["ImapSession", "COMMANDS", "No", "Bad", "NOT_AUTHENTICATED", "AUTHENTICATED", "SELECTED", "LOGOUT",
           "flag_names"]
