"""Service assembly: one ``MailServer`` (a Twisted ``MultiService``) hosts every configured listener.

Start order: check that the storage fits the database (file blobs with PostgreSQL need a shared data_dir), open the
store (engine, migrations, domains from the config), start the thread pools and the per-cluster state
(:mod:`mailserver.clusterstate`: in process with SQLite, in the database with PostgreSQL or with several SQLite worker
processes), build the shared
authenticator and TLS context, then listen on every ``[listen]`` address.  A listener that cannot bind raises
``ListenError`` naming it, and nothing is left half-started.

Stop order (SIGTERM/SIGINT): stop accepting, give open sessions a short grace period, close the rest, let the group
committer finish, stop the pools, dispose of the engine.

Each protocol package provides ``build_factory(services, listener_name) -> Factory``; the table below maps listener
names to them.  Protocols get what they use from the :class:`~mailserver.services.Services` built at start (typed
fields: ``config``, ``store`` (blocking: thread pools only), ``astore`` (Deferreds), ``hub``, ``auth``, ``tls``,
``pools``, ``reactor``, ``cluster``, ``router``, ``pipeline``, ``kick_queue``, the per-process ``state``), never from
the server.
"""

from __future__ import annotations

import importlib
import os
import resource
import secrets
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from twisted.application.service import MultiService
from twisted.internet import defer, task
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IHandshakeListener, IProtocolNegotiationFactory
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.protocols.tls import TLSMemoryBIOFactory
from zope.interface import alsoProvides, implementer

from mailserver import clusterstate
from mailserver.asyncstore import AsyncStore
from mailserver.config import IMPLICIT_TLS, Config, ConfigError, ListenAddress
from mailserver.delivery.callout import RecipientVerifier
from mailserver.delivery.forward import Forwarder
from mailserver.delivery.pipeline import Pipeline
from mailserver.delivery.router import build_router
from mailserver.delivery.runner import ReactorRunner
from mailserver.delivery.sender_headers import SenderHeaderCheck
from mailserver.delivery.sieve_stage import SieveFilter
from mailserver.dns import DnsResolver
from mailserver.inbound.classifier import BayesCheck, CorrespondentRecorder, Trainer
from mailserver.inbound.dnsbl import DnsLists
from mailserver.inbound.greylist import Greylister, GreylistStage
from mailserver.inbound.scanners import inbound_stages
from mailserver.inbound.senderauth import AuthResultsStripper, SenderAuthCheck
from mailserver.inbound.senderauth import Settings as SenderAuthSettings
from mailserver.memory import MemoryTrim, settle_heap
from mailserver.proxied import ProxiedFactory
from mailserver.proxywire import Networks
from mailserver.services import BoundListener, ProcessState, Services
from mailserver.threads import Pools, run_in
from mailserver.workerspec import InheritedSocket, WorkerSpec
from storage import migrate
from storage.blobs import DatabaseBlobStore, FileBlobStore
from storage.changes import ChangeHub
from storage.db import is_sqlite, make_engine
from storage.store import Store

log = Logger()

#: listener name -> "module:function" building its protocol factory.
LISTENERS = {
    "smtp": "mailserver.smtp.protocol:build_factory",
    "submission": "mailserver.smtp.protocol:build_factory",
    "submissions": "mailserver.smtp.protocol:build_factory",
    "imap": "mailserver.imap.protocol:build_factory",
    "imaps": "mailserver.imap.protocol:build_factory",
    "pop3": "mailserver.pop3.protocol:build_factory",
    "pop3s": "mailserver.pop3.protocol:build_factory",
    "http": "webmail.app:build_factory",
    "https": "webmail.app:build_factory",
    "managesieve": "mailserver.managesieve.protocol:build_factory",
    "metrics": "mailserver.metrics:build_factory",
}

SHUTDOWN_GRACE = 5.0


class TrackedConnection(ProtocolWrapper):
    """One connection of a listener: registered with its factory while open, with a time limit on TLS handshakes.

    A TLS handshake (at connect on an implicit-TLS listener, after STARTTLS otherwise) that has not completed within
    ``limits.tls_handshake_timeout`` seconds is aborted: a client that opens connections and never finishes the
    handshake must not keep descriptors and per-address slots for ever."""

    _handshake_timer = None
    _request_at: float | None = None  # when the client last sent bytes we have not answered yet

    def dataReceived(self, data):
        if self.factory.responses is not None:
            self._request_at = self.factory.clock.seconds()
        self.wrappedProtocol.dataReceived(data)

    def write(self, data):
        self._answered()
        self.transport.write(data)

    def writeSequence(self, data):
        self._answered()
        self.transport.writeSequence(data)

    def _answered(self) -> None:
        # Response latency (metrics): from the last bytes received to the first bytes of the answer.
        if self._request_at is not None:
            waited = self.factory.clock.seconds() - self._request_at
            self.factory.observe_response(waited if waited > 0.0 else 0.0)
            self._request_at = None

    def makeConnection(self, transport):
        if self.factory.implicit_tls:
            self._arm_handshake_timer()
        super().makeConnection(transport)
        alsoProvides(self, IHandshakeListener)  # after makeConnection, which copies the transport's interfaces

    def startTLS(self, *args, **kwargs):
        self.transport.startTLS(*args, **kwargs)
        self._arm_handshake_timer()

    def handshakeCompleted(self):
        self._cancel_handshake_timer()
        listener = IHandshakeListener(self.wrappedProtocol, None)
        if listener is not None:
            listener.handshakeCompleted()

    def connectionLost(self, reason):
        self._cancel_handshake_timer()
        super().connectionLost(reason)

    def _arm_handshake_timer(self) -> None:
        self._cancel_handshake_timer()
        self._handshake_timer = self.factory.clock.callLater(self.factory.handshake_timeout, self._handshake_expired)

    def _cancel_handshake_timer(self) -> None:
        if self._handshake_timer is not None and self._handshake_timer.active():
            self._handshake_timer.cancel()
        self._handshake_timer = None

    def _handshake_expired(self) -> None:
        self._handshake_timer = None
        peer = getattr(self.transport.getPeer(), "host", "?")
        log.info("tls handshake from {ip} not completed within {t}s: connection aborted", ip=peer,
                 t=self.factory.handshake_timeout)
        self.transport.abortConnection()


@implementer(IProtocolNegotiationFactory)
class TrackingFactory(WrappingFactory):
    """Tracks open connections (for a graceful stop) and passes the wrapped factory's ALPN protocols through."""

    noisy = False  # no "Starting factory" log lines
    protocol = TrackedConnection

    def __init__(self, wrapped, *, clock, implicit_tls: bool, handshake_timeout: float, responses=None):
        super().__init__(wrapped)
        self.clock = clock
        self.implicit_tls = implicit_tls
        self.handshake_timeout = handshake_timeout
        #: The listener's response-latency histogram (a labelled prometheus Histogram), or None.
        self.responses = responses
        #: Its ``observe`` as one call (every answer of every connection goes through it).
        self.observe_response = None
        if responses is not None:
            from mailserver.metrics import observer

            self.observe_response = observer(responses, reactor_only=True)  # protocols write on the reactor thread

    def acceptableProtocols(self):
        inner = IProtocolNegotiationFactory(self.wrappedFactory, None)
        return list(inner.acceptableProtocols()) if inner is not None else []


class ListenError(Exception):
    """A listener could not be started (address in use, permission denied, bad address)."""


@dataclass
class Listening:
    name: str
    address: ListenAddress
    port: object  # IListeningPort
    factory: WrappingFactory
    #: The PROXY header reader of a ``[listen_proxied]`` listener (None for ``[listen]``).
    proxy: ProxiedFactory | None = None

    @property
    def bound_port(self) -> int:
        return self.port.getHost().port


def check_shared_storage(config: Config) -> None:
    """Refuse message bodies in this node's data_dir when other nodes may share the database (ConfigError).

    With PostgreSQL several nodes may serve one database; a body written under one node's data_dir could not be read
    by the others.  Allowed when ``store.shared_data_dir`` declares data_dir one directory shared by every node.
    """
    if is_sqlite(config.db_url) or config.store.blobs != "files" or config.store.shared_data_dir:
        return
    raise ConfigError(config.source, "store.blobs",
                      '"files" keeps message bodies in this node\'s data_dir, but database_url is PostgreSQL, which '
                      'other nodes may share, and they could not read those bodies: set store.blobs = "database", '
                      "or store.shared_data_dir = true if data_dir is one directory shared by every node")


def open_store(config: Config, *, run_migrations: bool = True, pool_size: int | None = None) -> Store:
    """Create the engine, apply migrations and return a Store (blocking)."""
    os.makedirs(config.data_dir, mode=0o700, exist_ok=True)
    engine = make_engine(config.db_url, pool_size=pool_size or max(4, config.store.db_threads + 2))
    if run_migrations:
        migrate.upgrade(engine)
    if config.store.blobs == "database":
        blobs = DatabaseBlobStore(engine, tmp_dir=str(Path(config.data_dir) / "tmp"))
        os.makedirs(blobs.tmp_dir, exist_ok=True)
    else:
        blobs = FileBlobStore(Path(config.data_dir) / "blobs")
    store = Store(engine, blobs)
    store.durable_flags = config.store.fsync == "always"
    for d in config.domain:
        store.ensure_domain(d.name, d.mode, d.relay_to)
    if run_migrations:
        from mailserver.delivery.dkim import import_key_files

        for key in import_key_files(store, config.data_dir):  # files of an earlier version, once
            log.info("DKIM key {selector} of {domain} imported from data_dir into the database",
                     selector=key.selector, domain=key.domain)
    return store


def raise_open_files_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit; returns (soft, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1 << 20)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft, hard


def accept_one_per_wake(port) -> None:
    """A worker's listener takes one connection each time the reactor finds the shared socket readable.

    Twisted's port accepts up to ``numberAccepts`` (100, growing) pending connections per wake-up, so with several
    workers waiting on one inherited socket a burst of connections (a client opening 10 sessions at once) all went to
    the worker that woke first: one worker served the 10 sessions of the SMTP benchmark while the other idled.  One
    accept per wake-up hands the next connection to whichever worker returns to its reactor loop first, so a busy
    worker takes fewer of them.  (Listeners of a single process keep Twisted's batching.)
    """
    read = port.doRead

    def doRead():
        port.numberAccepts = 1
        read()

    port.doRead = doRead

class MailServer(MultiService):
    """One server process: every listener, the store, the pools.  ``worker`` (from the supervisor) makes it one of
    several worker processes: it listens on the inherited sockets, keeps the per-cluster state where every worker
    sees it, exchanges change events over the worker bus, and runs the queue and the blob collector only while it
    holds the cluster's maintenance lease (:mod:`mailserver.leases`)."""

    def __init__(self, config: Config, reactor=None, worker: WorkerSpec | None = None):
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.config = config
        self.reactor = reactor
        self.worker = worker
        self.store: Store | None = None
        self.astore: AsyncStore | None = None
        self.hub = ChangeHub()
        #: Per-cluster state (POP3 maildrop locks, login failures, \Recent); replaced at start with PostgreSQL.
        self.cluster: clusterstate.ClusterState = clusterstate.in_process(config.limits)
        self.pools = Pools.create(db_threads=config.store.db_threads,
                                  single_writer=is_sqlite(config.db_url))
        self.auth = None
        self.tls = None
        self.listening: list[Listening] = []
        self.started_at = 0.0
        #: Keys the login success cache: the supervisor's for all its workers (so they share entries over the bus).
        self.secret = worker.auth_secret if worker is not None and worker.auth_secret else secrets.token_bytes(32)
        #: The Services the protocols are given (built at start, once the store and the authenticator exist; not
        #: ``services``, which is MultiService's list of child services).
        self.provided: Services | None = None
        self.queue_runner = None
        self.greylist = None  # the Greylister when [antispam.greylist] is on (built with the services)
        self.monitor = None
        self.pg_bridge = None
        self.bus = None
        self.lease = None
        self.heartbeat = None
        self._gc = None
        self._digests = None  # the quarantine digest runner (mailserver/digest.py), with the maintenance jobs
        self.trainer: Trainer | None = None
        self._trim: MemoryTrim | None = None
        #: Give freed memory back to the system after connections close (``mailserver serve`` sets it: the
        #: process is the server's; not in a test process that runs servers among other work).
        self.trim_memory = False
        #: Keyword arguments for the QueueRunner (tests map MX hosts to loopback ports this way).
        self.queue_options: dict[str, object] = {}
        self._stopping = False

    # ----------------------------------------------------------------------------------------- properties

    @property
    def blobs(self):
        return self.store.blobs

    def port(self, name: str, *, proxied: bool = False) -> int:
        """The bound port of the first listener called ``name`` in ``[listen]`` (``[listen_proxied]`` with
        ``proxied``); tests listen on port 0."""
        for lst in self.listening:
            if lst.name == name and (lst.proxy is not None) == proxied:
                return lst.bound_port
        raise KeyError(f"listener {name} is not running")

    # ----------------------------------------------------------------------------------------- start

    def startService(self) -> None:
        started_ok = False
        try:
            self._start()
            started_ok = True
        finally:
            if not started_ok:
                self._teardown_now()
        super().startService()

    def _start(self) -> None:
        cfg = self.config
        # Worker threads (parsing, hashing, SQLAlchemy) share the GIL with the reactor and the single database
        # writer; a 1 ms switch interval (default 5 ms) keeps the group commit and the replies from queueing behind
        # them (measured: +6-10 % durable deliveries/s in scripts/bench/store.py).
        sys.setswitchinterval(0.001)
        soft, hard = raise_open_files_limit()
        check_shared_storage(cfg)
        self.store = open_store(cfg, run_migrations=self.worker is None)  # the supervisor migrated once for all
        self.pools.start()
        self.monitor = self._make_monitor()
        self.astore = AsyncStore(self.reactor, self.store, self.pools, self.hub, max_batch=cfg.store.max_batch)
        if not is_sqlite(cfg.db_url):
            # Several processes may share this database: the per-cluster state lives in it.
            from mailserver.clusterstate_pg import PgClusterState

            self.cluster = PgClusterState(self.reactor, self.store.engine, self.pools, cfg.limits)
        elif self.worker is not None:
            # Several worker processes on one SQLite file: the state lives in its tables.
            from mailserver.clusterstate_sqlite import SqliteClusterState

            self.cluster = SqliteClusterState(self.reactor, self.store, self.pools, cfg.limits, self.worker.holder)
        self.cluster.start()
        if self.worker is not None:
            from mailserver.bus import BusClient

            self.bus = BusClient(self.reactor, self.worker.bus_path, self.hub, self.worker.holder,
                                 on_kick=self._kicked, forward_changes=is_sqlite(cfg.db_url),
                                 on_login=self._login_shared)
            self.bus.start()
            self.hub.board = self._open_board()
        if not is_sqlite(cfg.db_url):
            # Several processes may share this database: pass change events between them.
            from storage.pgnotify import PgNotifyBridge

            self.pg_bridge = PgNotifyBridge(self.reactor, self.store.engine, self.hub, self.pools.db_write)
            self.pg_bridge.start()
        self.auth = self._make_authenticator()
        self.auth.observer = self.monitor.metrics.login
        if self.bus is not None:
            self.auth.on_verified = self.bus.share_login
            self.auth.on_forget = self.bus.share_forget
        needs_tls = bool(cfg.listen.items() or cfg.listen_proxied.items())
        if needs_tls:
            from mailserver.tls import server_context_factory

            try:
                self.tls = server_context_factory(cfg, self.store)
            except ValueError as e:
                raise ListenError(f"tls: {e}") from None
        self.provided = self._make_services()
        if cfg.antispam.bayes:
            # Training recorded by the store's operations (moves into / out of Junk, $Junk / $NotJunk).
            self.trainer = Trainer(self.reactor, self.astore, self.pools, cfg)
            for stage in self.provided.pipeline.checks:
                if isinstance(stage, BayesCheck):
                    self.trainer.on_trained = stage.forget
            self.store.on_training = lambda: self.reactor.callFromThread(self.trainer.kick)
            self.trainer.start()
        for i, (name, address) in enumerate(cfg.listen.items()):
            self._listen(name, address, inherited=self._inherited("listen", i))
        for i, (name, address) in enumerate(cfg.listen_proxied.items()):
            self._listen(name, address, proxied=True, inherited=self._inherited("listen_proxied", i))
        if self.trim_memory:
            limiters = self.provided.state.connections
            self._trim = MemoryTrim(self.reactor, lambda: sum(lim.released + lim.refused for lim in limiters.values()),
                                    lambda f: run_in(self.reactor, self.pools.cpu, f))
            self._trim.start()
        self.monitor.start()
        self._start_heartbeat()
        if self.worker is None:
            self._start_maintenance()
        else:
            from mailserver.leases import MAINTENANCE, ClusterLease

            self.lease = ClusterLease(self.reactor, self.store, self.pools.db_write, MAINTENANCE,
                                      holder=self.worker.holder, ttl=cfg.server.lease,
                                      on_gain=self._start_maintenance, on_lose=self._stop_maintenance)
            self.lease.start()
        self.started_at = time.time()
        settle_heap()  # the start-up's objects out of the collector's way, once per process (mailserver/memory.py)
        log.info("open files limit {soft} (hard {hard})", soft=soft, hard=hard)
        for lst in self.listening:
            log.info("listening {name} on {address}{how}", name=lst.name,
                     address=str(ListenAddress(lst.address.host, lst.bound_port)),
                     how=" (PROXY protocol)" if lst.proxy is not None else "")

    def _start_heartbeat(self) -> None:
        from mailserver.leases import new_holder
        from mailserver.nodes import Heartbeat, node_name

        cfg = self.config
        holder = self.worker.holder if self.worker is not None else new_holder("serve")
        role = f"worker{self.worker.index}" if self.worker is not None else "serve"
        self.heartbeat = Heartbeat(self.reactor, self.store, self.pools.db_write, holder=holder,
                                   node=node_name(cfg.server.node_name), role=role, interval=cfg.server.heartbeat,
                                   listeners=lambda: [f"{lst.name}{'(proxied)' if lst.proxy is not None else ''}="
                                                      f"{ListenAddress(lst.address.host, lst.bound_port)}"
                                                      for lst in self.listening])
        self.heartbeat.start()

    def _inherited(self, section: str, index: int):
        return self.worker.socket_for(section, index) if self.worker is not None else None

    def _start_maintenance(self) -> None:
        """The periodic blob collector and (``[queue] run``) the queue runner: in every single process, and in the
        one worker holding the maintenance lease."""
        cfg = self.config
        self._gc = task.LoopingCall(self._collect_blobs)
        self._gc.clock = self.reactor
        self._gc.start(cfg.store.gc_interval, now=False)
        if self._digests is None:
            from mailserver.digest import DigestRunner

            self._digests = DigestRunner(self.reactor, self.astore, self.provided.pipeline, cfg)
            self._digests.start()
        if cfg.queue.run:
            from mailserver.delivery.queue import QueueRunner

            self.queue_runner = QueueRunner(self.provided, **self.queue_options)
            self.queue_runner.start()

    @defer.inlineCallbacks
    def _stop_maintenance(self):
        if self._gc is not None and self._gc.running:
            self._gc.stop()
        digests, self._digests = self._digests, None
        if digests is not None:
            digests.stop()
        runner, self.queue_runner = self.queue_runner, None
        if runner is not None:
            yield runner.stop()

    def _login_shared(self, frame: dict) -> None:
        """Another worker verified a password (or forgot an account's): the same in this one's cache."""
        if self.auth is not None:
            self.auth.apply_shared(frame)

    def _open_board(self):
        """This worker's view of the supervisor's commit board (mailserver.commitboard), or None without one (a
        supervisor of an older version, a worker index past its rows): sessions then hear of the other workers'
        changes only by the bus."""
        from mailserver import commitboard

        try:
            return commitboard.CommitBoard(commitboard.board_path(Path(self.worker.bus_path).parent),
                                           self.worker.index)
        except (OSError, ValueError) as e:
            log.warn("no commit board ({e}): other workers' changes show by the bus only", e=e)
            return None

    def _kicked(self) -> None:
        """Another worker queued outbound mail (the bus)."""
        if self.queue_runner is not None:
            self.queue_runner.kick()

    def _make_monitor(self):
        from mailserver.metrics import Monitor

        monitor = Monitor(reactor=self.reactor, config=self.config, store=self.store, pools=self.pools,
                          queue_alive=self._queue_alive, running=lambda: self.running and not self._stopping)
        for pool in self.pools.all():
            pool.wait_observer = monitor.metrics.pool_waited
        return monitor

    def _queue_alive(self) -> bool | None:
        if not self.config.queue.run:
            return None
        if self.lease is not None and not self.lease.held:
            return None  # another worker of the cluster runs the queue
        return self.queue_runner is not None and self.queue_runner.alive()

    def _make_services(self) -> Services:
        router = build_router(self.config, self.store)
        runner = ReactorRunner(self.reactor, self.pools, self.astore, self.kick_queue)
        pipeline = Pipeline(runner, self.config, router, self.store.blobs)
        pipeline.register(SenderHeaderCheck(runner, router))  # RFC 6409 8.1: From:/Sender: the account owns
        resolver = DnsResolver(self.config.dns, cache_size=self.config.senderauth.dns_cache)
        # DNS block/allow lists (one cached answer per client, shared with greylisting) and greylisting (at RCPT in
        # smtp/protocol.py, or here after DATA, before any other check: a deferred message needs none).
        dns_lists = DnsLists(self.config, resolver, runner.dns, self.reactor)
        self.greylist = (Greylister(self.config, self.astore, clock=self.reactor, dns_lists=dns_lists)
                         if self.config.antispam.greylist.enabled else None)
        if self.greylist is not None and self.greylist.after_data:
            pipeline.register(GreylistStage(self.greylist))
        # Mail from outside on the MX listener: SPF, DKIM, DMARC, ARC, iprev, one Authentication-Results (RFC 8601).
        senderauth = SenderAuthSettings(self.config)
        pipeline.add_transform(AuthResultsStripper(senderauth))
        pipeline.register(SenderAuthCheck(runner, senderauth, resolver, self.store.blobs, reactor=self.reactor))
        if self.config.antispam.bayes:
            pipeline.register(CorrespondentRecorder(runner))  # whom the account writes to is not spam
        # Virus scan, spam scorers (DNS lists, rspamd, Bayes), the spam policy.
        for stage in inbound_stages(self.reactor, self.config, sender_rules=self.astore.sender_rules,
                                    dns_lists=dns_lists, runner=runner):
            pipeline.register(stage)
        pipeline.filter = SieveFilter(self.config, self.store, self.astore,
                                      lambda f, *a: run_in(self.reactor, self.pools.cpu, f, *a), clock=self.reactor)
        pipeline.filter.pipeline = pipeline  # redirects and vacation replies go through it
        pipeline.forwarder = Forwarder(self.config, router, clock=self.reactor.seconds)  # SRS + ARC of forwards
        pipeline.observer = self.monitor.metrics
        verifier = None
        if any(g.verify != "none" for g in self.config.gateway.domain.values()):
            verifier = RecipientVerifier(self.config, self.astore, self.reactor, self.pools)
        return Services(config=self.config, reactor=self.reactor, store=self.store, astore=self.astore, hub=self.hub,
                        auth=self.auth, tls=self.tls, pools=self.pools, cluster=self.cluster, router=router,
                        pipeline=pipeline, kick_queue=self.kick_queue,
                        listeners=self._bound_listeners, running=lambda: self.running,
                        state=ProcessState(metrics=self.monitor.metrics), monitor=self.monitor,
                        verifier=verifier, greylist=self.greylist)

    def _bound_listeners(self) -> list[BoundListener]:
        out = []
        for lst in self.listening:
            bound = lst.port.getHost()
            out.append(BoundListener(lst.name, getattr(bound, "host", lst.address.host), bound.port,
                                     proxied=lst.proxy is not None))
        return out

    def _make_authenticator(self):
        from mailserver.auth import Authenticator, Credentials, PasswordHasher

        store = self.store

        def lookup(address: str):
            def blocking():
                acct = store.get_account(address)
                if acct is None:
                    return None
                return Credentials(acct.id, acct.address, acct.password_hash, acct.enabled)

            return run_in(self.reactor, self.pools.db_read, blocking)

        def update_hash(account_id: int, new_hash: str):
            return run_in(self.reactor, self.pools.db_write, store.set_password_hash, account_id, new_hash)

        hasher = PasswordHasher(self.config.auth.default_scheme)
        hasher.prepare()  # at start, before any listener: unknown accounts cost as much the first time as later
        return Authenticator(hasher, lookup, update_hash,
                             hash_pool=self.pools.hash, clock=self.reactor, limits=self.config.limits,
                             auth_config=self.config.auth, secret=self.secret,
                             failures=self.cluster.login_failures)

    def _listen(self, name: str, address: ListenAddress, *, proxied: bool = False,
                inherited: InheritedSocket | None = None) -> None:
        """Listen for ``name`` on ``address`` (or on the ``inherited`` socket the supervisor bound there).  A proxied
        listener reads the PROXY header first, in the clear, and only then (on an implicit-TLS listener) the TLS
        handshake: TCP -> PROXY header -> TLS -> tracking -> protocol."""
        section = "listen_proxied" if proxied else "listen"
        module_name, func_name = LISTENERS[name].split(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            raise ListenError(f"{section}.{name}: protocol module {module_name} is not available ({e})") from None
        factory = getattr(module, func_name)(self.provided, name)
        factory.noisy = False
        wrapper = TrackingFactory(factory, clock=self.reactor, implicit_tls=name in IMPLICIT_TLS,
                                  handshake_timeout=self.config.limits.tls_handshake_timeout,
                                  responses=None if name == "metrics" else self.monitor.metrics.responses.labels(name))
        proxy = None
        try:
            if proxied:
                inner = TLSMemoryBIOFactory(self.tls, False, wrapper) if name in IMPLICIT_TLS else wrapper
                proxy = ProxiedFactory(inner, name=f"{section}.{name}", trusted=Networks(self.config.proxy.trusted),
                                       clock=self.reactor, header_timeout=self.config.limits.proxy_header_timeout)
                outer = proxy
            else:
                outer = TLSMemoryBIOFactory(self.tls, False, wrapper) if name in IMPLICIT_TLS else wrapper
            if inherited is not None:
                # The supervisor bound and listens on it; the reactor takes a duplicate, ours is closed.
                port = self.reactor.adoptStreamPort(inherited.fd, inherited.family, outer)
                os.close(inherited.fd)
                accept_one_per_wake(port)
            elif proxied:
                port = self.reactor.listenTCP(address.port, proxy, interface=address.host, backlog=1024)
            elif name in IMPLICIT_TLS:
                port = self.reactor.listenSSL(address.port, wrapper, self.tls, interface=address.host,
                                              backlog=1024)
            else:
                port = self.reactor.listenTCP(address.port, wrapper, interface=address.host, backlog=1024)
        except CannotListenError as e:
            reason = getattr(e.socketError, "strerror", None) or str(e.socketError)
            raise ListenError(f"{section}.{name}: cannot listen on {address}: {reason}") from None
        self.listening.append(Listening(name, address, port, wrapper, proxy))

    # ----------------------------------------------------------------------------------------- stop

    def _collect_blobs(self):
        """Remove expired quarantined copies, then bodies nothing references any more (in the writer pool;
        failures are logged, never fatal)."""
        def expired(items):
            for i in items:
                log.info("quarantine expire {id} {qid} for <{rcpt}> by the collector", id=i.id, qid=i.queue_id,
                         rcpt=i.recipient)

        d = run_in(self.reactor, self.pools.db_write, self.store.expire_quarantined, time.time())
        d.addCallbacks(expired, lambda f: log.failure("removing expired quarantined copies failed", f))
        if self.greylist is not None:
            # Greylisting's own clock (the stored times are in it).
            d.addCallback(lambda _: run_in(self.reactor, self.pools.db_write, self.store.prune_greylist,
                                           self.greylist.clock.seconds()))
            d.addErrback(lambda f: log.failure("removing expired greylisting rows failed", f))
        d.addCallback(lambda _: run_in(self.reactor, self.pools.db_write, self.store.collect_blobs,
                                       self.config.store.gc_grace))

        def done(n):
            if n:
                log.info("removed {n} unreferenced message bodies", n=n)

        d.addCallbacks(done, lambda f: log.failure("removing unreferenced message bodies failed", f))
        # The safety net: stored bodies no row names at all (older than the grace period, so no delivery in
        # progress is touched), a bounded batch per run in the read pool.
        d.addCallback(lambda _: run_in(self.reactor, self.pools.db_read, self.store.collect_orphan_blobs,
                                       self.config.store.gc_grace, self.reactor.seconds()))

        def swept(n):
            if n:
                log.info("removed {n} message bodies no row names", n=n)

        return d.addCallbacks(swept, lambda f: log.failure("removing message bodies no row names failed", f))

    def kick_queue(self) -> None:
        """Tell the queue runner new outbound mail is waiting (call after Store.enqueue); in a worker that does not
        run it, tell the one that does (the bus)."""
        if self.queue_runner is not None:
            self.queue_runner.kick()
        elif self.bus is not None:
            self.bus.kick()

    def _teardown_now(self) -> None:
        if self._gc is not None and self._gc.running:
            self._gc.stop()
        if self._digests is not None:
            self._digests.stop()
            self._digests = None
        if self.heartbeat is not None:
            self.heartbeat.halt()
        if self.trainer is not None:
            self.trainer.stop()
        if self._trim is not None:
            self._trim.stop()
        if self.monitor is not None:
            self.monitor.stop()
        for lst in self.listening:
            try:
                lst.port.stopListening()
            except Exception:
                pass
        self.listening = []
        if self.pg_bridge is not None:
            self.pg_bridge.stop()
        if self.bus is not None:
            self.bus.stop()
        self.cluster.stop()
        self.pools.stop()
        if self.store is not None:
            self.store.dispose()

    @defer.inlineCallbacks
    def stopService(self):
        if self._stopping:
            return
        self._stopping = True
        if self._gc is not None and self._gc.running:
            self._gc.stop()
        if self.trainer is not None:
            self.trainer.stop()
            yield self.trainer.when_idle()
        if self._trim is not None:
            self._trim.stop()
        if self.monitor is not None:
            self.monitor.stop()
        if self.heartbeat is not None:
            yield self.heartbeat.stop()
        if self.lease is not None:
            yield self.lease.stop()  # stops the queue runner it started, gives the lease back
        if self.queue_runner is not None:
            yield self.queue_runner.stop()
        yield super().stopService()
        yield defer.gatherResults([defer.maybeDeferred(lst.port.stopListening) for lst in self.listening],
                                  consumeErrors=True)
        for lst in self.listening:
            if lst.proxy is not None:
                lst.proxy.abort_pending()
        open_protocols = [p for lst in self.listening for p in list(lst.factory.protocols)]
        if open_protocols:
            log.info("waiting up to {grace}s for {n} open session(s)", grace=SHUTDOWN_GRACE, n=len(open_protocols))
            deadline = self.reactor.seconds() + SHUTDOWN_GRACE
            for p in open_protocols:
                closer = getattr(p.wrappedProtocol, "server_shutdown", None)
                if closer is not None:
                    try:
                        closer()
                    except Exception:
                        log.failure("shutdown notice failed")
            while any(lst.factory.protocols for lst in self.listening) and self.reactor.seconds() < deadline:
                yield _sleep(self.reactor, 0.05)
            for lst in self.listening:
                for p in list(lst.factory.protocols):
                    p.transport.abortConnection()
        # Let in-flight deliveries commit.
        deadline = self.reactor.seconds() + SHUTDOWN_GRACE
        while self.astore is not None and self.astore.committer._running and self.reactor.seconds() < deadline:
            yield _sleep(self.reactor, 0.02)
        if self.provided is not None:
            yield defer.gatherResults([defer.maybeDeferred(s.close) for s in self.provided.pipeline.checks
                                       if hasattr(s, "close")], consumeErrors=True)
        self.listening = []
        if self.pg_bridge is not None:
            self.pg_bridge.stop()
        if self.bus is not None:
            yield self.bus.stop()
        self.cluster.stop()
        self.pools.stop()
        if self.store is not None:
            self.store.dispose()
        log.info("stopped")


def _sleep(reactor, seconds: float):
    d = defer.Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d
