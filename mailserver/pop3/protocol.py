"""Twisted glue for the POP3 session: transport, TLS, timers, and the requests the session makes.

``build_factory(services, listener_name)`` is what ``mailserver.service`` calls for the ``pop3`` (plain, with STLS)
and ``pop3s`` (implicit TLS, RFC 8314) listeners.  Everything protocol-related is decided by
:class:`mailserver.pop3.session.Pop3Session`; this module only carries its outputs out:

* authentication through ``services.auth`` (hashing runs in its pool), the maildrop snapshot and the UPDATE-state
  deletion through ``services.astore`` (database pools; the deletion publishes EXPUNGE change events that IMAP sessions
  apply), message bodies read from the blob store in the blob pool, one chunk at a time (or on the reactor
  thread when all of a small body is in the page cache, below);
* RETR/TOP stream through the connection's :class:`~mailserver.connections.FlowControl`: the next chunk of at most
  :data:`CHUNK` octets is read only once the transport's buffer has drained, so a 25 MB message is never held whole
  in memory (the database blob backend is the exception: its ``open()`` returns the body already read);
* a body of up to :data:`CHUNK` octets that is all in memory (the page cache: ``blobs.read_cached``, which never
  waits for a disk) is read on the reactor thread and answered at once: a 5 KB read is a few microseconds, a
  thread hop and the GIL hand-overs of a pool thread's reads cost several times that;
* read-ahead (bodies not in memory): clients download in order, so the blob-pool trip that opens a message also reads the whole bodies of
  the next small messages of the maildrop (:class:`ReadAhead`: at most :data:`READ_AHEAD_OCTETS` held per session,
  the window growing from 4 to :data:`READ_AHEAD_MESSAGES` messages while the client keeps hitting it).  A RETR/TOP of
  a message read ahead is answered at once, in one write, without a thread hop or a Deferred; the next one waits for
  a later reactor turn once :data:`~mailserver.connections.OUTPUT_PER_TURN` octets of bodies went out in this one, and
  for the transport to drain while its buffer is over its bound, so a client that pipelines RETRs and never reads
  holds a bounded amount of memory (the stall timer then drops it);
* writes: the replies of one call of ``_carry_out`` (bodies read ahead included) go out in one write at its end,
  and on a plain TCP connection whose transport holds nothing unsent that write is a ``send()`` at once
  (:class:`DirectWriter`), not a buffered ``transport.write`` that costs two ``epoll_ctl`` calls and another reactor
  turn; what the kernel does not take, and everything over TLS, goes through the transport as before;
* flow control: reading is paused while a request is outstanding and while output does not drain (a peer that
  stops reading is dropped after ``limits.output_stall_timeout``); the session handles at most
  :data:`~mailserver.connections.COMMANDS_PER_TURN` commands (or about
  :data:`~mailserver.connections.OUTPUT_PER_TURN` octets of replies) per reactor turn;
* STLS: the session empties its input buffer before :class:`StartTls` is carried out, so plaintext pipelined after
  STLS is never read as a command inside TLS (RFC 2595 section 4, the CVE-2011-0411 class);
* idle timeout ``limits.pop3_idle_timeout`` (RFC 1939 section 3: at least 10 minutes): the connection is closed
  without a response and without entering UPDATE; it never fires while a RETR is being streamed.

The maildrop lock (one POP3 session per account) is ``services.cluster.maildrop_locks``, shared by every POP3
listener of the server and, with PostgreSQL, by every process on the database.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import bindparam, select
from twisted.internet import defer, protocol, tcp
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin

from mailserver import login as login_mod
from mailserver.access import BlockingMailboxAccess, MailboxNotFound, Principal, Rights
from mailserver.connections import (
    COMMANDS_PER_TURN,
    OUTPUT_PER_TURN,
    SESSION,
    FlowControl,
    close_transport,
    refuse,
)
from mailserver.pop3 import session as S
from mailserver.pop3.wire import BodyEncoder, stuff_whole
from mailserver.threads import run_in
from storage.models import Message
from storage.sql import chunks

if TYPE_CHECKING:
    from mailserver.services import Services

log = Logger()

#: Octets read from the blob store per step of RETR/TOP.
CHUNK = 256 * 1024
#: Blob ids looked up per query when RETR/TOP reach a message whose blob id is not known yet.
BLOB_ID_WINDOW = 200
#: Most octets of message bodies a session holds read ahead (the same bound as one chunk of a streamed body).
READ_AHEAD_OCTETS = 128 * 1024
#: Most messages read ahead in one blob-pool trip (the window starts at :data:`READ_AHEAD_FIRST` and doubles).
READ_AHEAD_MESSAGES = 32
READ_AHEAD_FIRST = 4

_M = Message.__table__


def maildrop_locks(services: Services) -> S.MaildropLockTable:
    """The server's lock table (shared by its pop3 and pop3s listeners): its cluster state's."""
    return services.cluster.maildrop_locks


def load_maildrop(store, account_id: int) -> S.Maildrop:
    """Blocking (db_read pool): the snapshot of the account's INBOX, in uid order."""
    try:  # RFC 1939 is read and delete: "r", "t" and "e" (RFC 4314 4) on the maildrop
        mailbox = BlockingMailboxAccess(store).open_mailbox(
            Principal(account_id), "INBOX", Rights.READ | Rights.DELETE_MESSAGES | Rights.EXPUNGE)
    except MailboxNotFound:
        raise LookupError(f"account {account_id} has no INBOX") from None
    entries = tuple(S.MaildropEntry(m.uid, m.size, "") for m in store.list_messages(mailbox.id))
    return S.Maildrop(mailbox.id, mailbox.uid_validity, entries)


#: uid and blob id only (``store.get_messages`` reads every column, the envelope and body structure included, and
#: builds a record of 23 fields per message: most of what a RETR cost the database pool).
_BLOB_IDS = select(_M.c.uid, _M.c.blob_id).where(_M.c.mailbox_id == bindparam("mailbox_id"),
                                                 _M.c.uid.in_(bindparam("uids", expanding=True)))


def blob_ids(store, mailbox_id: int, uids: list[int]) -> dict[int, str]:
    """Blocking (db_read pool): uid -> blob id for those of ``uids`` still in the mailbox."""
    out: dict[int, str] = {}
    with store.transaction(write=False) as conn:
        for chunk in chunks(sorted(set(uids))):
            for uid, blob_id in conn.execute(_BLOB_IDS, {"mailbox_id": mailbox_id, "uids": list(chunk)}):
                out[uid] = blob_id
    return out


def open_and_read(store, blob_id: str, n: int):
    """Blocking (blob pool): open the body and read its first ``n`` octets: (file, data, eof), or None if gone."""
    try:
        f = store.blobs.open(blob_id)
    except FileNotFoundError:
        return None
    data, eof = read_chunk(f, n)
    return f, data, eof


def open_and_read_ahead(store, blob_id: str, n: int, ahead: list[tuple[int, str, int]]):
    """Blocking (blob pool): :func:`open_and_read` of ``blob_id``, then the whole bodies of ``ahead`` ((uid, blob id,
    size) in maildrop order): (open_and_read's result, {uid: body}).  A body that cannot be read, or that is not the
    size listed, ends the read-ahead (its RETR will open it itself)."""
    first = open_and_read(store, blob_id, n)
    read = store.blobs.read_whole([(other, size) for _, other, size in ahead])
    return first, {uid: body for (uid, _, _), body in zip(ahead, read, strict=False)}  # read may stop early


class ReadAhead:
    """The bodies of the next messages of one session's maildrop, read in the blob pool before they are asked for.

    Holds at most :data:`READ_AHEAD_OCTETS`; :meth:`take` hands a body over (and forgets it).  :meth:`plan` says which
    messages to read with the next miss: those after it in maildrop order, not marked deleted, with a known blob id,
    each fitting the budget left, at most ``window`` of them; the window doubles on each miss up to
    :data:`READ_AHEAD_MESSAGES` (a client that RETRs one message and leaves costs a few small reads)."""

    def __init__(self) -> None:
        self.bodies: dict[int, bytes] = {}
        self.octets = 0
        self.window = READ_AHEAD_FIRST

    def take(self, uid: int) -> bytes | None:
        body = self.bodies.pop(uid, None)
        if body is not None:
            self.octets -= len(body)
        return body

    def plan(self, entries, start: int, deleted, blob_ids: dict[int, str]) -> list[tuple[int, str, int]]:
        """After a miss at index ``start`` of ``entries``: what to read with it.  Drops what was held (the client
        went elsewhere)."""
        self.bodies.clear()
        self.octets = 0
        out: list[tuple[int, str, int]] = []
        budget = READ_AHEAD_OCTETS
        for n in range(start + 1, len(entries)):
            if len(out) >= self.window:
                break
            if n + 1 in deleted:  # message numbers count from 1
                continue
            e = entries[n]
            blob_id = blob_ids.get(e.uid)
            if not blob_id or e.size > budget:
                break
            budget -= e.size
            out.append((e.uid, blob_id, e.size))
        self.window = min(self.window * 2, READ_AHEAD_MESSAGES)
        return out

    def keep(self, bodies: dict[int, bytes]) -> None:
        self.bodies.update(bodies)
        self.octets += sum(len(b) for b in bodies.values())

    def clear(self) -> None:
        self.bodies.clear()
        self.octets = 0


def read_chunk(f, n: int) -> tuple[bytes, bool]:
    """Blocking: up to ``n`` octets; a short read is the end (regular files and BytesIO), and closes the file."""
    data = f.read(n)
    eof = len(data) < n
    if eof:
        f.close()
    return data, eof


class DirectWriter:
    """Writes one connection's replies: on a plain TCP connection with nothing waiting in the transport's buffer,
    straight into the socket (``writeSomeData``, one ``send()`` now); otherwise, and for what the kernel did not
    take, through ``transport.write``.

    A ``transport.write`` only buffers: it asks epoll to watch for writability (an ``epoll_ctl``), a later reactor
    turn sends and stops watching (another ``epoll_ctl``).  For a client that waits for each reply (RETR after RETR)
    that was one more turn of the reactor per command.  The bytes on the wire and their order are the same: the
    direct send happens only when the transport holds nothing unsent, and what is left of a partial send goes
    through the transport (its buffer bound and back-pressure apply as before).  TLS (STLS, implicit TLS) and
    any wrapper other than the listener's own connection wrapper take the transport's path.
    """

    __slots__ = ("transport", "raw", "answered")

    def __init__(self, transport):
        self.transport = transport
        self.raw = None
        self.answered = None
        inner = getattr(transport, "transport", None)
        if not isinstance(inner, tcp.Connection):
            return
        # The listener's connection wrapper (imported here: mailserver.service loads the listeners' modules).
        from mailserver.service import TrackedConnection

        if type(transport) is TrackedConnection:
            self.raw = inner
            # The wrapper's response-latency metric, which its write() would have recorded.
            self.answered = transport._answered

    def write(self, data: bytes) -> None:
        raw = self.raw
        if raw is None or raw.TLS or not raw.connected or raw.disconnecting or raw._writeDisconnected \
                or raw.dataBuffer or raw._tempDataBuffer or not data:
            self.transport.write(data)
            return
        self.answered()
        sent = raw.writeSomeData(data)
        if type(sent) is int:
            if sent >= len(data):
                return
            if sent > 0:
                data = data[sent:]
        # The rest, or all of it if the connection failed: the transport's write path (which finds a lost
        # connection the way it always did).
        self.transport.write(data)


class BodySender:
    """Streams one message body to the transport: encode a chunk, write it, read the next in the blob pool.

    The next chunk is read only when the connection's flow control says the transport can take more
    (:meth:`~mailserver.connections.FlowControl.writable`).  The +OK line goes out in the same write as the first
    chunk, and the terminator in the same write as the last (no small segments for Nagle to hold back).
    """

    def __init__(self, proto: "Pop3Protocol", fileobj, encoder: BodyEncoder):
        self.proto = proto
        self.file = fileobj
        self.encoder = encoder
        self.stopped = False
        self.reading = False
        self.waiting = False  # for the transport to drain
        self.done = False
        self.sent = 0

    def start(self, prefix: bytes, data: bytes, eof: bool) -> None:
        self._send(prefix, data, eof)

    def stop(self) -> None:
        """The connection is gone: read nothing more, close the file."""
        self.stopped = True
        self._close_file()

    def _close_file(self) -> None:
        if not self.reading and self.file is not None:
            self.file.close()
            self.file = None

    def _send(self, prefix: bytes, data: bytes, eof: bool) -> None:
        if eof:
            self.file = None  # closed by read_chunk
        out = prefix + self.encoder.encode(data) if data else prefix
        finished = eof or self.encoder.done
        if finished:
            self._close_file()
            out += self.encoder.finish()
        self.sent += len(out)
        self.proto.write(out)
        self.proto.resetTimeout()
        if finished:
            self.done = True
            self.proto.body_sent(self)
        else:
            self._read_next()

    def _read_next(self) -> None:
        if self.stopped or self.reading or self.waiting or self.done or self.file is None:
            return
        d = self.proto.flow.writable()
        if d is not None:
            self.waiting = True
            d.addCallbacks(self._drained, lambda _f: None)
            return
        self.reading = True
        services = self.proto.factory.services
        d = run_in(services.reactor, services.pools.blob, read_chunk, self.file, CHUNK)
        d.addCallbacks(self._got, self._failed)

    def _drained(self, _result) -> None:
        self.waiting = False
        self._read_next()

    def _got(self, result: tuple[bytes, bool]) -> None:
        self.reading = False
        data, eof = result
        if eof:
            self.file = None
        if self.stopped:
            self._close_file()
            return
        self._send(b"", data, eof)

    def _failed(self, failure) -> None:
        self.reading = False
        log.failure("reading a message body failed", failure)
        self._close_file()
        # Part of the body is already on the wire: the only safe end is to drop the connection.
        self.proto.transport.abortConnection()


class Pop3Protocol(protocol.Protocol, TimeoutMixin):
    def __init__(self, factory: "Pop3Factory"):
        self.factory = factory
        self.callLater = factory.clock.callLater  # TimeoutMixin's timer (the idle timeout)
        self.session: S.Pop3Session | None = None
        self.client_ip = ""
        self.sender: BodySender | None = None
        self.flow: FlowControl | None = None
        self._stls_started = False
        self._blob_ids: dict[int, str] = {}
        self._ahead = ReadAhead()
        self._inline_octets = 0  # bodies written from the read-ahead in this call of _carry_out
        self._counted = False
        self._closing = None  # the pending abort of a close in progress
        self._gone = False  # connectionLost has run
        self._out: list[bytes] = []  # replies of this call of _carry_out, written together at its end
        self._writer: DirectWriter | None = None

    # ----------------------------------------------------------------------------------------- connection

    def connectionMade(self) -> None:
        services = self.factory.services
        peer = self.transport.getPeer()
        self.client_ip = getattr(peer, "host", "") or ""
        if not self.factory.limiter.acquire(self.client_ip):
            # RFC 2449 8.1.2 [SYS/TEMP]: a temporary condition; the client may retry later.
            self._closing = refuse(self.transport, services.reactor,
                                   b"-ERR [SYS/TEMP] too many connections from your address\r\n",
                                   tls_handshake_pending=self.factory.implicit_tls)
            return
        self._counted = True
        self._writer = DirectWriter(self.transport)
        self.flow = FlowControl(services.reactor, self.factory.clock, self.factory.stall_timeout, peer=self.client_ip)
        self.flow.attach(self.transport)
        implicit = self.factory.implicit_tls
        # The policy's answer for this client without TLS (the session adds TLS once it is active).
        plaintext = services.auth.plaintext_allowed(self.client_ip, False)
        self.session = S.Pop3Session(
            hostname=services.config.hostname,
            limits=services.config.limits,
            locks=maildrop_locks(services),
            tls_active=implicit,
            tls_available=(not implicit) and services.tls is not None,
            plaintext_without_tls=plaintext,
            max_commands=COMMANDS_PER_TURN,
            max_output=OUTPUT_PER_TURN,
        )
        self.setTimeout(self.factory.idle_timeout)
        no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if no_delay is not None:
            try:
                no_delay(True)  # replies are complete when written; do not wait for the client's ACK
            except OSError:
                pass
        self._carry_out(self.session.greeting())

    def dataReceived(self, data: bytes) -> None:
        if self.session is None:
            return
        self.flow.received()
        self.resetTimeout()
        self._carry_out(self.session.data_received(data))

    def _next_turn(self) -> None:
        if self._alive():
            self._carry_out(self.session.proceed())

    def connectionLost(self, reason=protocol.connectionDone) -> None:
        self.setTimeout(None)
        if self.flow is not None:
            self.flow.stop()
        self._gone = True
        if self._closing is not None and self._closing.active():
            self._closing.cancel()
        if self._counted:
            self._counted = False
            self.factory.limiter.release(self.client_ip)
        if self.sender is not None:
            self.sender.stop()
            self.sender = None
        self._ahead.clear()
        if self.session is not None:
            s = self.session
            if s.state is S.TRANSACTION:
                log.info("pop3 connection from {ip} ended without QUIT: nothing deleted", ip=self.client_ip)
            s.connection_lost()

    def timeoutConnection(self) -> None:
        if self.session is not None and self.session.busy:
            self.resetTimeout()  # a RETR is streaming or the database is slow: not idle
            return
        # RFC 1939 section 3: close without a response; no UPDATE state, nothing is deleted.
        log.info("pop3 idle timeout for {ip}", ip=self.client_ip)
        self._close()

    def server_shutdown(self) -> None:
        """The server is stopping: idle sessions end now; a running command is left its grace period."""
        if self.session is not None and not self.session.busy and not self.session.closed:
            self.transport.write(b"-ERR [SYS/TEMP] server shutting down\r\n")
            self._close()

    def write(self, data: bytes) -> None:
        """Write now: what this call of :meth:`_carry_out` gathered first, then ``data``."""
        if self._out:
            self._out.append(data)
            data = b"".join(self._out)
            self._out.clear()
        self._writer.write(data)

    def _flush(self) -> None:
        out = self._out
        if out:
            data = out[0] if len(out) == 1 else b"".join(out)
            out.clear()
            self._writer.write(data)

    def _close(self) -> None:
        """End the connection: cleanly if the peer lets us, aborted after a grace period otherwise."""
        if self.flow is not None:
            self.flow.stop()
        if self._closing is None and not self._gone:
            self._closing = close_transport(self.transport, self.factory.services.reactor)

    # ----------------------------------------------------------------------------------------- outputs

    def _carry_out(self, outputs: list) -> None:
        """Carry the session's outputs out.  The replies (and bodies read ahead) of one call go out in one write at
        its end, or before whatever must follow them on the wire (a close, STLS, a streamed body)."""
        self._inline_octets = 0
        out = self._out
        i = 0
        while i < len(outputs):  # a RETR answered from the read-ahead adds the session's next outputs
            o = outputs[i]
            i += 1
            if isinstance(o, S.Send):
                out.append(o.data)
            elif isinstance(o, S.Retrieve):
                more = self._retrieve(o)
                if more:
                    outputs.extend(more)
            elif isinstance(o, S.Close):
                self._flush()
                self._close()
            elif isinstance(o, S.StartTls):
                # RFC 2595 section 4: the session already dropped input buffered after STLS.
                self._flush()  # the +OK goes out in plaintext, before the handshake
                self._stls_started = True
                self.transport.startTLS(self.factory.services.tls)
            elif isinstance(o, S.Authenticate):
                self._authenticate(o)
            elif isinstance(o, S.OpenMaildrop):
                self._open_maildrop(o)
            elif isinstance(o, S.Expunge):
                self._expunge(o)
            else:  # pragma: no cover - every output type is handled above
                raise TypeError(f"unknown output {o!r}")
        self._flush()
        s = self.session
        if s is None or s.closed or self.flow is None:
            return
        # A request outstanding (login, maildrop, RETR streaming, UPDATE): pipelined input stays in the kernel.
        self.flow.set_reading(SESSION, not s.busy)
        if s.yielded:
            self.flow.next_turn(self._next_turn)  # the rest of the burst in a later turn, once replies drained

    def _alive(self) -> bool:
        return self.session is not None and not self.session.closed

    def _authenticate(self, req: S.Authenticate) -> None:
        self._login_name = req.username
        d = login_mod.login(self.factory.services.auth, req.username, req.password, self.client_ip, "pop3")

        def done(attempt: login_mod.Login):
            if not self._alive():
                return
            if attempt.outcome == login_mod.TEMPFAIL:
                self._carry_out(self.session.auth_error())
                return
            result = attempt.result
            if attempt.ok:
                self._login_name = result.address or req.username
            self._carry_out(self.session.auth_result(result.ok, result.account_id, result.reason))

        d.addCallback(done).addErrback(lambda f: log.failure("pop3 glue error", f))

    def _open_maildrop(self, req: S.OpenMaildrop) -> None:
        services = self.factory.services
        d = defer.ensureDeferred(self.session.locks.acquire_cluster(req.account_id))

        def locked(ok: bool):
            if not ok:
                return None  # another process holds the maildrop
            return services.astore.read(load_maildrop, services.store, req.account_id)

        d.addCallback(locked)

        def done(maildrop: S.Maildrop | None):
            if maildrop is None:
                if self._alive():
                    self._carry_out(self.session.maildrop_in_use())
                return
            if not self._alive():
                return
            log.info("pop3 maildrop of {user} opened from {ip}: {n} messages", user=self._login_name,
                     ip=self.client_ip, n=len(maildrop.entries))
            self._carry_out(self.session.maildrop_opened(maildrop, self._login_name))

        def failed(f):
            log.failure("pop3 cannot open maildrop", f)
            if self._alive():
                self._carry_out(self.session.maildrop_failed())

        d.addCallbacks(done, failed)

    def _retrieve(self, req: S.Retrieve) -> list | None:
        """Carry out RETR/TOP; returns the session's next outputs when it was answered at once (read ahead)."""
        flow = self.flow
        if flow.output_blocked or self._inline_octets >= OUTPUT_PER_TURN:
            # Output does not drain, or this turn wrote its share: go on in a later turn (after a drain).
            flow.next_turn(lambda: self._alive() and self._carry_out([req]))
            return None
        uid = req.entry.uid
        body = self._ahead.take(uid)
        if body is not None:
            return self._send_whole(req, body)
        services = self.factory.services
        maildrop = self.session.maildrop
        if req.entry.blob_id:
            self._blob_ids.setdefault(uid, req.entry.blob_id)
        blob_id = self._blob_ids.get(uid)
        if blob_id is not None:
            if blob_id and req.entry.size <= CHUNK:
                # In memory already (the page cache): answered here, no thread hop (see read_cached).
                body = services.store.blobs.read_cached(blob_id, req.entry.size)
                if body is not None:
                    return self._send_whole(req, body)
            self._open_blob(req, blob_id)
            return None
        # Look the blob ids up for this message and the next ones (clients RETR in order): one query per window.
        uids = [e.uid for e in maildrop.entries if e.uid >= uid][:BLOB_ID_WINDOW]
        d = services.astore.read(blob_ids, services.store, maildrop.mailbox_id, uids)

        def found(ids: dict[int, str]):
            self._blob_ids.update(ids)
            for u in uids:
                self._blob_ids.setdefault(u, "")  # gone (expunged elsewhere)
            if self._alive():
                self._carry_out([req])  # again, with its blob id known

        d.addCallbacks(found, self._retrieve_error)
        return None

    def _open_blob(self, req: S.Retrieve, blob_id: str) -> None:
        if not blob_id:
            self._carry_out(self.session.retrieve_failed())
            return
        services = self.factory.services
        maildrop = self.session.maildrop
        index = req.msg - 1
        ahead = self._ahead.plan(maildrop.entries, index, self.session.deleted, self._blob_ids) \
            if req.entry.size <= CHUNK else []
        d = run_in(services.reactor, services.pools.blob, open_and_read_ahead, services.store, blob_id, CHUNK, ahead)

        def opened(result):
            first, bodies = result
            if not self._alive():
                if first is not None and not first[2]:
                    first[0].close()
                return
            self._ahead.keep(bodies)
            if first is None:
                self._carry_out(self.session.retrieve_failed())
                return
            f, data, eof = first
            if eof:
                self._carry_out(self._send_whole(req, data))
                return
            prefix = self.session.retrieve_line()
            self.sender = BodySender(self, f, BodyEncoder(req.top_lines))
            self.sender.start(prefix, data, eof)

        d.addCallbacks(opened, self._retrieve_error)

    def _send_whole(self, req: S.Retrieve, body: bytes) -> list:
        """A body read whole: the +OK line, the dot-stuffed body and the terminator, written with the other replies
        of this call of :meth:`_carry_out` (the idle timer was reset by the command's arrival, a moment ago); the
        session's next outputs."""
        line = self.session.retrieve_line()
        if req.top_lines is None:
            data = stuff_whole(body)
        else:
            enc = BodyEncoder(req.top_lines)
            data = enc.encode(body) + enc.finish()
        self._inline_octets += len(line) + len(data)
        self._out += (line, data)
        return self.session.retrieve_done()

    def _retrieve_error(self, failure) -> None:
        log.failure("pop3 cannot open message", failure)
        if self._alive():
            self._carry_out(self.session.retrieve_failed("cannot read message, try again later"))

    def body_sent(self, sender: BodySender) -> None:
        if sender is not self.sender:
            return
        self.sender = None
        if self._alive():
            self._carry_out(self.session.retrieve_done())

    def _expunge(self, req: S.Expunge) -> None:
        d = self.factory.services.astore.delete_messages(req.mailbox_id, list(req.uids))

        def done(changed):
            log.info("pop3 {user}: deleted {n} messages", user=self._login_name, n=len(changed.value))
            if self.session is not None:
                self._carry_out(self.session.update_done(True))

        def failed(f):
            log.failure("pop3 UPDATE state failed", f)
            if self.session is not None:
                self._carry_out(self.session.update_done(False))

        d.addCallbacks(done, failed)

    _login_name = ""


class Pop3Factory(protocol.Factory):
    def __init__(self, services: Services, listener_name: str):
        self.services = services
        self.listener_name = listener_name
        self.implicit_tls = listener_name == "pop3s"
        #: Seconds of inactivity before the connection is closed (tests may lower it on the factory).
        self.idle_timeout = services.config.limits.pop3_idle_timeout
        self.stall_timeout = services.config.limits.output_stall_timeout
        #: The clock of the idle and stall timers (tests pass a ``task.Clock``).
        self.clock = services.reactor
        #: Sessions per client address, shared by the pop3 and pop3s listeners.
        self.limiter = services.state.limiter("pop3", services.config.limits.pop3_max_sessions_per_ip)

    def buildProtocol(self, addr) -> Pop3Protocol:
        return Pop3Protocol(self)


def build_factory(services: Services, listener_name: str) -> Pop3Factory:
    """The factory for the ``pop3`` or ``pop3s`` listener (``services`` from ``mailserver.service.MailServer``)."""
    if listener_name not in ("pop3", "pop3s"):
        raise ValueError(f"not a POP3 listener: {listener_name}")
    return Pop3Factory(services, listener_name)
