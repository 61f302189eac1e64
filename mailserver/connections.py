"""What every listener does with its connections: the per-address cap, and a close that always completes.

A close in Twisted is a request. ``loseConnection()`` waits until buffered output is written and, over TLS, until the
close_notify exchange is done, which needs the transport to *read*. A protocol that paused reading (a pending
check, output back-pressure) and then closes would wait for ever; so would one whose peer stops reading. Until
``connectionLost`` runs, the connection holds its slot in the per-address count and a file descriptor. So every
protocol closes through :func:`close_transport`: it resumes reading, asks for the clean close, and aborts the
connection if it is still there ``grace`` seconds later.

:class:`ConnectionLimiter` is the per-address cap. A slot is taken in ``connectionMade`` and given back in
``connectionLost``, which Twisted calls exactly once for every connection that was made, however it ends.
"""

from __future__ import annotations

from collections import Counter
from typing import Protocol

from twisted.internet.interfaces import IDelayedCall, IReactorTime

#: Seconds a clean close may take (output drained, TLS close_notify answered) before the connection is aborted.
CLOSE_GRACE = 10.0


class ConnectionObserver(Protocol):
    """Told of every connection of a family (``mailserver.metrics.ConnectionCounts``)."""

    def opened(self) -> None: ...
    def closed(self) -> None: ...
    def refused(self) -> None: ...


class ConnectionLimiter:
    """Open connections per client address, shared by the listeners of one protocol family."""

    def __init__(self, max_per_ip: int, observer: ConnectionObserver | None = None):
        self.max_per_ip = max_per_ip
        self.observer = observer
        self._open: Counter[str] = Counter()

    def acquire(self, ip: str) -> bool:
        """Take a slot for ``ip``; False (and nothing taken) when the address is at its cap."""
        if self._open[ip] >= self.max_per_ip:
            if self.observer is not None:
                self.observer.refused()
            return False
        self._open[ip] += 1
        if self.observer is not None:
            self.observer.opened()
        return True

    def release(self, ip: str) -> None:
        if self.observer is not None:
            self.observer.closed()
        n = self._open[ip] - 1
        if n > 0:
            self._open[ip] = n
        else:
            del self._open[ip]

    def count(self, ip: str | None = None) -> int:
        """Open connections of ``ip``, or of every address."""
        return self._open.get(ip, 0) if ip is not None else sum(self._open.values())


def close_transport(transport, clock: IReactorTime, grace: float = CLOSE_GRACE) -> IDelayedCall | None:
    """Close ``transport`` cleanly if that completes within ``grace`` seconds, else abort it.

    Returns the pending abort (cancel it in ``connectionLost``), or None when nothing was left to close."""
    if getattr(transport, "disconnected", False):
        return None
    try:
        transport.unregisterProducer()  # a registered producer keeps twisted's TLS from shutting down
    except Exception:
        pass
    try:
        transport.resumeProducing()  # the close (TLS close_notify, the peer's FIN) needs reading
    except Exception:
        pass
    transport.loseConnection()

    def abort():
        if not getattr(transport, "disconnected", False):
            transport.abortConnection()

    return clock.callLater(grace, abort)


def refuse(transport, clock: IReactorTime, message: bytes, *, tls_handshake_pending: bool) -> IDelayedCall | None:
    """Turn away a connection over its cap: ``message`` in the clear, then close.

    On an implicit-TLS listener the handshake has not happened yet, and a client that never completes it would
    keep the connection (and its descriptor) for ever: such a connection is aborted at once, without a message."""
    if tls_handshake_pending:
        transport.abortConnection()
        return None
    transport.write(message)
    return close_transport(transport, clock)
