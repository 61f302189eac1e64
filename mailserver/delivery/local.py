"""The delivery pipeline for one message received over SMTP: stream to blobs, check, deliver, reply.

``IncomingMessage`` is driven by the SMTP glue: ``start()`` at DATA/first BDAT, ``write()`` per body chunk (the body
goes straight to blob writers, never collected in memory), ``abort()``, and ``finish()`` which returns the final reply
only after everything it reports is durable:

1. trace fields are written first: ``Return-Path`` (RFC 5321 4.4, final delivery only), ``Delivered-To`` (only when
   the message has exactly one local recipient: one stored copy is shared by all, and must not name the others, as
   Dovecot LMTP does), ``Received`` with the TLS version and cipher (RFC 5321 4.4, RFC 3848 with-types);
2. the header section streams through :class:`HeaderScanner`: ``Received`` fields are counted for loop detection
   (``554 5.4.6``), and on submission a missing ``Message-ID`` / ``Date`` is added (RFC 6409 8.2, 8.3);
3. blobs are fsynced (blob pool), the check hooks run (:mod:`mailserver.delivery.hooks`), the local copy is parsed
   once (cpu pool) and delivered with group commit; remote recipients are put into the durable queue;
4. the reply says what happened: 250 when every recipient has the message, 4xx/5xx when none has, and 250 naming
   the failed recipients when only some could be served (each recipient is all-or-nothing).
"""

from __future__ import annotations

import email.utils
import secrets
import time
from dataclasses import dataclass

from twisted.internet import defer
from twisted.logger import Logger

from mailserver.delivery import hooks as hooks_mod
from mailserver.delivery.router import LOCAL, OUTGOING, RELAY, Route, Router, RouteResult
from mailserver.smtp import codes
from mailserver.smtp.codes import Reply
from mailserver.threads import run_in
from storage.queueid import new_queue_id

log = Logger()

#: Header sections larger than this are passed through unchanged (no Message-ID/Date added, Received counted so far).
MAX_HEADER_SCAN = 1024 * 1024


@dataclass(frozen=True)
class ClientInfo:
    """What the glue knows about the connection, for trace fields and hooks."""

    ip: str
    helo: str
    esmtp: bool
    tls_version: str = ""  # e.g. "TLSv1.3"
    tls_cipher: str = ""
    authenticated: str = ""  # the account address, "" when not authenticated
    account_id: int | None = None
    submission: bool = False


class HeaderScanner:
    """Streams the message through, looking at its header section only (sans-IO).

    ``feed(chunk)`` returns the bytes to write (header bytes are held back until the end of the header section, at
    most :data:`MAX_HEADER_SCAN`); ``finish()`` returns whatever is still held.  ``received`` counts Received fields.
    """

    def __init__(self, add_missing: dict[str, str] | None = None):
        self.add_missing = dict(add_missing or {})  # lower-case name -> full "Name: value\r\n" field
        self.received = 0
        self._head = bytearray()
        self._scanning = True

    def feed(self, data: bytes) -> bytes:
        if not self._scanning:
            return data
        self._head += data
        # The header section ends at the first empty line (RFC 5322 2.1); a message may also start with it.
        if self._head.startswith(b"\r\n"):
            end = 0
        else:
            idx = self._head.find(b"\r\n\r\n")
            end = idx + 2 if idx >= 0 else -1
        if end < 0:
            if len(self._head) > MAX_HEADER_SCAN:
                return self._give_up()
            return b""
        return self._complete(end)

    def finish(self) -> bytes:
        if not self._scanning:
            return b""
        if self._head and not self._head.endswith(b"\r\n"):
            return self._give_up()  # no complete header section: pass through
        return self._complete(len(self._head))

    def _give_up(self) -> bytes:
        self._count(bytes(self._head))
        self._scanning = False
        out = bytes(self._head)
        self._head = bytearray()
        return out

    def _count(self, header: bytes) -> set[str]:
        names = set()
        for line in header.split(b"\r\n"):
            if not line or line[:1] in (b" ", b"\t"):
                continue
            name = line.split(b":", 1)[0].strip().lower()
            names.add(name.decode("latin-1"))
            if name == b"received":
                self.received += 1
        return names

    def _complete(self, end: int) -> bytes:
        head = bytes(self._head)
        self._head = bytearray()
        self._scanning = False
        present = self._count(head[:end])
        extra = "".join(v for k, v in self.add_missing.items() if k not in present).encode("utf-8")
        return head[:end] + extra + head[end:]


def with_protocol(info: ClientInfo, smtputf8: bool) -> str:
    """RFC 3848 / RFC 6531 4.3 "with" protocol type."""
    base = "UTF8SMTP" if smtputf8 else ("ESMTP" if info.esmtp else "SMTP")
    if not info.esmtp and not smtputf8:
        return "SMTP"
    suffix = ("S" if info.tls_version else "") + ("A" if info.authenticated else "")
    return base + suffix


def received_header(hostname: str, info: ClientInfo, *, smtputf8: bool, queue_id: str, recipient: str | None,
                    show_auth_user: bool, now: float | None = None) -> str:
    """A Received field (RFC 5321 4.4 Stamp), folded, ending in CRLF."""
    helo = "".join(c for c in info.helo if c.isprintable() and c not in "()\\")[:200] or "unknown"
    ip = info.ip if ":" not in info.ip else "IPv6:" + info.ip
    lines = [f"Received: from {helo} ([{ip}])", f"\tby {hostname} with {with_protocol(info, smtputf8)} id {queue_id}"]
    if info.tls_version:
        lines.append(f"\t(using {info.tls_version} with cipher {info.tls_cipher})")
    if info.authenticated and show_auth_user:
        lines.append(f"\t(authenticated as {info.authenticated})")
    date = email.utils.formatdate(now, localtime=True)
    lines.append(f"\tfor <{recipient}>; {date}" if recipient else f"\t; {date}")
    return "\r\n".join(lines) + "\r\n"


def _path(mailbox) -> str:
    return mailbox.address if mailbox is not None else ""


@dataclass
class _Blob:
    """One stored variant of the message (local copy with Return-Path, or the queue copy)."""

    prefix: bytes  # the variant's own fields; the rest (Received + message) is shared
    writer: object = None
    ref: object = None


@dataclass
class _Outcome:
    address: str
    ok: bool
    reply: Reply | None = None
    rcpt: object = None  # the envelope recipient it came from (for DSN NOTIFY/ORCPT)


class IncomingMessage:
    """One message in flight from an SMTP session to mailboxes and the queue."""

    def __init__(self, server, router: Router, info: ClientInfo, envelope, *, hooks=()):
        self.server = server
        self.router = router
        self.info = info
        self.envelope = envelope
        self.hooks = list(hooks)
        self.queue_id = new_queue_id()  # one id from the SMTP log line and Received field to the queue's lines
        self.size = 0
        self._blobs: dict[str, _Blob] = {}
        self._common = b""
        self._aborted = False
        cfg = server.config
        add = {}
        if info.submission:
            # RFC 6409 8.2 / 8.3: a submission server may add a missing Message-ID and Date.
            add["message-id"] = f"Message-ID: <{secrets.token_hex(12)}@{cfg.hostname}>\r\n"
            add["date"] = f"Date: {email.utils.formatdate(localtime=True)}\r\n"
        self.scanner = HeaderScanner(add)

    # ------------------------------------------------------------------ routes

    def _routes(self) -> list[tuple[Route, object]]:
        """(route, original recipient) pairs, duplicates removed."""
        seen, out = set(), []
        for rcpt in self.envelope.recipients:
            rr: RouteResult = rcpt.route
            for r in rr.routes:
                key = (r.kind, r.address)
                if key not in seen:
                    seen.add(key)
                    out.append((r, rcpt))
        return out

    def _local_prefix(self, routes) -> bytes:
        local = [r for r, _ in routes if r.kind == LOCAL]
        out = f"Return-Path: <{_path(self.envelope.reverse_path)}>\r\n"
        if len(local) == 1:
            out += f"Delivered-To: {local[0].address}\r\n"
        return out.encode("utf-8")

    # ------------------------------------------------------------------ streaming

    def start(self) -> None:
        routes = self._routes()
        rcpts = self.envelope.recipients
        cfg = self.server.config
        self._common = received_header(
            cfg.hostname, self.info, smtputf8=self.envelope.smtputf8, queue_id=self.queue_id,
            recipient=rcpts[0].mailbox.address if len(rcpts) == 1 else None,
            show_auth_user=cfg.smtp.received_show_auth_user).encode("utf-8")
        if any(r.kind == LOCAL for r, _ in routes):
            self._open("local", self._local_prefix(routes))
        if any(r.kind in (OUTGOING, RELAY) for r, _ in routes):
            self._open("queue", b"")

    def _open(self, kind: str, prefix: bytes) -> None:
        w = self.server.store.blobs.writer()
        w.write(prefix + self._common)
        self._blobs[kind] = _Blob(prefix, w)

    def write(self, data: bytes) -> None:
        self.size += len(data)
        out = self.scanner.feed(data)
        if out:
            for b in self._blobs.values():
                b.writer.write(out)

    def abort(self) -> None:
        self._aborted = True
        for b in self._blobs.values():
            if b.writer is not None and b.ref is None:
                b.writer.abort()

    # ------------------------------------------------------------------ finishing

    def finish(self) -> defer.Deferred:
        """Fires with the final Reply; never errbacks (failures become 451 4.3.0)."""
        d = defer.ensureDeferred(self._finish())

        def failed(f):
            log.failure("smtp delivery {qid} failed", f, qid=self.queue_id)
            self.abort()
            return codes.LOCAL_ERROR

        return d.addErrback(failed)

    async def _finish(self) -> Reply:
        rest = self.scanner.finish()
        if rest:
            for b in self._blobs.values():
                b.writer.write(rest)
        limit = self.server.config.limits.smtp_max_received_headers
        if self.scanner.received > limit:
            self.abort()
            return codes.LOOP_DETECTED  # RFC 5321 6.3: too many Received fields = a loop
        pools, reactor = self.server.pools, self.server.reactor
        parsed = None
        for kind, b in self._blobs.items():
            if kind == "local" and not self.hooks:
                # One trip to a worker thread: make the blob and parse it (hooks may rewrite it, then parse later).
                b.ref, parsed = await run_in(reactor, pools.blob, _finish_and_parse, b.writer, self.server.store.blobs)
            else:
                b.ref = await run_in(reactor, pools.blob, b.writer.finish)
        routes = self._routes()
        if self.hooks:
            verdict = await hooks_mod.run_hooks(self.hooks, self._context())
            if verdict.action != hooks_mod.ACCEPT:
                return verdict.reply
            if verdict.recipients is not None:
                routes = await self._reroute(verdict.recipients)
                if not routes:
                    return codes.TRANSACTION_FAILED.with_text("Redirect target could not be routed")
            await self._rebuild(routes, verdict.add_headers)
        else:
            verdict = hooks_mod.Verdict()
        outcomes = await self._deliver(routes, verdict, parsed)
        for o in outcomes:
            # The mail log: one line per recipient of every message taken in.
            log.info("smtp {qid} from=<{sender}> to=<{rcpt}> size={size} client={ip} {result}", qid=self.queue_id,
                     sender=_path(self.envelope.reverse_path), rcpt=o.address, size=self.size, ip=self.info.ip,
                     result="ok" if o.ok else f"failed: {o.reply.code} {o.reply.enhanced}" if o.reply else "failed")
        if any(o.ok for o in outcomes) and not all(o.ok for o in outcomes):
            # The 250 will cover every recipient, so the ones that failed are reported to the sender now, before
            # the reply (RFC 5321 6.1: once accepted, a failure must be reported).
            await self._report_failures([o for o in outcomes if not o.ok])
        return self._reply(outcomes)

    async def _report_failures(self, failed: list[_Outcome]) -> None:
        from mailserver.delivery import dsn as dsnlib
        from mailserver.delivery.reports import send_report

        sender = _path(self.envelope.reverse_path)
        rows = []
        for o in failed:
            params = getattr(o.rcpt, "params", None)
            notify = ",".join(params.notify) if params else ""
            if not dsnlib.wants_report(sender, notify, dsnlib.FAILURE):
                continue
            reply = o.reply or codes.LOCAL_ERROR
            rows.append(dsnlib.ReportRecipient(o.address, "failed", reply.enhanced or "5.0.0",
                                               orcpt=params.orcpt if params else "", last_attempt=time.time(),
                                               reason=f"{reply.code} {reply.enhanced} {reply.lines[0]}"))
        if not rows:
            return
        blob = self._blobs.get("local") or self._blobs.get("queue")
        server = self.server
        head = await server.astore.read_blob(blob.ref.id, 0, dsnlib.HEADER_READ_MAX)
        raw = dsnlib.build_report(kind=dsnlib.FAILURE, reporting_mta=server.config.hostname, sender=sender,
                                  recipients=rows, original=dsnlib.split_header(head), original_is_full=False,
                                  envid=self.envelope.mail_params.envid, arrival=time.time())
        try:
            await send_report(server, sender, raw)
        except Exception:
            log.failure("failure report to {sender} could not be stored", sender=sender)

    def _context(self) -> hooks_mod.MessageContext:
        blob = self._blobs.get("local") or self._blobs.get("queue")
        astore = self.server.astore
        return hooks_mod.MessageContext(
            client_ip=self.info.ip, helo=self.info.helo, sender=_path(self.envelope.reverse_path),
            recipients=tuple(r.mailbox.address for r in self.envelope.recipients),
            authenticated=self.info.authenticated, submission=self.info.submission,
            tls=f"{self.info.tls_version} {self.info.tls_cipher}".strip(), blob_id=blob.ref.id, size=blob.ref.size,
            read=lambda start=0, end=None: astore.read_blob(blob.ref.id, start, end))

    async def _reroute(self, addresses) -> list[tuple[Route, object]]:
        out, seen = [], set()
        for addr in addresses:
            # A redirect is the server's own decision (a hook), so its targets may be outside our domains.
            rr = await run_in(self.server.reactor, self.server.pools.db_read, self.router.route, addr,
                              may_relay=True, check_quota=False)
            for r in rr.routes:
                if (r.kind, r.address) not in seen:
                    seen.add((r.kind, r.address))
                    out.append((r, None))
        return out

    async def _rebuild(self, routes, add_headers) -> None:
        """Make the stored variants match ``routes`` and carry ``add_headers`` (after a hook's tag/redirect)."""
        need = set()
        if any(r.kind == LOCAL for r, _ in routes):
            need.add("local")
        if any(r.kind in (OUTGOING, RELAY) for r, _ in routes):
            need.add("queue")
        extra = "".join(f"{k}: {v}\r\n" for k, v in add_headers).encode("utf-8")
        source = self._blobs.get("local") or self._blobs.get("queue")
        new: dict[str, _Blob] = {}
        for kind in need:
            prefix = self._local_prefix(routes) if kind == "local" else b""
            have = self._blobs.get(kind)
            if have is not None and have.prefix == prefix and not extra:
                new[kind] = have
                continue
            ref = await run_in(self.server.reactor, self.server.pools.blob, self._copy_blob, source, prefix + extra)
            new[kind] = _Blob(prefix + extra, None, ref)
        self._blobs = new

    def _copy_blob(self, source: _Blob, prefix: bytes):
        """New blob = ``prefix`` + ``source`` without its own prefix (blocking: blob pool)."""
        blobs = self.server.store.blobs
        w = blobs.writer()
        try:
            w.write(prefix)
            with blobs.open(source.ref.id) as f:
                f.seek(len(source.prefix))
                while chunk := f.read(1 << 20):
                    w.write(chunk)
            return w.finish()
        except BaseException:
            w.abort()
            raise

    async def _deliver(self, routes, verdict, parsed=None) -> list[_Outcome]:
        server = self.server
        outcomes: list[_Outcome] = []
        env = self.envelope
        local = [(r, rc) for r, rc in routes if r.kind == LOCAL]
        remote = [(r, rc) for r, rc in routes if r.kind in (OUTGOING, RELAY)]
        if remote:
            from storage.store import QueueRecipientSpec

            specs = []
            for r, rc in remote:
                params = rc.params if rc is not None else None
                orcpt = params.orcpt if params and params.orcpt else ""
                if not orcpt and rc is not None and rc.mailbox.address.lower() != r.address.lower():
                    orcpt = "rfc822;" + rc.mailbox.address  # RFC 3461 4.2: keep the original recipient
                specs.append(QueueRecipientSpec(r.address, orcpt, ",".join(params.notify) if params else "",
                                                r.relay_to))
            try:
                await server.astore.enqueue(
                    _path(env.reverse_path), self._blobs["queue"].ref, specs, envid=env.mail_params.envid,
                    ret=env.mail_params.ret, smtputf8=env.smtputf8, body_8bit=env.mail_params.body == "8BITMIME",
                    account_id=self.info.account_id, source="submission" if self.info.submission else "relay",
                    queue_id=self.queue_id)
                outcomes += [_Outcome(r.address, True) for r, _ in remote]
                server.kick_queue()
            except Exception:
                log.failure("enqueue failed")
                outcomes += [_Outcome(r.address, False, codes.LOCAL_ERROR) for r, _ in remote]
        if local:
            from storage.store import Delivery

            blob = self._blobs["local"]
            if parsed is None:
                parsed = await run_in(server.reactor, server.pools.blob, _read_and_parse, server.store.blobs,
                                      blob.ref.id)
            quota_reply = codes.OVER_QUOTA_PERM if server.config.smtp.over_quota_permanent else codes.OVER_QUOTA_TEMP
            ds = [server.astore.deliver(Delivery(r.account_id, blob.ref, parsed, verdict.mailbox or "INBOX", 0,
                                                 tuple(verdict.keywords), time.time()))
                  for r, _ in local]
            results = await defer.DeferredList(ds, consumeErrors=True)
            for (r, rc), (ok, res) in zip(local, results, strict=True):
                if ok and res.ok:
                    outcomes.append(_Outcome(r.address, True))
                elif ok and res.error == "overquota":
                    outcomes.append(_Outcome(r.address, False, quota_reply, rc))
                elif ok and res.error == "nonexistent":
                    outcomes.append(_Outcome(r.address, False, codes.UNKNOWN_USER, rc))
                else:
                    outcomes.append(_Outcome(r.address, False, codes.LOCAL_ERROR, rc))
        return outcomes

    def _reply(self, outcomes: list[_Outcome]) -> Reply:
        ok = [o for o in outcomes if o.ok]
        failed = [o for o in outcomes if not o.ok]
        if not failed:
            return codes.QUEUED.with_text(f"Message accepted as {self.queue_id}")
        if not ok:
            temp = [o for o in failed if o.reply.is_temporary]
            return (temp or failed)[0].reply
        detail = "; ".join(f"{o.address}: {o.reply.code} {o.reply.enhanced} {o.reply.lines[0]}" for o in failed)
        return codes.QUEUED.with_text(f"Message accepted as {self.queue_id} for {len(ok)} of {len(outcomes)} "
                                      f"recipients; not delivered: {detail}")


def _finish_and_parse(writer, blobs):
    ref = writer.finish()
    return ref, _read_and_parse(blobs, ref.id)


def _read_and_parse(blobs, blob_id: str) -> dict:
    """Parse the stored local copy (one trip to a worker thread: read + parse)."""
    from mailserver.mime import parse_message

    return parse_message(blobs.read(blob_id)).to_json()
