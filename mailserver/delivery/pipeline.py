"""The one way local mail comes in: every producer hands its message to :class:`Pipeline`.

Producers: SMTP (streamed while DATA/BDAT arrives), webmail sending (``delivery/submit.py``) and its Sent copy,
drafts, IMAP APPEND (single and MULTIAPPEND), delivery status reports (``delivery/reports.py``), the CLI import,
and tests.  Each builds a :class:`~mailserver.delivery.envelope.Request` and either streams the body
(``begin(request)``, ``write()``, ``finish()``), hands over a blob writer it already filled (``begin(request,
writer=w)``), or the whole message (``ingest(request, raw)``).  Then, for every message:

1. the body is stored once (blob pool; durable before any metadata names it) and parsed once when it has a local
   recipient; received mail first goes through the body transforms (``Pipeline.add_transform``, e.g. removing
   Authentication-Results that claim our host name) and gets its trace fields (``delivery/trace.py``: Received, Return-Path,
   Delivered-To, Message-ID/Date on submission) and its loop check (RFC 5321 6.3);
2. every final recipient runs the steps of ``delivery/stages.py`` in their fixed order: routing -> message checks
   -> the recipient's filter -> quota -> mailbox choice; a request with a placement (an exact mailbox) skips the
   filter stages;
3. a recipient a check quarantined (``Verdict.quarantine``) skips the filter, quota and mailbox steps: its copy
   is held (``Store.hold_quarantined``: one reference to the same blob per recipient, with the envelope, the
   client, the reason and every check's facts) and its outcome is ok (reason QUARANTINED); past the account's
   quarantine cap it goes to Junk with ``$Junk`` instead.  Only received mail for a local account can be held:
   a quarantine verdict for a placement (APPEND) or a remote recipient refuses it (550 5.7.1);
4. local copies are committed together through the group committer (``AsyncStore.deliver``; MULTIAPPEND through
   ``append_many``, all or nothing), outgoing recipients go to the durable queue;
5. the result is one :class:`~mailserver.delivery.envelope.Outcome` per final recipient, which the producer maps
   to its answer; when only some recipients could be served, the sender gets a failure report first (RFC 5321
   6.1: once the message is accepted, a failure must be reported).

``finish()`` never fails: an unexpected error is logged and every recipient is deferred with 4.3.0.
"""

from __future__ import annotations

import inspect
import time
from typing import Sequence

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from mailserver.delivery import envelope as ev
from mailserver.delivery.body import Body
from mailserver.delivery.envelope import IngestResult, Outcome, Recipient, Request
from mailserver.delivery.hooks import HookStage
from mailserver.delivery.router import LOCAL, OUTGOING, Route
from mailserver.delivery.stages import FILTER, MAILBOX, QUOTA, ROUTING, MessageInfo, NoFilter, Target, Verdict
from mailserver.delivery.trace import (
    HeaderScanner,
    final_delivery_fields,
    header_fields,
    missing_submission_fields,
    received_header,
)
from storage.queueid import new_queue_id
from storage.records import Delivery

log = Logger()

LOCAL_ERROR_TEXT = "Local error in processing, try again later"
#: The stage name a held recipient records instead of the filter, quota and mailbox steps.
HOLD = "quarantine"
JUNK_MAILBOX, JUNK_KEYWORD = "Junk", "$Junk"
#: The stages a placement no check applies to records (Ingest._finish_placed): after the store, and in the end.
_ROUTED, _PLACED = (ROUTING,), (ROUTING, QUOTA, MAILBOX)


class Pipeline:
    """Shared by every producer of one server (``services.pipeline``) or made by a tool with an InlineRunner."""

    def __init__(self, runner, config, router, blobs, *, hooks: Sequence = ()):
        self.runner = runner
        self.config = config
        self.router = router
        self.blobs = blobs
        self.checks: list = []  # registered check stages (delivery/stages.py Stage), in order
        self.filter = NoFilter()
        #: Message-level check hooks (``delivery/hooks.py``), run in this order before the registered checks.
        self.hooks: list = list(hooks)
        #: Body transforms (``delivery/stages.py`` Transform), applied in this order to received mail as it streams.
        self.transforms: list = []
        #: Told of each check verdict (``verdict(stage_name, verdict)``) and each result (``concluded(request,
        #: result)``): the server's metrics; None = nobody.
        self.observer = None
        #: Called with (account_id, blob_id) when a held copy is released as not spam: the classifier's training
        #: hook (no classifier exists yet).
        self.ham_trainers: list = []
        #: SRS and ARC for copies forwarded to other domains (``delivery/forward.py``); None = queued as received.
        self.forwarder = None

    def register(self, stage) -> None:
        """Add a check stage after the others."""
        self.checks.append(stage)

    def unregister(self, stage) -> None:
        self.checks.remove(stage)

    def add_transform(self, transform) -> None:
        """Add a body transform after the others (it applies to messages that start after this call)."""
        self.transforms.append(transform)

    def check_stages(self, request: Request) -> list:
        """The check stages that run for ``request``: the message hooks, then the registered checks; a request for
        an exact mailbox keeps only those that declare ``exact_mailbox``."""
        if request.exact_mailbox:  # the hooks are filters (HookStage.exact_mailbox is False): never made here
            return [s for s in self.checks if getattr(s, "exact_mailbox", False)] if self.checks else []
        hooks = tuple(self.hooks)
        return ([HookStage(hooks)] if hooks else []) + self.checks

    # ------------------------------------------------------------------ the door

    def begin(self, request: Request, *, writer=None) -> "Ingest":
        """A message to stream in (``write``/``abort``/``finish``), or one already in ``writer``."""
        return Ingest(self, request, writer=writer)

    def ingest(self, request: Request, raw: bytes) -> defer.Deferred:
        """A whole message; fires with its IngestResult."""
        return Ingest(self, request, raw=raw).finish()

    def finish_together(self, ingests: Sequence["Ingest"]) -> defer.Deferred:
        """Several placements into one mailbox, all or none (RFC 3502 MULTIAPPEND); fires with their results."""
        for i in ingests:
            i._arrive()  # committed by append_many, not the group committer
        return defer.ensureDeferred(_together(list(ingests)))

    def release(self, item, *, by: str, mailbox: str = "INBOX") -> defer.Deferred:
        """Deliver the held copy ``item`` (a storage.quarantine.QuarantineItem) through the delivery steps only
        (quota, mailbox, commit; no check runs again), byte-exact as it was held; fires with its Outcome.  The
        store removes the held copy in the delivery's own transaction, so of two releases (any nodes) one
        delivers and the other gets 5.0.0 "no longer held".  The classifier hooks learn it as not spam."""
        return defer.ensureDeferred(self._release(item, by, mailbox))

    async def _release(self, item, by: str, mailbox: str) -> Outcome:
        from storage.store import NotFound, QuotaExceeded

        stages = (QUOTA, MAILBOX)
        try:
            changed = await self.runner.call_store("release_quarantined", item.id, mailbox)
        except NotFound:
            return Outcome(item.recipient, ev.REFUSED, "5.0.0", "No longer held (released or deleted)",
                           ev.NONEXISTENT, stages=stages)
        except QuotaExceeded:
            return Outcome(item.recipient, ev.DEFERRED, "4.2.2", "Mailbox full", ev.OVERQUOTA, stages=stages)
        _, res = changed.value
        log.info("quarantine release {id} {qid} for <{rcpt}> by {by}: uid {uid}", id=item.id, qid=item.queue_id,
                 rcpt=item.recipient, by=by, uid=res.uid)
        for train in self.ham_trainers:
            try:
                train(item.account_id, item.blob_id)
            except Exception:
                log.failure("classifier training hook failed")
        return Outcome(item.recipient, ev.DELIVERED, "2.0.0", "delivered", mailbox_id=res.mailbox_id, uid=res.uid,
                       uid_validity=res.uid_validity, stages=stages)


class Ingest:
    """One message on its way in."""

    def __init__(self, pipeline: Pipeline, request: Request, *, writer=None, raw: bytes | None = None):
        self.pipeline = pipeline
        self.request = request
        self._expected = True  # announced to the group committer (runner.expect) until _arrive
        pipeline.runner.expect()
        self.queue_id = new_queue_id()  # one id from the log line and Received field to the queue's lines
        self.size = len(raw) if raw is not None else 0
        self.scanner: HeaderScanner | None = None
        # A placement's per-message state is made only when a step needs it: a placement no check applies to
        # (deliver_raw, drafts, APPEND) goes through _finish_placed, which needs none of it, and every container
        # a message keeps while it waits for the blob pool and the commit is one more object for each garbage
        # collection of the reactor's young generation to walk (hundreds of messages are in flight in a fill).
        self._filters: list | tuple = ()  # the transforms' stream filters for this message, in order
        self._trace_len = 0  # the Received field in front of the message as received (every form has it)
        self._targets: list[Target] = []
        self._writer = writer
        self._used: set[str] | None = None  # the blobs handed to a commit (delivery, queue, quarantine); _prepare
        self._multi = False  # one of a MULTIAPPEND (finish_together): every form is made before the commit
        #: The placement's target is not in _targets yet (made by _place_target when a step needs it).
        self._unplaced = request.placement is not None
        if self._unplaced:
            self._seen: set[tuple[str, str]] | None = None
            self._unrouted: list[Recipient] | tuple = ()
            self._early: list[Outcome] | tuple = ()  # recipients that failed routing (none: it is the route)
        else:
            self._seen = set()
            self._unrouted = []
            self._early = []
            for rcpt in request.envelope.recipients:
                if rcpt.route is None:
                    self._unrouted.append(rcpt)
                else:
                    self._add_routes(rcpt.route.routes, rcpt)
        client = request.client
        if client is not None:
            if request.envelope is None:
                raise ValueError("trace fields need an envelope")
            cfg = pipeline.config
            self._filters = [t.start(request) for t in pipeline.transforms if t.applies(request)]
            self.scanner = HeaderScanner(missing_submission_fields(cfg.hostname) if client.submission else {})
            rcpts = request.envelope.recipients
            common = received_header(cfg.hostname, client, smtputf8=request.envelope.smtputf8, queue_id=self.queue_id,
                                     recipient=rcpts[0].address if len(rcpts) == 1 else None,
                                     show_auth_user=cfg.smtp.received_show_auth_user).encode("utf-8")
            self._trace_len = len(common)
            prefixes = []
            if self._unrouted or any(t.route.kind == LOCAL for t in self._targets):
                prefixes.append(self._local_base())
            if any(t.route.kind != LOCAL for t in self._targets):
                prefixes.append(b"")
            self.body = Body.streaming(pipeline.blobs, prefixes, common)
        elif writer is not None:
            self.body = Body.adopt(pipeline.blobs, writer)
        elif raw is not None:
            self.body = Body.whole(pipeline.blobs, raw)
        else:
            self.body = Body.streaming(pipeline.blobs, [b""], b"")
        if raw is not None and self.scanner is not None:
            self.size = 0
            self.write(raw)  # received mail handed over whole (webmail sending): stamped like a stream

    # ------------------------------------------------------------------ streaming

    def write(self, data: bytes) -> None:
        self.size += len(data)
        self._pass_on(data, 0)

    def _pass_on(self, data: bytes, first: int) -> None:
        """``data`` through the transforms from ``first`` on, the header scanner, into the body."""
        for f in self._filters[first:]:
            data = f.feed(data)
        out = self.scanner.feed(data) if self.scanner is not None and data else data
        if out:
            self.body.write(out)

    def _arrive(self) -> None:
        """This message will submit no more copies to the group committer (once; see runner.expect)."""
        if self._expected:
            self._expected = False
            self.pipeline.runner.arrived()

    def _arrived(self, result):
        self._arrive()
        return result

    def abort(self) -> None:
        self._arrive()
        self.body.abort()

    def finish(self) -> defer.Deferred:
        """Fires with the IngestResult once everything it reports is durable; never errbacks."""
        if self.request.placement is not None and not self.pipeline.check_stages(self.request):
            return self._finish_placed()  # never errbacks: each step's failure becomes the result
        return defer.ensureDeferred(self._finish()).addErrback(self._failed).addBoth(self._arrived)

    def _finish_placed(self) -> defer.Deferred:
        """The steps of :meth:`_finish` for a placement that no check stage applies to (APPEND, drafts, Sent copies,
        imports, ``deliver_raw``), as callbacks: routing is the placement, store and parse, no filter stages,
        quota and mailbox, commit, the result.  Same outcomes and recorded stages as the general way, without its
        coroutine steps, which cost more on the reactor thread than the rest of such a message: the store-and-parse
        trip is shared with the placements of the same reactor turn (``runner.blob_grouped``) and the result fires
        one Deferred, not a chain of them."""
        if self._writer is not None:
            self.size = self._writer.size
        self._done = result = defer.Deferred()
        self._placed_stages = _ROUTED
        # No client, so no Return-Path/Delivered-To prefix: the form is parsed as stored.  Bound methods, not
        # closures: fewer objects per message in flight (see __init__).
        self.pipeline.runner.blob_grouped(self.body.finish, b"", size=self.size).addCallbacks(
            self._placed_stored, self._placed_failed)
        return result

    def _placed_stored(self, _) -> None:
        try:
            body, p = self.body, self.request.placement
            body.drop_contents()
            self._placed_stages = _PLACED
            form = body.forms[0]  # a placement has one form, unprefixed, parsed by finish()
            self.pipeline.blobs.forget((form.ref.id,))
            mailbox = p.mailbox if p.mailbox_id is not None else (p.mailbox or "INBOX")
            self._arrive()
            d = self.pipeline.runner.deliver(Delivery(p.account_id, form.ref, form.parsed, mailbox, p.flags,
                                                      tuple(p.keywords), p.internal_date, self.request.check_quota,
                                                      p.mailbox_id))
        except Exception:
            self._placed_failed(Failure())
            return
        d.addCallbacks(self._placed_concluded, self._placed_concluded, (True,), None, (False,))

    def _placed_concluded(self, res, ok: bool) -> None:
        try:
            if ok and res.ok:
                outcome = Outcome("", ev.DELIVERED, "2.0.0", "delivered", "", None, stages=_PLACED,
                                  mailbox_id=res.mailbox_id, uid=res.uid, uid_validity=res.uid_validity)
            else:
                outcome = self._delivered(self._placed_target(), ok, res)
            out = self._result([outcome])
        except Exception:
            self._placed_target()
            out = self._failed(Failure())
        self._done.callback(out)

    def _placed_failed(self, f) -> None:
        self._arrive()
        if not self._done.called:
            self._placed_target()
            self._done.callback(self._failed(f))

    def _placed_target(self) -> Target:
        """The placement's Target as :meth:`_finish_placed` has taken it so far (for the outcomes other than
        delivered, which the general methods make)."""
        self._place_target()
        t = self._targets[0]
        t.stages = list(self._placed_stages)
        if self._placed_stages is _PLACED:
            t.check_quota = self.request.check_quota
            if t.mailbox_id is None:
                t.mailbox = t.mailbox or "INBOX"
        return t

    async def _finish(self) -> IngestResult:
        if await self._prepare():
            outcomes = await self._commit()
        else:
            outcomes = self._closed_outcomes()
        result = await self._conclude(outcomes)
        self.body.release()
        await self._drop_unused()
        return result

    def _unused(self) -> list[str]:
        used = self._used or ()
        return [f.ref.id for f in self.body.forms if f.ref is not None and f.stored and f.ref.id not in used]

    async def _drop_unused(self) -> None:
        """After the commit: delete the forms no committed row names (e.g. the streamed form when every copy got a
        check's fields, or a message refused or deferred after DATA).  Content stored again meanwhile or named
        elsewhere is kept (``Store.discard_blobs``); whatever stays is the collector's (its orphan sweep)."""
        p = self.pipeline
        p.blobs.forget(self._used)
        unused = self._unused()
        if not unused:
            return
        try:
            await p.runner.call_store("discard_blobs", unused)
        except Exception:
            log.failure("discarding the unused bodies of {qid} failed", qid=self.queue_id)

    def _failed(self, f) -> IngestResult:
        log.failure("delivery {qid} failed", f, qid=self.queue_id)
        self.abort()
        unused = self._unused()
        if unused:  # whatever committed is named by its row: discard_blobs keeps it
            self.pipeline.runner.call_store("discard_blobs", unused).addErrback(
                lambda f2: log.failure("discarding the bodies of {qid} failed", f2, qid=self.queue_id))
        return IngestResult(self.queue_id, self.size, tuple(self._all_failed(ev.DEFERRED, "4.3.0", LOCAL_ERROR_TEXT,
                                                                             ev.ERROR)))

    # ------------------------------------------------------------------ targets

    def _add_routes(self, routes, rcpt: Recipient | None, like: Target | None = None) -> int:
        added = 0
        for r in routes:
            key = (r.kind, r.address)
            if key in self._seen:
                continue
            self._seen.add(key)
            t = Target(r, rcpt)
            if like is not None:  # a redirect's target keeps the tags of the recipient it replaces
                t.add_headers, t.keywords, t.mailbox = list(like.add_headers), list(like.keywords), like.mailbox
                t.stages = list(like.stages)
            self._targets.append(t)
            added += 1
        return added

    def _local_base(self) -> bytes:
        """The fields every local copy starts with: none, or Return-Path and Delivered-To for received mail."""
        if self.request.client is None:
            return b""
        local = [t for t in self._targets if t.route.kind == LOCAL]
        only = local[0].address if len(local) == 1 and not self._unrouted else None
        return final_delivery_fields(self.request.envelope.sender, only)

    def _place_target(self) -> None:
        """Put the placement's target into ``_targets`` (once; routing is the placement itself)."""
        if self._unplaced:
            self._unplaced = False
            p = self.request.placement
            self._targets.append(Target(Route(LOCAL, "", p.account_id), mailbox=p.mailbox, mailbox_id=p.mailbox_id,
                                        flags=p.flags, keywords=list(p.keywords), internal_date=p.internal_date))

    def _all_failed(self, kind, status, text, reason) -> list[Outcome]:
        self._place_target()
        out = [Outcome(t.address, kind, status, text, reason, t.recipient, stages=tuple(t.stages))
               for t in self._targets]
        out += [Outcome(r.address, kind, status, text, reason, r) for r in self._unrouted]
        out.extend(self._early)
        return out

    def _closed_outcomes(self) -> list[Outcome]:
        out = [t.outcome for t in self._targets if t.outcome is not None]
        out.extend(self._early)
        return out

    # ------------------------------------------------------------------ the steps

    async def _prepare(self) -> bool:
        """Store, parse and run every recipient's steps; False when no recipient is left open."""
        p, req = self.pipeline, self.request
        self._place_target()
        if self._seen is None:
            self._seen = set()
        if self._used is None:
            self._used = set()
        if self._writer is not None:
            self.size = self._writer.size
        for i, f in enumerate(self._filters):
            self._pass_on(f.finish(), i + 1)  # what a filter still held goes through the ones after it
        if self.scanner is not None:
            rest = self.scanner.finish()
            if rest:
                self.body.write(rest)
            if self.scanner.received > p.config.limits.smtp_max_received_headers:
                self.abort()  # RFC 5321 6.3: too many Received fields = a loop
                self._early = self._all_failed(ev.REFUSED, "5.4.6", "Routing loop detected", ev.LOOP)
                self._targets, self._unrouted = [], []
                return False
        # 1. routing: recipients the producer did not route (reports) are routed here.
        for rcpt in self._unrouted:
            rr = await p.runner.read(p.router.route, rcpt.address, may_relay=req.may_relay, check_quota=False)
            if not rr.routes:
                self._early.append(Outcome(rcpt.address, ev.REFUSED, "5.1.1", rr.error or "no route", ev.NO_ROUTE,
                                           rcpt, stages=(ROUTING,)))
            else:
                self._add_routes(rr.routes, rcpt)
        self._unrouted = []
        for t in self._targets:
            t.stages.append(ROUTING)
        # The body: parsed once when there is a local copy; stored now, or, when checks will read it and it is
        # small, held in memory and stored after them (once per form a recipient uses, with the checks' fields).
        has_local = any(t.route.kind == LOCAL for t in self._targets)
        stages = p.check_stages(req)
        # Grouped: the messages whose data ended in this reactor turn share one trip to the blob pool; the reads
        # the checks will want (``Stage.prefetch``) are made in that trip too.
        will_check = self._will_check(stages)
        reads = self._prefetches(stages) if will_check and has_local else None
        base = self._local_base() if has_local else None
        if reads:
            fetched = await p.runner.blob_grouped(_finish_reading, self.body.finish, base, will_check, reads,
                                                  size=self.size)
        else:
            fetched = None
            await p.runner.blob_grouped(self.body.finish, base, will_check, size=self.size)
        if not self._targets:
            return False
        filtering = not req.exact_mailbox
        message = self._message_info() if stages or filtering else None
        if fetched and message is not None:
            message.memo.update(fetched)
        # 2. message checks, each with a verdict per recipient.
        for stage in stages:
            applies = getattr(stage, "applies", None)
            if applies is not None and not applies(message):
                continue  # not this kind of message (e.g. a submission-only check on mail from the MX)
            for t in self._targets:
                if t.open:
                    t.stages.append(stage.name)
                    verdict = stage.check(message, t)
                    if inspect.isawaitable(verdict) or isinstance(verdict, defer.Deferred):
                        verdict = await verdict
                    t.apply(verdict, reason=ev.CHECKED)
                    if p.observer is not None:
                        p.observer.verdict(stage.name, verdict)
        if stages:
            await self._redirect()
            for t in self._targets:
                if t.open and t.quarantine is not None and (req.exact_mailbox or t.route.kind != LOCAL):
                    # Only received mail for an account can be held; anything else a check would hold is refused.
                    t.apply(Verdict.refuse("5.7.1", f"Message refused: {t.quarantine[1] or t.quarantine[0]}",
                                           reason=ev.VIRUS if t.quarantine[0] == "virus" else ""), reason=ev.CHECKED)
                elif t.open and t.quarantine is not None:
                    t.stages.append(HOLD)
        # 3. the recipient's filter (skipped for an exact mailbox and for held copies).
        if filtering:
            copies = []
            for t in self._targets:
                if t.open and t.route.kind == LOCAL and t.quarantine is None:
                    t.stages.append(FILTER)
                    verdict = p.filter.check(message, t)
                    if inspect.isawaitable(verdict) or isinstance(verdict, defer.Deferred):
                        verdict = await verdict
                    t.apply(verdict, reason=ev.CHECKED)
                    copies += t.more_copies()  # a filter's further copies (Sieve: fileinto twice) deliver too
            self._targets += copies
        # 4. quota (enforced by the commit's admission) and 5. the mailbox.
        for t in self._targets:
            if t.open and t.quarantine is None:
                t.stages.append(QUOTA)
                t.check_quota = req.check_quota
                if t.route.kind == LOCAL:
                    t.stages.append(MAILBOX)
                    if t.mailbox_id is None:
                        t.mailbox = t.mailbox or "INBOX"
        await self._make_forms()
        self.body.drop_contents()
        return any(t.open for t in self._targets)

    def _will_check(self, stages) -> bool:
        """Whether any of ``stages`` may run for this message (then the body is held, not stored, until they
        have).  Only a cost matters here: a stage that ``applies`` after all still reads the held or stored body,
        and a body held for none is stored with its commit all the same.  A stage whose ``applies`` depends on what earlier
        ones found (the spam policy's score card) counts as not applying: the scorers that feed it have their own."""
        if not stages:
            return False
        probe = self._probe()
        return any(getattr(s, "applies", None) is None or s.applies(probe) for s in stages)

    def _probe(self) -> MessageInfo:
        """The message as far as it is known before its body is stored (no body to read)."""
        req = self.request
        return MessageInfo(req.producer, self.queue_id, req.envelope, req.client, self.size, "", None, _no_read)

    def _prefetches(self, stages) -> list:
        """The reads that ``stages`` which apply will want (``Stage.prefetch``), one per key."""
        out: list = []
        probe = None
        for s in stages:
            prefetch = getattr(s, "prefetch", None)
            if prefetch is None:
                continue
            if probe is None:
                probe = self._probe()
            applies = getattr(s, "applies", None)
            if applies is not None and not applies(probe):
                continue
            read = prefetch(probe)
            if read is not None and all(read[0] != r[0] for r in out):
                out.append(read)
        return out

    def _message_info(self) -> MessageInfo:
        form = self.body.find(self._local_base()) or self.body.forms[0]
        read_blob = self.pipeline.runner.read_blob

        def read(start=0, end=None):
            content = form.content  # in memory (at most SPOOL_IN_MEMORY): no trip to the blob pool
            if content is not None:
                return defer.succeed(content[start:] if end is None else content[start:max(start, end)])
            return read_blob(form.ref.id, start, end)

        return MessageInfo(self.request.producer, self.queue_id, self.request.envelope, self.request.client,
                           self.size, form.ref.id, form.parsed, read, offset=len(form.prefix) + self._trace_len)

    async def _redirect(self) -> None:
        """Replace redirected recipients by their targets, routed again (a check's decision: they may be remote)."""
        redirected = [t for t in self._targets if t.open and t.redirect]
        if not redirected:
            return
        for t in redirected:
            self._targets.remove(t)
            self._seen.discard((t.route.kind, t.address))
        p = self.pipeline
        for t in redirected:
            added = 0
            for address in t.redirect:
                rr = await p.runner.read(p.router.route, address, may_relay=True, check_quota=False)
                added += self._add_routes(rr.routes, None, like=t)
            if not added and not any(x.route.kind == t.route.kind and x.address == t.address for x in self._targets):
                t.outcome = Outcome(t.address, ev.REFUSED, "5.0.0", "Redirect target could not be routed",
                                    ev.NO_ROUTE, t.recipient, stages=tuple(t.stages))
                self._targets.append(t)

    def _prefix(self, t: Target) -> bytes:
        base = self._local_base() if t.route.kind == LOCAL else b""
        return base + header_fields(t.add_headers) if t.add_headers else base

    def _by_committer(self, t: Target) -> bool:
        """Whether ``t``'s copy is made (and stored) by the group committer's flush (:meth:`_deliver`) rather than
        before the commit: a local copy that is delivered, not held, outside a MULTIAPPEND."""
        return t.route.kind == LOCAL and t.quarantine is None and not self._multi

    def _forms_missing(self) -> list[tuple[bytes, bool]]:
        """The (prefix, parsed) forms that open recipients need before the commit and the body lacks (or has
        unparsed); the committer makes the delivered local copies'."""
        need: dict[bytes, bool] = {}
        for t in self._targets:
            if t.open and t.form is None and not self._by_committer(t):
                prefix = self._prefix(t)
                need[prefix] = need.get(prefix, False) or t.route.kind == LOCAL
        return [(prefix, parsed) for prefix, parsed in need.items()
                if (f := self.body.find(prefix)) is None or (parsed and f.parsed is None)]

    async def _make_forms(self) -> None:
        """Make sure the form of every open recipient the committer does not serve exists (and local ones are
        parsed), a copy only when one differs, and is stored: a form held in memory while the checks ran is
        written now, once (one trip to the blob pool for both)."""
        missing = self._forms_missing()
        body = self.body
        before = [t for t in self._targets if t.open and not self._by_committer(t)]
        own = [t.form for t in before if t.form is not None]  # the filter's (stored already)
        used = {self._prefix(t) for t in before if t.form is None}
        if not missing and all(f.stored for f in own) and all(f.stored for f in body.forms if f.prefix in used):
            return

        def make():
            for prefix, parsed in missing:
                body.form(prefix, parsed)
            body.store([f for f in body.forms if f.prefix in used] + own)

        await self.pipeline.runner.blob(make)

    # ------------------------------------------------------------------ commit

    async def _commit(self) -> list[Outcome]:
        held = [t for t in self._targets if t.open and t.route.kind == LOCAL and t.quarantine is not None]
        local = [t for t in self._targets if t.open and t.route.kind == LOCAL and t.quarantine is None]
        remote = [t for t in self._targets if t.open and t.route.kind != LOCAL]
        outcomes: list[Outcome] = []
        if remote:
            outcomes += await self._enqueue(remote)
        if held:
            held_outcomes, local_more = await self._hold(held)
            outcomes += held_outcomes
            local += local_more
        if local:
            outcomes += await self._deliver(local)
        return outcomes + self._closed_outcomes()

    def _source(self) -> str:
        if self.request.producer == ev.REPORT:
            return "bounce"
        client = self.request.client
        return "submission" if client is not None and client.submission else "relay"

    async def _enqueue(self, remote: list[Target]) -> list[Outcome]:
        from storage.store import QueueRecipientSpec

        env, client, runner = self.request.envelope, self.request.client, self.pipeline.runner
        groups: dict[tuple[bytes, str], list[Target]] = {}
        for t in remote:
            groups.setdefault((self._prefix(t), self._forwarded_by(t)), []).append(t)
        outcomes = []
        for n, ((prefix, by), group) in enumerate(groups.items()):
            qid = self.queue_id if n == 0 else new_queue_id()
            sender, ref = env.sender, self.body.find(prefix).ref
            if by:
                try:
                    sender, ref = await self._forward(prefix, by)
                except Exception:
                    log.failure("forwarding {qid}: SRS/ARC failed; queued as received", qid=qid)
            self._used.add(ref.id)
            specs = []
            for t in group:
                rc = t.recipient
                orcpt = rc.orcpt if rc is not None else ""
                if not orcpt and rc is not None and rc.address.lower() != t.address.lower():
                    orcpt = "rfc822;" + rc.address  # RFC 3461 4.2: keep the original recipient
                specs.append(QueueRecipientSpec(t.address, orcpt, ",".join(rc.notify) if rc is not None else "",
                                                t.route.relay_to))
            try:
                await runner.enqueue(sender, ref, specs, envid=env.envid, ret=env.ret,
                                     smtputf8=env.smtputf8, body_8bit=env.body == "8BITMIME",
                                     account_id=client.account_id if client is not None else None,
                                     source=self._source(), queue_id=qid)
            except Exception:
                log.failure("enqueue failed")
                outcomes += [self._outcome(t, ev.DEFERRED, "4.3.0", LOCAL_ERROR_TEXT, ev.ERROR) for t in group]
                continue
            runner.kick_queue()
            outcomes += [self._outcome(t, ev.QUEUED, "2.0.0", f"queued as {qid}") for t in group]
        return outcomes

    def _forwarded_by(self, t: Target) -> str:
        """The address of ours that forwards ``t`` to another domain ("" when ``t`` is not a forward): the Sieve
        redirect's account, or the alias (catch-all, subaddress) the recipient was expanded from."""
        if self.pipeline.forwarder is None or t.route.kind != OUTGOING:
            return ""
        if self.request.forwarded_by:
            return self.request.forwarded_by
        rc = t.recipient
        if rc is not None and rc.address.lower() != t.address.lower():
            return rc.address
        return ""

    async def _forward(self, prefix: bytes, by: str):
        """(envelope sender, blob) of a forwarded copy: SRS for the sender, an ARC set in front when sealed."""
        p = self.pipeline
        fw, runner = p.forwarder, p.runner
        sender = await runner.read(fw.sender_for, self.request.envelope.sender)
        form = self.body.find(prefix)
        if not fw.sealing:
            return sender, form.ref
        raw = await runner.blob(p.blobs.read, form.ref.id)
        arc = await runner.cpu(fw.seal, raw, by)
        if not arc:
            return sender, form.ref
        sealed = await runner.blob(self.body.form, arc + prefix, False)
        return sender, sealed.ref

    def _hold_spec(self, t: Target, now: float):
        from storage.quarantine import HoldSpec

        req, form = self.request, t.form or self.body.find(self._prefix(t))
        env, client = req.envelope, req.client
        envelope = {"sender": env.sender, "recipients": [r.address for r in env.recipients], "size": env.size,
                    "body": env.body, "smtputf8": env.smtputf8, "envid": env.envid, "ret": env.ret,
                    "original_recipient": t.recipient.address if t.recipient is not None else ""}
        client_facts = {} if client is None else {
            "ip": client.ip, "helo": client.helo, "esmtp": client.esmtp, "tls_version": client.tls_version,
            "tls_cipher": client.tls_cipher, "authenticated": client.authenticated, "submission": client.submission}
        reason, text = t.quarantine
        return HoldSpec(t.route.account_id, form.ref, form.parsed, t.address, env.sender, envelope, client_facts,
                        reason, text, [f.as_json() for f in t.facts], self.queue_id, now,
                        now + self.pipeline.config.quarantine.retention_for(t.address))

    async def _hold(self, held: list[Target]) -> tuple[list[Outcome], list[Target]]:
        """Hold these recipients' copies; those over their account's quarantine cap go to Junk (returned)."""
        now = time.time()
        specs = [self._hold_spec(t, now) for t in held]
        self._used.update(s.blob.id for s in specs)
        try:
            ids = await self.pipeline.runner.call_store("hold_quarantined", specs,
                                                        self.pipeline.config.quarantine.max_per_account)
        except Exception:
            log.failure("holding a quarantined copy failed")
            return [self._outcome(t, ev.DEFERRED, "4.3.0", LOCAL_ERROR_TEXT, ev.ERROR) for t in held], []
        outcomes, junk = [], []
        for t, item_id in zip(held, ids, strict=True):
            if item_id is None:
                log.warn("quarantine of {rcpt} is full: {qid} goes to Junk", rcpt=t.address, qid=self.queue_id)
                t.quarantine = None
                t.mailbox = JUNK_MAILBOX
                t.keywords += [JUNK_KEYWORD] if JUNK_KEYWORD not in t.keywords else []
                t.stages += [QUOTA, MAILBOX]
                junk.append(t)
                continue
            log.info("quarantine hold {id} {qid} for <{rcpt}>: {reason} ({text})", id=item_id, qid=self.queue_id,
                     rcpt=t.address, reason=t.quarantine[0], text=t.quarantine[1])
            outcomes.append(self._outcome(t, ev.DELIVERED, "2.0.0", f"quarantined as {item_id}", ev.QUARANTINED))
        return outcomes, junk

    def _outcome(self, t: Target, kind: str, status: str, text: str, reason: str = "", **kw) -> Outcome:
        return Outcome(t.address, kind, status, text, reason, t.recipient, stages=tuple(t.stages), **kw)

    def _over_quota(self, t: Target) -> Outcome:
        if self.pipeline.config.smtp.over_quota_permanent:
            return self._outcome(t, ev.REFUSED, "5.2.2", "Mailbox full", ev.OVERQUOTA)
        return self._outcome(t, ev.DEFERRED, "4.2.2", "Mailbox full", ev.OVERQUOTA)

    @staticmethod
    def _delivery(t: Target, form) -> Delivery:
        return Delivery(t.route.account_id, form.ref, form.parsed, t.mailbox, t.flags, tuple(t.keywords),
                        t.internal_date, t.check_quota, t.mailbox_id)

    def _delivered(self, t: Target, ok: bool, res) -> Outcome:
        """The outcome of one local copy from the group commit's DeliveryResult (``ok``) or Failure."""
        if ok and res.ok:
            return self._outcome(t, ev.DELIVERED, "2.0.0", "delivered", mailbox_id=res.mailbox_id, uid=res.uid,
                                 uid_validity=res.uid_validity)
        if ok and res.error == "overquota":
            return self._over_quota(t)
        if ok and res.error == "nonexistent":
            return self._outcome(t, ev.REFUSED, "5.1.1", "Mailbox does not exist", ev.NONEXISTENT)
        if not ok:
            log.failure("delivery to {rcpt} failed", res, rcpt=t.address)
        return self._outcome(t, ev.DEFERRED, "4.3.0", LOCAL_ERROR_TEXT, ev.ERROR)

    async def _deliver(self, local: list[Target]) -> list[Outcome]:
        """Commit the local copies.  A copy whose form is stored and parsed is handed over as it is; otherwise the
        group committer makes it in its flush (:meth:`_made`: the copy with the checks' fields, or the form held
        in memory, written there), so a checked message takes no extra trip to the blob pool."""
        runner = self.pipeline.runner
        ds = []
        self._arrive()  # its copies are submitted in this turn: a batch it would join need not wait for it
        for t in local:
            form = t.form or self.body.find(self._prefix(t))
            if form is not None and form.stored and form.parsed is not None:
                self._used.add(form.ref.id)
                ds.append(runner.deliver(self._delivery(t, form)))
            else:
                ds.append(runner.deliver(None, make=lambda t=t: self._made(t)))
        if len(ds) == 1:  # the common case (one account): no DeferredList
            try:
                results = [(True, await ds[0])]
            except Exception:
                results = [(False, Failure())]
        else:
            results = await defer.DeferredList(ds, consumeErrors=True)
        # A copy the commit did not take (over quota, no such mailbox) names no row: its blob goes with the
        # unused ones (Store.discard_blobs keeps whatever a row names after all).
        taken, left = set(), set()
        for t, (ok, res) in zip(local, results, strict=True):
            form = t.form or self.body.find(self._prefix(t))
            if form is not None and form.stored:
                (taken if ok and res.ok else left).add(form.ref.id)
        self._used -= left - taken
        return [self._delivered(t, ok, res) for t, (ok, res) in zip(local, results, strict=True)]

    def _made(self, t: Target) -> Delivery:
        """Blocking (the committer's flush, blob pool): ``t``'s form made, parsed and stored; its Delivery."""
        form = t.form or self.body.form(self._prefix(t), True)
        self.body.store([form])
        self._used.add(form.ref.id)
        return self._delivery(t, form)

    def _result(self, outcomes: list[Outcome]) -> IngestResult:
        """The IngestResult (told to the pipeline's observer), and the mail log's lines when the request asks."""
        result = IngestResult(self.queue_id, self.size, tuple(outcomes))
        req = self.request
        if self.pipeline.observer is not None:
            self.pipeline.observer.concluded(req, result)
        if req.log:
            client = req.client
            for o in outcomes:
                # The mail log: one line per recipient of every message taken in.
                log.info("{producer} {qid} from=<{sender}> to=<{rcpt}> size={size} client={ip} {result}",
                         producer=req.producer, qid=self.queue_id, sender=req.envelope.sender if req.envelope else "",
                         rcpt=o.address, size=self.size, ip=client.ip if client else "",
                         result="ok" if o.ok else f"failed: {o.status} {o.text}")
        return result

    async def _conclude(self, outcomes: list[Outcome]) -> IngestResult:
        result = self._result(outcomes)
        req = self.request
        if req.envelope is not None and result.accepted and result.failed:
            # The producer's positive answer will cover every recipient, so the ones that failed are reported to
            # the sender now, before it (RFC 5321 6.1: once accepted, a failure must be reported).
            from mailserver.delivery.reports import report_failures

            form = self.body.find(self._local_base()) or self.body.forms[0]
            await report_failures(self.pipeline, req.envelope, result.failed, form.ref.id)
        return result


def _no_read(start=0, end=None):
    raise RuntimeError("the body is not stored yet")


def _finish_reading(finish, parse_prefix, keep, reads) -> dict:
    """In the blob pool: ``finish`` the body, then make the checks' prefetched reads (``Stage.prefetch``).  A read
    that raises is left out: its stage reads on its own, as without the prefetch, and meets the error there."""
    finish(parse_prefix, keep)
    out = {}
    for key, f, args in reads:
        try:
            out[key] = f(*args)
        except Exception:  # noqa: BLE001 - only a shortcut lost; the stage's own read reports it
            continue
    return out


async def _together(ingests: list[Ingest]) -> list[IngestResult]:
    """MULTIAPPEND: prepare each message (its steps run as for one), then commit them in one transaction."""
    from storage.store import NotFound, QuotaExceeded

    try:
        for i in ingests:
            i._multi = True
            if not await i._prepare():
                raise _Refused(i)
        targets = [i._targets[0] for i in ingests]
        t0 = targets[0]
        if any(t.route.account_id != t0.route.account_id or t.mailbox_id != t0.mailbox_id or t.mailbox_id is None
               for t in targets):
            raise ValueError("finish_together needs placements into one mailbox (by id)")
        items = []
        for i, t in zip(ingests, targets, strict=True):
            form = i.body.find(i._prefix(t))
            i._used.add(form.ref.id)
            i.pipeline.blobs.forget([form.ref.id])
            items.append((form.ref, form.parsed, t.flags, tuple(t.keywords), t.internal_date))
        try:
            changed = await ingests[0].pipeline.runner.append_many(t0.route.account_id, t0.mailbox_id, items)
        except QuotaExceeded:
            return _all_as(ingests, lambda i: i._over_quota(i._targets[0]))
        except NotFound:
            return _all_as(ingests, lambda i: i._outcome(i._targets[0], ev.REFUSED, "5.1.1",
                                                         "Mailbox does not exist", ev.NONEXISTENT))
        uid_validity, uids = changed.value
        results = [await i._conclude([i._outcome(t, ev.DELIVERED, "2.0.0", "delivered", mailbox_id=t.mailbox_id,
                                                 uid=uid, uid_validity=uid_validity)])
                   for i, t, uid in zip(ingests, targets, uids, strict=True)]
        for i in ingests:
            i.body.release()
        return results
    except _Refused as e:
        first = e.ingest._closed_outcomes()[0]
        return _all_as(ingests, lambda i: first)  # RFC 3502: one refused message refuses them all
    except Exception:
        return [i._failed(Failure()) for i in ingests]


class _Refused(Exception):
    def __init__(self, ingest):
        self.ingest = ingest


def _all_as(ingests: list[Ingest], outcome_of) -> list[IngestResult]:
    for i in ingests:
        i.abort()
    return [IngestResult(i.queue_id, i.size, (outcome_of(i),)) for i in ingests]
