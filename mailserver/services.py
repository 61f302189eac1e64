"""What the protocols are given: one typed :class:`Services` object, and the :class:`ProcessState` inside it.

``mailserver.service.MailServer`` builds one ``Services`` at start (after the store, the pools, the cluster state,
the authenticator and the TLS context exist) and passes it explicitly to every protocol factory
(``build_factory(services, listener_name)``), which passes it on to its sessions and to the delivery code they call.
Nothing reaches shared state through the server object or a dictionary of string keys.

``ProcessState`` holds only what truly belongs to this one process and is rebuilt empty by a restart: the IMAP
listing snapshots and their per-mailbox refresh locks, the per-IP connection limiters of each protocol family, the
webmail's open event streams per account, and the background preload of the snapshots.  State that several
processes on one database must share (maildrop locks, login failures, ``\\Recent``) is the cluster state's
(:mod:`mailserver.clusterstate`), not this.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from twisted.internet import defer

from mailserver.connections import ConnectionLimiter

if TYPE_CHECKING:
    from mailserver.asyncstore import AsyncStore
    from mailserver.auth import Authenticator
    from mailserver.clusterstate import ClusterState
    from mailserver.config import Config
    from mailserver.delivery.callout import RecipientVerifier
    from mailserver.delivery.pipeline import Pipeline
    from mailserver.delivery.router import Router
    from mailserver.imap.snapshot import SnapshotCache
    from mailserver.inbound.greylist import Greylister
    from mailserver.metrics import Metrics, Monitor
    from mailserver.threads import Pools
    from storage.changes import ChangeHub
    from storage.store import Store


@dataclass
class ProcessState:
    """Per-process caches and counters, typed (one instance per ``Services``)."""

    #: IMAP listings of large mailboxes (``mailserver.imap.snapshot``), created by the IMAP package on first use.
    imap_snapshots: SnapshotCache | None = None
    #: One refresh lock per mailbox id while a snapshot of it is being brought up to date.
    imap_snapshot_locks: dict[int, defer.DeferredLock] = field(default_factory=dict)
    #: The background snapshot preload: its delayed call, then its Deferred (None until an IMAP listener starts).
    imap_preload: Any = None
    #: Open webmail event streams per account id.
    webmail_streams: dict[int, int] = field(default_factory=dict)
    #: Per-IP connection limiters by protocol family (``smtp``, ``imap``, ``pop3``, ``http``).
    connections: dict[str, ConnectionLimiter] = field(default_factory=dict)
    #: The server's metrics (``mailserver.metrics``), told of every connection; None = not counted.
    metrics: Metrics | None = None

    def limiter(self, family: str, max_per_ip: int) -> ConnectionLimiter:
        """The one limiter of a protocol family, shared by its listeners (made on first use)."""
        limiter = self.connections.get(family)
        if limiter is None:
            observer = self.metrics.connection_counts(family) if self.metrics is not None else None
            limiter = self.connections[family] = ConnectionLimiter(max_per_ip, observer)
        return limiter


@dataclass(frozen=True)
class BoundListener:
    """A running listener: its name (``imaps``…) and the address it is bound to."""

    name: str
    host: str
    port: int
    #: A ``[listen_proxied]`` listener (its clients reach it through a load balancer, on the balancer's port).
    proxied: bool = False


@dataclass(frozen=True)
class Services:
    """Everything a protocol may use, built once by the service.

    ``store`` is blocking (thread pools only); code on the reactor thread uses ``astore`` (Deferreds).  ``reactor``
    is the clock and the reactor (tests may pass another).  ``kick_queue`` tells the queue runner that outbound mail
    is waiting; ``listeners`` lists the listeners that are bound; ``running`` says whether the service still runs.
    """

    config: Config
    reactor: Any
    store: Store
    astore: AsyncStore
    hub: ChangeHub
    auth: Authenticator
    tls: Any  # the server's TLS context factory, or None without listeners
    pools: Pools
    cluster: ClusterState
    router: Router
    pipeline: Pipeline
    kick_queue: Callable[[], None]
    listeners: Callable[[], Sequence[BoundListener]]
    running: Callable[[], bool]
    state: ProcessState = field(default_factory=ProcessState)
    #: Metrics and health (``mailserver.metrics``); None where no server runs (tools, some tests).
    monitor: Monitor | None = None
    #: Gateway mode's recipient verification for relay domains (``delivery/callout.py``); None = none.
    verifier: RecipientVerifier | None = None
    #: Greylisting (``mailserver.inbound.greylist.Greylister``); None when ``[antispam.greylist]`` is off.
    greylist: Greylister | None = None

    @property
    def metrics(self) -> Metrics | None:
        return self.monitor.metrics if self.monitor is not None else None

    @property
    def blobs(self):
        return self.store.blobs

    def port(self, name: str) -> int:
        """The bound port of the first listener called ``name`` (KeyError when none runs)."""
        for lst in self.listeners():
            if lst.name == name:
                return lst.port
        raise KeyError(f"listener {name} is not running")
