"""The outbound queue runner: claims due recipients, routes, delivers with our SMTP client, records, reports.

``QueueRunner(services)`` runs on the reactor thread; everything blocking runs in the server's pools (claims and results
in ``db_write``, DNS in ``dns``, bodies in ``blob``, DKIM and reports in ``cpu``).

Scheduling: a poll claims due recipient rows (:class:`storage.queue.QueueStore`, leased so several processes can share
one PostgreSQL), groups them per message, domain and route (several recipients of a domain in one transaction, at most
``queue.max_recipients_per_transaction``), and starts deliveries within ``queue.max_connections`` overall and
``queue.max_connections_per_domain`` per destination domain.  The next poll is due at the earliest ``next_attempt``
(at most :data:`POLL_INTERVAL` away); :meth:`QueueRunner.kick` polls at once (call it after an enqueue).

Retries: the n-th deferral waits ``min(retry_max, retry_first * 2**(n-1))`` with +/-:data:`JITTER` jitter; a recipient
still deferred ``give_up_after`` seconds after the message arrived fails.  A delay report goes once, after
``delay_warning_after``.

Crash safety: a recipient's result is recorded after its SMTP transaction ended.  A crash between the server's reply
to the end of data and that record makes the message go out again after restart: the duplicate RFC 1047 describes,
which SMTP itself cannot avoid.  Nothing is lost: an unrecorded recipient is still open in the database, and its lease
is cleared at start (SQLite, one queue process) or expires (PostgreSQL, ``[queue] lease`` seconds, renewed while a
delivery runs).  Reports are made before the results are recorded, so a crash may repeat a report but never lose one.
"""

from __future__ import annotations

import random
from collections import Counter, deque
from dataclasses import dataclass

from twisted.internet import defer
from twisted.logger import Logger

from mailserver.delivery import dsn as dsnlib
from mailserver.delivery.client import (
    DEFERRED,
    DELIVERED,
    FAILED,
    ClientPolicy,
    Envelope,
    RcptResult,
    Recipient,
    ServerReply,
    SmtpClientSession,
    Timeouts,
    local_reply,
)
from mailserver.delivery.connection import TlsSettings, run_session
from mailserver.delivery.dkim import DkimSigner
from mailserver.delivery.mx import Hop, RouteError, route_domain, route_host
from mailserver.dns import DnsResolver
from mailserver.threads import run_in
from storage.queue import Outcome, QueueStore, WorkItem

log = Logger()

#: Longest sleep between polls (other processes may enqueue without kicking us).
POLL_INTERVAL = 60.0
#: Lease on claimed recipients; renewed every LEASE/3 while the work runs.
LEASE = 300.0  # the default of [queue] lease
#: Relative jitter on retry delays (spreads retries of many messages to one host).
JITTER = 0.1
#: Most recipient rows claimed in one poll.
MAX_CLAIM = 1000
#: How long stop() lets running deliveries finish before it cuts their connections.
STOP_GRACE = 10.0
#: Seconds a domain's MX route is reused without a new lookup (short: DNS changes must show soon).
ROUTE_CACHE_SECONDS = 30.0
#: Signatures kept for messages still being retried (avoids signing a big message on every attempt).
DKIM_CACHE = 256


@dataclass
class _Running:
    item: WorkItem
    deferred: defer.Deferred | None = None


class QueueRunner:
    """Delivers the outbound queue.  ``start()``, ``kick()``, ``stop() -> Deferred``.

    Test hooks: ``clock`` (scheduling time, e.g. ``task.Clock``; network timeouts stay on the reactor), ``rng``,
    ``port`` / ``port_map`` (the TCP port for MX hosts, by host name), ``smarthost_ca_file`` (trust root for the
    smarthost's certificate), ``timeouts`` and ``connect_timeout``.
    """

    def __init__(self, services, *, clock=None, rng: random.Random | None = None, port: int = 25,
                 port_map: dict[str, int] | None = None, resolver: DnsResolver | None = None,
                 smarthost_ca_file: str = "", timeouts: Timeouts | None = None,
                 connect_timeout: float | None = None):
        self.services = services
        self.config = services.config
        self.qc = services.config.queue
        self.reactor = services.reactor
        self.clock = clock or services.reactor
        self.rng = rng or random.Random()
        self.port = port
        self.port_map = {k.lower(): v for k, v in (port_map or {}).items()}
        self.resolver = resolver or DnsResolver(services.config.dns)
        self.smarthost_ca_file = smarthost_ca_file or services.config.queue.smarthost.ca_file
        limits = services.config.limits
        self.timeouts = timeouts or Timeouts.from_limits(limits)  # RFC 5321 4.5.3.2, as [limits] names them
        self.connect_timeout = connect_timeout if connect_timeout is not None else limits.smtp_timeout_connect
        self.queue = QueueStore(services.store)
        self.dkim = DkimSigner.for_store(services.store)
        self._dkim_cache: dict[int, bytes] = {}
        self.running: dict[int, _Running] = {}
        self.waiting: deque[WorkItem] = deque()
        self.per_domain: Counter[str] = Counter()
        self.connections: set = set()
        self.stats: Counter[str] = Counter()
        self._started = False
        self._stopping = False
        self._polling = False
        self._poll_again = False
        self._timer = None
        self._renew_timer = None
        self._seq = 0
        self._routes: dict[str, tuple[float, list[Hop]]] = {}
        self._to_record: list[tuple[list[Outcome], defer.Deferred]] = []
        self._recording = False

    # ----------------------------------------------------------------------------------------- lifecycle

    def start(self) -> defer.Deferred:
        """Begin delivering (on SQLite, first clear leases a previous run left behind)."""
        self._started = True

        @defer.inlineCallbacks
        def go():
            if self.services.store.sqlite:
                n = yield self._db(self.queue.release_all)
                if n:
                    log.info("queue: released {n} recipient lease(s) left by the previous run", n=n)
            self._schedule_renew()
            self.kick()

        return go()

    def alive(self) -> bool:
        """Started, not stopping, and a poll is under way or scheduled (the health check's question)."""
        return (self._started and not self._stopping
                and (self._polling or (self._timer is not None and self._timer.active())))

    def kick(self) -> None:
        """Poll now (new mail was queued, or a slot became free)."""
        if not self._started or self._stopping:
            return
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._poll()

    @defer.inlineCallbacks
    def stop(self):
        """Stop claiming; let running deliveries finish (cut after STOP_GRACE); give back unstarted work."""
        if self._stopping:
            return
        self._stopping = True
        for t in (self._timer, self._renew_timer):
            if t is not None and t.active():
                t.cancel()
        while self._polling:  # a claim in flight must land in `waiting` before we give it back
            yield _sleep(self.reactor, 0.01)
        waiting = [r.id for item in self.waiting for r in item.recipients]
        self.waiting.clear()
        if waiting:
            yield self._db(self.queue.release, waiting)
        pending = [r.deferred for r in self.running.values() if r.deferred is not None]
        if pending:
            done = defer.DeferredList(pending, consumeErrors=True)
            timer = self.reactor.callLater(STOP_GRACE, self._cut_connections)
            yield done
            if timer.active():
                timer.cancel()

    def _cut_connections(self) -> None:
        for proto in list(self.connections):
            if proto.transport is not None:
                proto.transport.abortConnection()

    # ----------------------------------------------------------------------------------------- helpers

    def _db(self, f, *args, **kwargs) -> defer.Deferred:
        return run_in(self.reactor, self.services.pools.db_write, f, *args, **kwargs)

    def now(self) -> float:
        return self.clock.seconds()

    def _schedule_renew(self) -> None:
        if self._stopping:
            return
        self._renew_timer = self.clock.callLater(self.qc.lease / 3, self._renew)

    @defer.inlineCallbacks
    def _renew(self):
        ids = [r.id for run in self.running.values() for r in run.item.recipients]
        ids += [r.id for item in self.waiting for r in item.recipients]
        if ids:
            try:
                yield self._db(self.queue.renew, ids, self.now() + self.qc.lease)
            except Exception:
                log.failure("queue: lease renewal failed")
        self._schedule_renew()

    # ----------------------------------------------------------------------------------------- polling

    @defer.inlineCallbacks
    def _poll(self):
        if self._polling:
            self._poll_again = True
            return
        self._polling = True
        try:
            while not self._stopping:
                self._poll_again = False
                free = self.qc.max_connections - len(self.running) - len(self.waiting)
                items = []
                claim_now = self.now()
                if free > 0:
                    busy = [d for d, n in self.per_domain.items() if n >= self.qc.max_connections_per_domain]
                    limit = min(MAX_CLAIM, free * max(1, self.qc.max_recipients_per_transaction))
                    items = yield self._db(self.queue.claim, claim_now, self.qc.lease, limit,
                                           self.qc.max_recipients_per_transaction, busy)
                    self.waiting.extend(items)
                    self._start_waiting()
                if self._poll_again or (items and free - len(items) > 0):
                    continue
                next_due = yield run_in(self.reactor, self.services.pools.db_read, self.queue.next_due)
                if self._poll_again:
                    continue
                delay = POLL_INTERVAL if next_due is None else min(POLL_INTERVAL, next_due - self.now())
                if delay <= 0:
                    if free > 0 and next_due > claim_now:
                        continue  # it became due while we were claiming
                    # Due work we could not take (every slot or its domain busy): a finished delivery kicks us.
                    delay = POLL_INTERVAL
                if self._timer is not None and self._timer.active():
                    self._timer.cancel()
                self._timer = self.clock.callLater(delay, self.kick)
                break
        except Exception:
            log.failure("queue: poll failed")
            if not self._stopping:
                self._timer = self.clock.callLater(5.0, self.kick)
        finally:
            self._polling = False

    def _start_waiting(self) -> None:
        kept: deque[WorkItem] = deque()
        while self.waiting:
            item = self.waiting.popleft()
            if self._stopping:
                kept.append(item)
                continue
            if (len(self.running) < self.qc.max_connections
                    and self.per_domain[item.domain] < self.qc.max_connections_per_domain):
                self._seq += 1
                run = _Running(item)
                self.running[self._seq] = run
                self.per_domain[item.domain] += 1
                run.deferred = self._run(self._seq, run)
            else:
                kept.append(item)
        self.waiting = kept

    @defer.inlineCallbacks
    def _run(self, key: int, run: _Running):
        item = run.item
        try:
            yield self._deliver(item)
        except Exception:
            log.failure("queue: delivery of message {qid} failed", qid=item.message.public_id)
            try:
                yield self._db(self.queue.release, [r.id for r in item.recipients])
            except Exception:
                log.failure("queue: could not release recipients")
        finally:
            del self.running[key]
            self.per_domain[item.domain] -= 1
            if self.per_domain[item.domain] <= 0:
                del self.per_domain[item.domain]
            if not self._stopping:
                self._start_waiting()
                if not self.waiting:
                    self.kick()

    # ----------------------------------------------------------------------------------------- one work item

    @defer.inlineCallbacks
    def _deliver(self, item: WorkItem):
        m = item.message
        now = self.now()
        results: dict[str, tuple[RcptResult, str]] = {}
        dsn_offered = False
        to_send = []
        for r in item.recipients:
            if r.status == "bounce":
                reply = local_reply(550, "5.0.0", "delivery cancelled by the mail administrator")
                results[r.recipient] = (RcptResult(r.recipient, FAILED, reply), "")
            else:
                to_send.append(r)
        if to_send:
            try:
                route = yield self._route(item)
            except RouteError as e:
                for r in to_send:
                    results[r.recipient] = (RcptResult(r.recipient, _kind(e.reply), e.reply), "")
            else:
                hops, policy, tls, implicit = route
                got, dsn_offered = yield self._try_hops(item, to_send, hops, policy, tls, implicit)
                results.update(got)
        outcomes, reports = self._outcomes(item, results, dsn_offered, now)
        for kind, rows in reports.items():
            if rows:
                try:
                    yield self._report(item, kind, rows, now)
                except Exception:
                    log.failure("queue: could not make a {kind} report for message {qid}", kind=kind, qid=m.public_id)
        finished = yield self._record(outcomes)
        for qid in finished:
            self._dkim_cache.pop(qid, None)
        rcpt_of = {r.id: r.recipient for r in item.recipients}
        for o in outcomes:
            self.stats[o.status] += 1
            # The mail log: one line per recipient and attempt.
            log.info("queue {qid} to=<{rcpt}> {status} relay={relay}: {reply}", qid=m.public_id,
                     rcpt=rcpt_of.get(o.recipient_id, "?"), status=o.status, relay=o.remote_mta or "-",
                     reply=o.reply[:300])

    @defer.inlineCallbacks
    def _route(self, item: WorkItem):
        """(hops, policy, tls settings, implicit TLS) for the item, or RouteError."""
        own = self._own_endpoints()

        def is_self(host: str, ip: str, port: int) -> bool:
            if host.lower().rstrip(".") == self.config.hostname.lower():
                return True
            return any(p == port and (h == ip or h in ("0.0.0.0", "::")) for h, p in own)

        dns_pool = self.services.pools.dns
        base = ClientPolicy(helo_name=self.config.hostname, tls="opportunistic", timeouts=self.timeouts)
        cached = self._routes.get(item.domain)
        if not item.route and cached is not None and cached[0] > self.reactor.seconds():
            return cached[1], base, TlsSettings(), False
        relay_to = item.route
        if not relay_to:
            dom = yield run_in(self.reactor, self.services.pools.db_read, self.services.store.get_domain, item.domain)
            if dom is not None and dom.mode == "relay":
                relay_to = dom.relay_to
        if relay_to:
            from mailserver.config import parse_address

            a = parse_address(relay_to, 25)
            hops = yield run_in(self.reactor, dns_pool, route_host, self.resolver, a.host, a.port, is_self=is_self)
            return hops, base, TlsSettings(), False
        sh = self.qc.smarthost
        if sh.host:
            hops = yield run_in(self.reactor, dns_pool, route_host, self.resolver, sh.host, sh.port, is_self=is_self)
            implicit = sh.tls == "implicit"
            policy = ClientPolicy(helo_name=self.config.hostname, tls="implicit" if implicit else "required",
                                  username=sh.username, password=sh.password, timeouts=self.timeouts)
            # RFC 8314 / RFC 3207: TLS to a smarthost is mandatory and its certificate verified.
            return hops, policy, TlsSettings(verify_host=sh.host, ca_file=self.smarthost_ca_file), implicit
        hops = yield run_in(self.reactor, dns_pool, route_domain, self.resolver, item.domain, rng=self.rng,
                            port_for=lambda host: self.port_map.get(host.lower(), self.port), is_self=is_self)
        if len(self._routes) > 10000:
            self._routes.clear()
        self._routes[item.domain] = (self.reactor.seconds() + ROUTE_CACHE_SECONDS, hops)
        return hops, base, TlsSettings(), False

    def _own_endpoints(self) -> list[tuple[str, int]]:
        return [(lst.host, lst.port) for lst in self.services.listeners()]

    @defer.inlineCallbacks
    def _try_hops(self, item: WorkItem, rows, hops: list[Hop], policy: ClientPolicy, tls: TlsSettings,
                  implicit: bool):
        """RFC 5321 5.1: try each host (and each of its addresses) until every recipient has a final answer."""
        m = item.message
        prefix = yield self._signature(item)
        pending = list(rows)
        final: dict[str, tuple[RcptResult, str]] = {}
        last_temp: dict[str, tuple[RcptResult, str]] = {}
        dsn_offered = False
        store = self.services.store
        for hop in hops:
            for ip in hop.addresses:
                if not pending:
                    break
                env = Envelope(m.sender, tuple(Recipient(r.recipient, r.notify, r.orcpt) for r in pending),
                               m.size + len(prefix), m.body_8bit, m.smtputf8, m.envid, m.ret)
                session = SmtpClientSession(env, policy)
                session = yield run_session(self.reactor, ip, hop.port, session,
                                            lambda: store.blobs.open(m.blob_id), self.services.pools.blob, tls=tls,
                                            implicit_tls=implicit, prefix=prefix,
                                            connect_timeout=self.connect_timeout, registry=self.connections)
                dsn_offered = dsn_offered or session.dsn_offered
                remote = f"{hop.host} [{ip}]:{hop.port}" if hop.port != 25 else f"{hop.host} [{ip}]"
                for res in session.results.values():
                    if res.status == DEFERRED:
                        last_temp[res.recipient] = (res, remote)
                    else:
                        final[res.recipient] = (res, remote)
                        last_temp.pop(res.recipient, None)
                pending = [r for r in pending if r.recipient not in final]
                if session.greeting is not None:
                    break  # the host answered: its other addresses would say the same; next host
            if not pending:
                break
        final.update(last_temp)
        return final, dsn_offered

    @defer.inlineCallbacks
    def _signature(self, item: WorkItem):
        """DKIM-Signature fields for the message (cached per queue id while it is retried)."""
        m = item.message
        if m.source == "bounce" or m.id in self._dkim_cache:
            return self._dkim_cache.get(m.id, b"")
        blobs = self.services.store.blobs
        sig = b""
        try:
            head = yield run_in(self.reactor, self.services.pools.blob, blobs.read, m.blob_id, 0, dsnlib.HEADER_READ_MAX)
            domain = yield run_in(self.reactor, self.services.pools.db_read, self._signing_domain, head)
            if domain:
                raw = yield run_in(self.reactor, self.services.pools.blob, blobs.read, m.blob_id)
                sig = yield run_in(self.reactor, self.services.pools.cpu, self.dkim.signature_headers, raw, domain)
        except Exception:
            log.failure("queue: DKIM signing failed for message {qid}; sending unsigned", qid=m.public_id)
            sig = b""
        if len(self._dkim_cache) >= DKIM_CACHE:
            self._dkim_cache.pop(next(iter(self._dkim_cache)))
        self._dkim_cache[m.id] = sig
        return sig

    def _signing_domain(self, head: bytes) -> str:
        """The From domain when it is one of ours and has a DKIM key, else "" (blocking)."""
        from mailserver.delivery.dkim import from_domain

        domain = from_domain(head)
        if not domain or not self.dkim.has_keys(domain) or self.services.store.get_domain(domain) is None:
            return ""
        return domain

    # ----------------------------------------------------------------------------------------- results

    def _record(self, outcomes: list[Outcome]) -> defer.Deferred:
        """Record results; concurrent deliveries share one transaction (one fsync), like the store's group commit."""
        d: defer.Deferred = defer.Deferred()
        self._to_record.append((outcomes, d))
        if not self._recording:
            self._recording = True
            self.reactor.callLater(0, self._flush_records)
        return d

    @defer.inlineCallbacks
    def _flush_records(self):
        try:
            while self._to_record:
                batch, self._to_record = self._to_record, []
                try:
                    finished = yield self._db(self.queue.record, [o for outs, _ in batch for o in outs])
                except Exception as e:
                    for _, d in batch:
                        d.errback(e)
                    continue
                for _, d in batch:
                    d.callback(finished)
        finally:
            self._recording = False

    def backoff(self, attempts: int) -> float:
        """Delay before the next attempt after ``attempts`` tries (exponential, capped, with jitter)."""
        base = min(self.qc.retry_max, self.qc.retry_first * (2 ** max(0, attempts - 1)))
        return base * (1.0 + self.rng.uniform(-JITTER, JITTER))

    def _outcomes(self, item: WorkItem, results: dict[str, tuple[RcptResult, str]], dsn_offered: bool, now: float):
        m = item.message
        age = now - m.created
        outcomes: list[Outcome] = []
        reports: dict[str, list[dsnlib.ReportRecipient]] = {dsnlib.FAILURE: [], dsnlib.DELAY: [],
                                                             dsnlib.SUCCESS: []}
        until = m.created + self.qc.give_up_after
        for r in item.recipients:
            res, remote = results.get(r.recipient) or (
                RcptResult(r.recipient, DEFERRED, local_reply(451, "4.3.0", "no result")), "")
            reply, status = res.reply, res.status
            code = reply.status
            if status == DEFERRED and age >= self.qc.give_up_after:
                status = FAILED
                code = "5.4.7"  # RFC 3463 X.4.7: delivery time expired
            text = str(reply)
            rr = dsnlib.ReportRecipient(r.recipient, "", code, diagnostic=text if remote else "",
                                        remote_mta=remote.split(" ")[0] if remote else "", orcpt=r.orcpt,
                                        last_attempt=now, reason=text)
            if status == DELIVERED:
                outcomes.append(Outcome(r.id, DELIVERED, text, remote))
                # RFC 3461 6.2.3.1: we report success only when the next hop did not take the request over.
                if not dsn_offered and dsnlib.wants_report(m.sender, r.notify, dsnlib.SUCCESS):
                    reports[dsnlib.SUCCESS].append(_with(rr, action="relayed"))
            elif status == FAILED:
                outcomes.append(Outcome(r.id, FAILED, text, remote))
                if m.source != "bounce" and dsnlib.wants_report(m.sender, r.notify, dsnlib.FAILURE):
                    reports[dsnlib.FAILURE].append(_with(rr, action="failed"))
            else:
                warn = None
                if (not r.delay_warned and age >= self.qc.delay_warning_after
                        and dsnlib.wants_report(m.sender, r.notify, dsnlib.DELAY) and m.source != "bounce"):
                    warn = True
                    reports[dsnlib.DELAY].append(_with(rr, action="delayed", will_retry_until=until))
                outcomes.append(Outcome(r.id, DEFERRED, text, remote,
                                        next_attempt=now + self.backoff(r.attempts + 1), delay_warned=warn))
        return outcomes, reports

    @defer.inlineCallbacks
    def _report(self, item: WorkItem, kind: str, rows: list[dsnlib.ReportRecipient], now: float):
        """Build a report and hand it to the sender: their INBOX when local, else the queue with ``<>``."""
        m = item.message
        full = dsnlib.return_full(kind, m.ret, m.size)
        blobs = self.services.store.blobs
        if full:
            original = yield run_in(self.reactor, self.services.pools.blob, blobs.read, m.blob_id)
        else:
            head = yield run_in(self.reactor, self.services.pools.blob, blobs.read, m.blob_id, 0,
                                dsnlib.HEADER_READ_MAX)
            original = dsnlib.split_header(head)
        raw = yield run_in(self.reactor, self.services.pools.cpu, lambda: dsnlib.build_report(
            kind=kind, reporting_mta=self.config.hostname, sender=m.sender, recipients=rows, original=original,
            original_is_full=full, envid=m.envid, arrival=m.created, now=now))
        yield self.send_to(m.sender, raw)
        self.stats[f"report_{kind}"] += 1

    def send_to(self, address: str, raw: bytes):
        """Deliver a report to ``address``: locally when it is ours, else queued with the null sender."""
        from mailserver.delivery.reports import send_report

        return send_report(self.services.pipeline, address, raw)


def _kind(reply: ServerReply) -> str:
    if 200 <= reply.code < 300:
        return DELIVERED
    return DEFERRED if reply.code < 500 else FAILED


def _with(rr: dsnlib.ReportRecipient, **changes) -> dsnlib.ReportRecipient:
    from dataclasses import replace

    return replace(rr, **changes)


def _sleep(reactor, seconds: float) -> defer.Deferred:
    d: defer.Deferred = defer.Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d
