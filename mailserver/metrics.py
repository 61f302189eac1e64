"""Health and metrics: ``[listen] metrics`` serves Prometheus ``/metrics`` and the load balancer's ``/healthz``.

One :class:`Monitor` per server, with a ``prometheus_client`` registry of its own (never the process-wide default:
tests run many servers in one process).  What it counts, and where the count is taken (each a small hook, none on a
path that does more than add to a counter):

* connections per protocol family, opened / open / refused over the per-address cap: the family's
  ``ConnectionLimiter`` (``mailserver/connections.py``), which every protocol already goes through;
* response latency per listener (from the last bytes a client sent to the first bytes of our answer, which covers
  every protocol alike): the listener's ``TrackedConnection`` (``mailserver/service.py``); IMAP commands by name with
  their duration: the session's dispatch;
* deliveries by producer and outcome, and the check stages' verdicts (spam and virus checks are check stages):
  the pipeline's observer;
* logins by protocol and outcome (auth failures): ``mailserver/login.py`` and the webmail's sign-in;
* waits of work queued for a thread pool (``db-read``, ``db-write``…) before a thread takes it: ``run_in``;
* the event loop's lag: a ``LoopingCall`` on the injected clock, measuring how late it fires;
* the queue's depth and age, and whether the store answers: asked in the ``db_read`` pool at each scrape, never on
  the reactor thread.

``/healthz`` answers 200 when the store answers a query within ``[metrics] health_timeout`` seconds, the queue runner
(where ``[queue] run``) is running and the server is not stopping; 503 otherwise, with one line per check.
"""

from __future__ import annotations

import re
import time
from bisect import bisect_left
from dataclasses import dataclass
from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import select
from twisted.internet import defer, task
from twisted.logger import Logger

from mailserver.threads import run_in

log = Logger()

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
#: A command name label is a protocol keyword; anything else is counted as "OTHER" (bounded label values).
_COMMAND_NAME = re.compile(r"[A-Z][A-Z0-9 -]{0,23}")
#: Command names whose metric children :meth:`Metrics.command` keeps looked up.
MAX_COMMAND_NAMES = 256


class ReactorValue:
    """A ``prometheus_client`` value (a float) written by the reactor thread alone, so without the library's lock
    per change (one Python-level lock acquire and release each): a read from another thread (a scrape) sees a whole
    float, as with the lock.  Same methods as the library's ``MutexValue``."""

    __slots__ = ("_value", "_exemplar")

    def __init__(self, value: float = 0.0, exemplar=None):
        self._value = value
        self._exemplar = exemplar

    def inc(self, amount: float) -> None:
        self._value += amount

    def set(self, value: float, timestamp=None) -> None:
        self._value = value

    def set_exemplar(self, exemplar) -> None:
        self._exemplar = exemplar

    def get(self) -> float:
        return self._value

    def get_exemplar(self):
        return self._exemplar


def _reactor_value(value):
    """``value`` (a library ``MutexValue``) as a :class:`ReactorValue` holding the same figures; anything else (the
    multiprocess mode's values, another version's) as it is."""
    if type(value).__name__ != "MutexValue" or not hasattr(value, "_value"):
        return value
    return ReactorValue(value.get(), value.get_exemplar())


def observer(histogram, reactor_only: bool = False) -> Callable[[float], None]:
    """``histogram.observe`` of a labelled ``prometheus_client`` Histogram child as one plain call: the bucket found
    by bisection, without the library's per-call checks (label values given, no exemplar). It adds to the same
    values, so the exposition is the library's (``tests/test_metrics.py`` compares the two). Where the library keeps
    its values otherwise (another version, multiprocess mode), it is the library's own ``observe``.  With
    ``reactor_only`` (a child only the reactor thread observes) its values become :class:`ReactorValue`\\ s."""
    try:
        if reactor_only:
            histogram._sum = _reactor_value(histogram._sum)
            histogram._buckets = [_reactor_value(b) for b in histogram._buckets]
        total, buckets, bounds = histogram._sum, list(histogram._buckets), tuple(histogram._upper_bounds)
        add_total, adds = total.inc, [b.inc for b in buckets]
    except AttributeError:
        return histogram.observe
    if len(adds) != len(bounds) or bounds[-1] != float("inf"):
        return histogram.observe

    if type(total) is ReactorValue and all(type(b) is ReactorValue for b in buckets):
        def observe_here(amount: float) -> None:  # lock-free values: added to in place, no call per value
            total._value += amount
            buckets[bisect_left(bounds, amount)]._value += 1

        return observe_here

    def observe(amount: float) -> None:
        # prometheus_client: the first bucket whose upper bound is >= amount (bounds sorted, the last +Inf).
        add_total(amount)
        adds[bisect_left(bounds, amount)](1)

    return observe


def _counter_add(counter, reactor_only: bool = False) -> Callable[[float], None]:
    """``counter.inc`` of a labelled Counter child without its per-call checks (see :func:`observer`)."""
    value = getattr(counter, "_value", None)
    if reactor_only and value is not None:
        value = counter._value = _reactor_value(value)
    return value.inc if value is not None and hasattr(value, "inc") else counter.inc


class ConnectionCounts:
    """The connection counters of one protocol family (the observer of its ConnectionLimiter)."""

    def __init__(self, metrics: "Metrics", family: str):
        self._opened = metrics.connections.labels(family)
        self._open = metrics.connections_open.labels(family)
        self._refused = metrics.connections_refused.labels(family)

    def opened(self) -> None:
        self._opened.inc()
        self._open.inc()

    def closed(self) -> None:
        self._open.dec()

    def refused(self) -> None:
        self._refused.inc()


class Metrics:
    """Every metric of one server, in its own registry."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.connections = Counter("mailserver_connections", "Connections accepted, by protocol family",
                                   ["protocol"], registry=r)
        self.connections_open = Gauge("mailserver_connections_open", "Connections open now, by protocol family",
                                      ["protocol"], registry=r)
        self.connections_refused = Counter("mailserver_connections_refused",
                                           "Connections refused over the per-address cap", ["protocol"], registry=r)
        self.responses = Histogram("mailserver_response_seconds",
                                   "From the last bytes a client sent to the first bytes of our answer",
                                   ["listener"], buckets=LATENCY_BUCKETS, registry=r)
        self.commands = Counter("mailserver_commands", "Commands by protocol and name", ["protocol", "command"],
                                registry=r)
        self.command_seconds = Histogram("mailserver_command_seconds", "Command duration, to the final reply",
                                         ["protocol", "command"], buckets=LATENCY_BUCKETS, registry=r)
        self.deliveries = Counter("mailserver_deliveries",
                                  "Final recipients of messages taken in, by producer and outcome "
                                  "(delivered, queued, deferred, refused)", ["producer", "outcome"], registry=r)
        self.check_verdicts = Counter("mailserver_check_verdicts",
                                      "Verdicts of the message check stages (spam, virus, hooks) per recipient",
                                      ["check", "verdict"], registry=r)
        self.logins = Counter("mailserver_logins", "Login attempts by protocol and outcome "
                              "(ok, invalid, throttled, tempfail)", ["protocol", "outcome"], registry=r)
        self.auth_failures = Counter("mailserver_auth_failures", "Failed logins by protocol and reason",
                                     ["protocol", "reason"], registry=r)
        self.pool_wait = Histogram("mailserver_pool_wait_seconds",
                                   "Time work waited for a thread of a pool (db-read, db-write, blob, ...)",
                                   ["pool"], buckets=LATENCY_BUCKETS, registry=r)
        self.reactor_lag = Histogram("mailserver_reactor_lag_seconds", "How late the event loop ran a timer",
                                     buckets=LAG_BUCKETS, registry=r)
        self.reactor_lag_last = Gauge("mailserver_reactor_lag_last_seconds", "The last measured event-loop lag",
                                      registry=r)
        self._families: dict[str, ConnectionCounts] = {}
        #: Labelled children of the per-message metrics, looked up once (``labels()`` takes a lock and checks the
        #: values on every call; these run for every message and every trip to a pool).
        self._children: dict[tuple, object] = {}
        self._pool_observers: dict[str, Callable[[float], None]] = {}
        #: (protocol, name as given) -> (add to the counter, observe the duration)
        self._commands: dict[tuple[str, str], tuple[Callable[[float], None], Callable[[float], None]]] = {}

    # -- hooks

    def connection_counts(self, family: str) -> ConnectionCounts:
        counts = self._families.get(family)
        if counts is None:
            counts = self._families[family] = ConnectionCounts(self, family)
        return counts

    def command(self, protocol: str, name: str, seconds: float) -> None:
        # Runs for every command of every session: the name's check and the labelled children are looked up once
        # per (protocol, name) as given (bounded: a name the client chose may be anything).
        pair = self._commands.get((protocol, name))
        if pair is None:
            label = name.upper()
            if not _COMMAND_NAME.fullmatch(label):
                label = "OTHER"
            # Commands are dispatched on the reactor thread alone: their children need no lock.
            counter = self.commands.labels(protocol, label)
            add = _counter_add(counter, reactor_only=True)
            pair = (counter._value if type(getattr(counter, "_value", None)) is ReactorValue else add,
                    observer(self.command_seconds.labels(protocol, label), reactor_only=True))
            if len(self._commands) < MAX_COMMAND_NAMES:
                self._commands[(protocol, name)] = pair
        count, observe = pair
        if type(count) is ReactorValue:
            count._value += 1
        else:
            count(1)
        observe(seconds if seconds > 0.0 else 0.0)

    def login(self, protocol: str, outcome: str, reason: str = "") -> None:
        self.logins.labels(protocol, outcome).inc()
        if outcome != "ok":
            self.auth_failures.labels(protocol, reason or outcome).inc()

    def _child(self, metric, *values: str):
        key = (metric, values)
        child = self._children.get(key)
        if child is None:
            child = self._children.setdefault(key, metric.labels(*values))  # setdefault: pools call from threads
        return child

    def pool_waited(self, pool: str, seconds: float) -> None:
        # From the pool's thread, for every trip to a pool: the child's observe as one call (``observer``).
        observe = self._pool_observers.get(pool)
        if observe is None:
            observe = self._pool_observers.setdefault(pool, observer(self._child(self.pool_wait, pool)))
        observe(seconds if seconds > 0.0 else 0.0)

    # -- the pipeline's observer (mailserver/delivery/pipeline.py)

    def verdict(self, check: str, verdict) -> None:
        """A check stage's verdict for one recipient (None: accept)."""
        if verdict is None:
            self._child(self.check_verdicts, check, "accept").inc()
            return
        action = verdict.action
        if action == "accept" and (verdict.add_headers or verdict.keywords or verdict.mailbox):
            action = "tag"
        elif action == "accept" and verdict.redirect:
            action = "redirect"
        self._child(self.check_verdicts, check, action).inc()

    def concluded(self, request, result) -> None:
        for o in result.outcomes:
            self._child(self.deliveries, request.producer, o.kind).inc()


class ReactorLag:
    """Measures how late the event loop runs a timer due every ``interval`` seconds (``clock`` injectable)."""

    def __init__(self, clock, interval: float, observe):
        self.clock = clock
        self.interval = interval
        self.observe = observe
        self._call = task.LoopingCall(self._tick)
        self._call.clock = clock
        self._due = 0.0

    def start(self) -> None:
        self._due = self.clock.seconds() + self.interval
        self._call.start(self.interval, now=False)

    def stop(self) -> None:
        if self._call.running:
            self._call.stop()

    def _tick(self) -> None:
        now = self.clock.seconds()
        self.observe(max(0.0, now - self._due))
        while self._due <= now:
            self._due += self.interval


@dataclass(frozen=True)
class Health:
    ok: bool
    checks: tuple[tuple[str, bool, str], ...]  # (name, ok, detail)

    def text(self) -> str:
        return "".join(f"{name} {'ok' if ok else 'FAILED'}{': ' + detail if detail else ''}\n"
                       for name, ok, detail in self.checks)


class _QueueCollector:
    """The queue and store figures of the last scrape (fetched in a thread before the registry is rendered)."""

    def __init__(self):
        self.stats = None
        self.store_up = 0

    def collect(self):
        yield GaugeMetricFamily("mailserver_store_up", "1 when the store answered at the last scrape",
                                value=self.store_up)
        s = self.stats
        if s is None:
            return
        yield GaugeMetricFamily("mailserver_queue_recipients", "Outbound recipients waiting (pending, deferred)",
                                value=s.recipients)
        yield GaugeMetricFamily("mailserver_queue_messages", "Outbound messages with a recipient waiting",
                                value=s.messages)
        age = 0.0 if s.oldest is None else max(0.0, time.time() - s.oldest)
        yield GaugeMetricFamily("mailserver_queue_oldest_age_seconds", "Age of the oldest waiting message",
                                value=age)


class Monitor:
    """One server's metrics and health.  ``queue_alive()`` is None without a queue runner, else whether it runs."""

    def __init__(self, *, reactor, config, store, pools, queue_alive, running):
        self.reactor = reactor
        self.config = config
        self.store = store
        self.pools = pools
        self.queue_alive = queue_alive
        self.running = running
        self.metrics = Metrics()
        self._queue = _QueueCollector()
        self.metrics.registry.register(self._queue)
        self.lag = ReactorLag(reactor, config.metrics.reactor_lag_interval, self._lagged)

    def _lagged(self, seconds: float) -> None:
        self.metrics.reactor_lag.observe(seconds)
        self.metrics.reactor_lag_last.set(seconds)

    def start(self) -> None:
        self.lag.start()

    def stop(self) -> None:
        self.lag.stop()

    # -- blocking, in the db_read pool

    def _probe_store(self):
        from storage.models import Domain
        from storage.queue import QueueStore

        with self.store.transaction(write=False) as conn:
            conn.execute(select(Domain.id).limit(1)).all()
        return QueueStore(self.store).stats()

    def _ask_store(self) -> defer.Deferred:
        d = run_in(self.reactor, self.pools.db_read, self._probe_store)
        d.addTimeout(self.config.metrics.health_timeout, self.reactor)
        return d

    # -- on the reactor thread

    async def scrape(self) -> bytes:
        try:
            self._queue.stats = await self._ask_store()
            self._queue.store_up = 1
        except Exception:
            self._queue.stats, self._queue.store_up = None, 0
        return generate_latest(self.metrics.registry)

    async def health(self) -> Health:
        checks = []
        try:
            await self._ask_store()
            checks.append(("store", True, ""))
        except defer.TimeoutError:
            checks.append(("store", False, f"no answer within {self.config.metrics.health_timeout}s"))
        except Exception as e:
            checks.append(("store", False, type(e).__name__))
        alive = self.queue_alive()
        if alive is not None:
            checks.append(("queue", bool(alive), "" if alive else "the queue runner is not running"))
        running = self.running()
        checks.append(("server", running, "" if running else "stopping"))
        return Health(all(ok for _, ok, _ in checks), tuple(checks))


# --------------------------------------------------------------------------------------------- the listener


def build_factory(services, listener_name: str):
    """The Site of the ``metrics`` listener: ``/metrics`` and ``/healthz``, nothing else (``mailserver.metrics_http``:
    twisted.web is imported only by a server that has such a listener, ~2.5 MiB less for one without)."""
    from mailserver.metrics_http import build_factory as build

    return build(services, listener_name)
