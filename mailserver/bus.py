"""The worker bus: change events and queue kicks between the worker processes of one ``mailserver serve``.

Workers on one SQLite file have no LISTEN/NOTIFY, so the supervisor fans messages out over a Unix socket in
data_dir (``run/bus.sock``, in a directory only the server's user may enter): each worker connects
(:class:`BusClient`), sends its own committed changes (``ChangeHub.forward``) and queue kicks, and the supervisor
(:class:`BusServerFactory`) passes every frame on to every other worker, which publishes the changes into its own
hub: an IMAP IDLE on worker A sees a delivery committed on worker B within one local round trip.

Frames are 32-bit length-prefixed JSON objects (at most :data:`MAX_FRAME` bytes), ``{"t": "changes", "o": origin,
"c": [change, ...]}`` (each change the list of its fields, in ``Change``'s order; a worker collects its commits'
changes for :data:`COALESCE` seconds into one such frame, and drops the frames of others unread while nothing in it
listens for changes), ``{"t": "kick"}`` (outbound mail waits: the queue runner's holder polls at once),
``{"t": "resync"}``, ``{"t": "login", …}`` / ``{"t": "login-forget", …}`` (an entry of the login success cache,
:meth:`mailserver.auth.Authenticator.apply_shared`: an HMAC under the supervisor's key, the address, digests of the
stored hashes, never a password or a hash) and, to the supervisor only, ``{"t": "ready", "o": origin}`` (the
worker's listeners serve).

What can be missed is caught up from the database, as with PostgreSQL's LISTEN (:mod:`storage.pgnotify`): events are
sent after the commit, so a worker that dies between its commit and its send, or a frame dropped while a worker was
disconnected, loses them.  So a RESYNC reaches every subscriber of a worker (a) each time its bus connection is
(re)established, (b) when the supervisor reaps a dead worker (it tells every other worker) and (c) when a worker
whose frames were dropped reconnects (it asks the others).  Changes of PostgreSQL workers travel by NOTIFY, not here.
"""

from __future__ import annotations

import json
from dataclasses import fields

from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet import endpoints, protocol
from twisted.logger import Logger
from twisted.protocols.basic import Int32StringReceiver

from storage.changes import Change

log = Logger()

#: Largest frame accepted (a larger one ends the connection: only our own processes connect).
MAX_FRAME = 4 << 20
#: Changes per frame (a large EXPUNGE or flag change is split).
CHANGES_PER_FRAME = 2000
#: Seconds a worker collects its committed changes before it sends them in one frame: under load every group
#: commit publishes a few changes, and each frame costs the supervisor (relay) and every other worker (decode) a
#: wake-up; one frame per this interval instead of one per commit.  Far below the bound IDLE promises (< 1 s).
COALESCE = 0.02

#: A change travels as a list of its fields in this order (no names, no ``origin``: the frame names the sender).
_FIELDS = tuple(f.name for f in fields(Change) if f.name != "origin")
_KEYWORDS = _FIELDS.index("keywords")


def encode_changes(origin: str, changes: list[Change]) -> list[bytes]:
    out = []
    for i in range(0, len(changes), CHANGES_PER_FRAME):
        items = [[c.kind, c.account_id, c.mailbox_id, c.uid, c.modseq, c.flags, list(c.keywords), c.name,
                  c.old_name, c.size, c.reader] for c in changes[i:i + CHANGES_PER_FRAME]]
        out.append(json.dumps({"t": "changes", "o": origin, "c": items}, separators=(",", ":")).encode())
    return out


def decode_changes(frame: dict) -> list[Change]:
    changes = []
    for item in frame.get("c", ()):
        if isinstance(item, dict):  # the named form of earlier versions (a worker started before an upgrade)
            item["keywords"] = tuple(item.get("keywords") or ())
            changes.append(Change(**item))
            continue
        if len(item) != len(_FIELDS):
            raise ValueError("a change of the wrong length")
        item[_KEYWORDS] = tuple(item[_KEYWORDS] or ())
        changes.append(Change(*item))
    return changes


#: How every changes frame begins (encode_changes), so a worker with no listeners can drop one unparsed.
CHANGES_PREFIX = b'{"t":"changes"'
KICK = json.dumps({"t": "kick"}).encode()
RESYNC = json.dumps({"t": "resync"}).encode()
#: The start of a worker's "my listeners are serving" frame (``{"t": "ready", "o": origin}``), for the supervisor.
READY_PREFIX = b'{"t": "ready"'


# --------------------------------------------------------------------------------------------- supervisor side


class BusServerProtocol(Int32StringReceiver):
    MAX_LENGTH = MAX_FRAME

    def connectionMade(self):
        self.factory.peers.add(self)

    def connectionLost(self, reason):
        self.factory.peers.discard(self)

    def stringReceived(self, data: bytes):
        if data.startswith(READY_PREFIX):  # for the supervisor only
            try:
                origin = str(json.loads(data).get("o", ""))
            except (ValueError, AttributeError):
                return
            self.factory.worker_ready(origin)
            return
        for peer in list(self.factory.peers):
            if peer is not self:
                peer.sendString(data)
        self.factory.frames += 1

    def lengthLimitExceeded(self, length):
        log.error("worker bus: a frame of {n} bytes; connection closed", n=length)
        self.transport.loseConnection()


class BusServerFactory(protocol.Factory):
    """The supervisor's end: every frame a worker sends goes to every other worker."""

    protocol = BusServerProtocol
    noisy = False

    def __init__(self, on_ready=None):
        self.peers: set[BusServerProtocol] = set()
        self.frames = 0
        self.ready: set[str] = set()  # the workers (origins) that said their listeners serve
        self.on_ready = on_ready  # on_ready(origin) for each of them

    def worker_ready(self, origin: str) -> None:
        if origin not in self.ready:
            self.ready.add(origin)
            if self.on_ready is not None:
                self.on_ready(origin)

    def broadcast(self, data: bytes) -> None:
        for peer in list(self.peers):
            peer.sendString(data)


# --------------------------------------------------------------------------------------------- worker side


class _BusClientProtocol(Int32StringReceiver):
    MAX_LENGTH = MAX_FRAME

    def connectionMade(self):
        self.factory.client._connected(self)

    def connectionLost(self, reason):
        self.factory.client._disconnected(self)

    def stringReceived(self, data: bytes):
        self.factory.client._received(data)

    def lengthLimitExceeded(self, length):
        log.error("worker bus: a frame of {n} bytes; connection closed", n=length)
        self.transport.loseConnection()


class BusClient:
    """A worker's end of the bus: sends this process's changes and kicks, publishes the others' into ``hub``.

    ``on_kick()`` runs when another worker queued outbound mail.  Reconnects with backoff when the connection is lost.
    ``forward_changes`` false (PostgreSQL, whose transactions notify the others): only kicks and RESYNCs travel.
    """

    def __init__(self, reactor, path: str, hub, origin: str, on_kick=None, forward_changes: bool = True,
                 on_login=None):
        self.reactor = reactor
        self.on_login = on_login
        self.path = path
        self.hub = hub
        self.origin = origin
        self.on_kick = on_kick
        self.forward_changes = forward_changes
        self.connects = 0
        self.received = 0
        self._proto: _BusClientProtocol | None = None
        self._dropped = False
        self._ready = False
        self._outgoing: list[Change] = []  # committed changes waiting for the next frame (COALESCE)
        self._flush_call = None
        factory = protocol.Factory.forProtocol(_BusClientProtocol)
        factory.noisy = False
        factory.client = self
        self._service = ClientService(endpoints.UNIXClientEndpoint(reactor, path), factory,
                                      retryPolicy=backoffPolicy(initialDelay=0.1, maxDelay=2.0), clock=reactor)

    @property
    def connected(self) -> bool:
        return self._proto is not None

    def start(self) -> None:
        if self.forward_changes:
            self.hub.forward = self.send_changes
        self._service.startService()

    def stop(self):
        if self.hub.forward == self.send_changes:
            self.hub.forward = None
        self.flush()
        return self._service.stopService()

    def send_changes(self, changes: list[Change]) -> None:
        """Send this process's committed ``changes`` to the others: in the next frame, at most :data:`COALESCE`
        seconds from now (in the order they were committed)."""
        self._outgoing.extend(changes)
        if self._flush_call is None:
            self._flush_call = self.reactor.callLater(COALESCE, self.flush)

    def flush(self) -> None:
        """Send the changes collected so far now."""
        call, self._flush_call = self._flush_call, None
        if call is not None and call.active():
            call.cancel()
        changes, self._outgoing = self._outgoing, []
        if changes:
            for frame in encode_changes(self.origin, changes):
                self._send(frame)

    def kick(self) -> None:
        self.flush()  # the frames keep the order of the events
        self._send(KICK)

    def share_login(self, key: bytes, address: str, hash_ids, seconds: float) -> None:
        """Tell the other workers of a verified login (their caches take it; lost if the bus is down)."""
        if self._proto is not None:
            self._proto.sendString(json.dumps({"t": "login", "k": key.hex(), "a": address,
                                               "h": sorted(h.hex() for h in hash_ids), "s": seconds},
                                              separators=(",", ":")).encode())

    def share_forget(self, address: str) -> None:
        if self._proto is not None:
            self._proto.sendString(json.dumps({"t": "login-forget", "a": address}).encode())

    def announce_ready(self) -> None:
        """Tell the supervisor this worker serves (now, or as soon as the bus is connected)."""
        self._ready = True
        if self._proto is not None:
            self._proto.sendString(self._ready_frame())

    def _ready_frame(self) -> bytes:
        return json.dumps({"t": "ready", "o": self.origin}).encode()

    def _send(self, frame: bytes) -> None:
        if self._proto is None:
            self._dropped = True  # the others catch up (RESYNC) when we are back
            return
        self._proto.sendString(frame)

    # -- from the protocol

    def _connected(self, proto) -> None:
        self._proto = proto
        self.connects += 1
        if self.connects > 1:
            log.info("worker bus connection re-established; sessions catch up from the database")
        if self._ready:
            proto.sendString(self._ready_frame())
        if self._dropped:
            self._dropped = False
            proto.sendString(RESYNC)
        # Whatever was committed before now is in the database; whatever comes later arrives here.
        self.hub.publish_resync()

    def _disconnected(self, proto) -> None:
        if self._proto is proto:
            self._proto = None

    def _received(self, data: bytes) -> None:
        if data.startswith(CHANGES_PREFIX) and not self.hub.listening:
            return  # nobody here listens for changes (no IDLE, no webmail stream): nothing to publish them to
        try:
            frame = json.loads(data)
            kind = frame.get("t")
            if kind == "changes":
                if frame.get("o") == self.origin:
                    return
                changes = decode_changes(frame)
                self.received += len(changes)
                self.hub.publish_remote(changes)
            elif kind == "kick":
                if self.on_kick is not None:
                    self.on_kick()
            elif kind == "resync":
                self.hub.publish_resync()
            elif kind in ("login", "login-forget"):
                if self.on_login is not None and isinstance(frame, dict):
                    self.on_login(frame)
        except (ValueError, TypeError, AttributeError):
            log.warn("ignoring a malformed worker bus frame")
