"""What every listener does with its connections: the per-address cap, and a close that always completes.

A close in Twisted is a request. ``loseConnection()`` waits until buffered output is written and, over TLS, until the
close_notify exchange is done, which needs the transport to *read*. A protocol that paused reading (a pending
check, output back-pressure) and then closes would wait for ever; so would one whose peer stops reading. Until
``connectionLost`` runs, the connection holds its slot in the per-address count and a file descriptor. So every
protocol closes through :func:`close_transport`: it resumes reading, asks for the clean close, and aborts the
connection if it is still there ``grace`` seconds later.

:class:`ConnectionLimiter` is the per-address cap. A slot is taken in ``connectionMade`` and given back in
``connectionLost``, which Twisted calls exactly once for every connection that was made, however it ends.

:class:`FlowControl` is every connection's flow control, in both directions:

- *input*: reading from the peer is paused while any reason holds (a command waiting on the database, a session
  that used up its turn, output that does not drain); each part of the connection pauses and resumes for its own
  reason, so they never undo each other's pause;
- *output*: it is the transport's registered push producer. When the transport's write buffer is over its bound
  (64 KiB; twisted calls ``pauseProducing``), sessions stop taking commands (:meth:`FlowControl.writable`,
  :attr:`FlowControl.output_blocked`), and input that still arrives pauses reading, so a client that sends and
  never reads leaves its commands in the kernel, not our replies in memory. Reading is not paused at once: while a
  TLS handshake is incomplete twisted's TLS layer holds the first writes back and pauses its producer, and the
  handshake needs reading (no application data arrives until it is done);
- *stall*: a connection whose output has not drained within ``limits.output_stall_timeout`` seconds is aborted.

Sessions also bound their work per reactor turn: at most :data:`COMMANDS_PER_TURN` commands (and, for sessions
that count it, about :data:`OUTPUT_PER_TURN` octets of replies), then they go on in a later turn
(:meth:`FlowControl.next_turn`) with reading paused, so one client's pipelined burst never holds up the others.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

log = Logger()

#: Seconds a clean close may take (output drained, TLS close_notify answered) before the connection is aborted.
CLOSE_GRACE = 10.0
#: Commands one session handles in one reactor turn before it lets the other connections' turns come.
COMMANDS_PER_TURN = 64
#: Octets of replies after which a session that counts them ends its turn (the transport's own bound is 64 KiB).
OUTPUT_PER_TURN = 64 * 1024

#: Reasons to pause reading, one per part of a connection (any other string may be used as well).
OUTPUT = "output"  # the transport's write buffer is over its bound and input arrived meanwhile
TURN = "turn"  # the session used up this turn and goes on in the next one
SESSION = "session"  # the session waits (a check, a database query, a streamed literal)


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
        #: Connections given back, and connections turned away at the cap, so far (the memory trim looks at them).
        self.released = 0
        self.refused = 0

    def acquire(self, ip: str) -> bool:
        """Take a slot for ``ip``; False (and nothing taken) when the address is at its cap."""
        if self._open[ip] >= self.max_per_ip:
            self.refused += 1
            if self.observer is not None:
                self.observer.refused()
            return False
        self._open[ip] += 1
        if self.observer is not None:
            self.observer.opened()
        return True

    def release(self, ip: str) -> None:
        self.released += 1
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


@implementer(IPushProducer)
class FlowControl:
    """One connection's flow control (see the module docstring): reading paused for a set of reasons, output
    back-pressure from the transport, the stall timer and the turns.

    ``attach(transport)`` in ``connectionMade`` registers it as the transport's streaming producer; it stays
    registered for the whole connection (across STARTTLS: twisted moves it under the TLS layer). ``stop()`` before
    a close and in ``connectionLost``."""

    def __init__(self, reactor, clock: IReactorTime, stall_timeout: float, *, peer: str = "",
                 on_stall: Callable[[], None] | None = None):
        self.reactor = reactor  # for turns (callLater(0))
        self.clock = clock  # for the stall timer (tests pass a task.Clock)
        self.stall_timeout = stall_timeout
        self.peer = peer
        self.on_stall = on_stall
        #: Called when reading resumes (after every reason was lifted), e.g. to feed input held back meanwhile.
        self.on_reading: Callable[[], None] | None = None
        #: A producer told in turn when output backs up and drains (twisted.web's HTTP channel).
        self.downstream: IPushProducer | None = None
        self.transport = None
        self._reasons: set[str] = set()
        #: Reasons that pause reading only once input arrives (:meth:`pause_on_input`).
        self._on_input: set[str] = set()
        self._blocked = False
        self._waiters: list[Deferred] = []
        self._stall: IDelayedCall | None = None
        self._turn: IDelayedCall | None = None
        self._turn_fn: Callable[[], None] | None = None
        self.stopped = False

    def attach(self, transport) -> None:
        self.transport = transport
        transport.registerProducer(self, True)

    # -- reading ---------------------------------------------------------------------------------------------------
    @property
    def reading(self) -> bool:
        """No reason to pause reading holds."""
        return not self._reasons

    def pause_reading(self, reason: str) -> None:
        if self.stopped or reason in self._reasons:
            return
        was_reading = not self._reasons
        self._reasons.add(reason)
        if was_reading:
            self.transport.pauseProducing()

    def pause_on_input(self, reason: str) -> None:
        """Pause reading for ``reason`` when input next arrives (:meth:`received`), not now: a session that waits
        for its own work (the end of DATA being committed) while its client waits for the reply costs no
        stop/start of reading (two ``epoll_ctl`` calls) per command; a client that does send meanwhile has at most
        the one read that arrived taken in before reading pauses."""
        if not self.stopped and reason not in self._reasons:
            self._on_input.add(reason)

    def resume_reading(self, reason: str) -> None:
        self._on_input.discard(reason)
        if self.stopped or reason not in self._reasons:
            return
        self._reasons.discard(reason)
        if not self._reasons:
            self.transport.resumeProducing()
            if self.on_reading is not None:
                self.on_reading()

    def set_reading(self, reason: str, on: bool, *, on_input: bool = False) -> None:
        """Resume, or pause reading for ``reason`` (``on_input``: only once input arrives, :meth:`pause_on_input`)."""
        if on:
            self.resume_reading(reason)
        elif on_input:
            self.pause_on_input(reason)
        else:
            self.pause_reading(reason)

    def received(self) -> None:
        """Input arrived (call it first in ``dataReceived``): while output is blocked, or a reason of
        :meth:`pause_on_input` holds, read nothing more."""
        if self._blocked:
            self.pause_reading(OUTPUT)
        if self._on_input:
            pending, self._on_input = self._on_input, set()
            for reason in pending:
                self.pause_reading(reason)

    # -- output ----------------------------------------------------------------------------------------------------
    @property
    def output_blocked(self) -> bool:
        """The transport's write buffer is over its bound: write nothing more that can wait."""
        return self._blocked

    def writable(self) -> Deferred | None:
        """None when output may go on now, else a Deferred that fires once the transport has drained (and fails
        if the connection ends first)."""
        if not self._blocked or self.stopped:
            return None
        d: Deferred = Deferred()
        self._waiters.append(d)
        return d

    # -- turns -----------------------------------------------------------------------------------------------------
    def next_turn(self, f: Callable[[], None]) -> None:
        """Run ``f`` in a later reactor turn, once output is not blocked; read nothing meanwhile."""
        if self.stopped:
            return
        self._turn_fn = f
        self.pause_reading(TURN)
        if self._turn is None:
            self._turn = self.reactor.callLater(0, self._run_turn)

    @property
    def turn_pending(self) -> bool:
        return self._turn_fn is not None

    def _run_turn(self) -> None:
        self._turn = None
        if self.stopped or self._turn_fn is None:
            return
        if self._blocked:  # resumeProducing schedules the turn again
            return
        f, self._turn_fn = self._turn_fn, None
        f()
        if self._turn_fn is None:
            self.resume_reading(TURN)

    # -- IPushProducer: what the transport calls --------------------------------------------------------------------
    def pauseProducing(self) -> None:
        if self.stopped or self._blocked:
            return
        self._blocked = True
        self._stall = self.clock.callLater(self.stall_timeout, self._stalled)
        if self.downstream is not None:
            self.downstream.pauseProducing()

    def resumeProducing(self) -> None:
        if self.stopped or not self._blocked:
            return
        self._blocked = False
        self._cancel_stall()
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(None)
        if self.downstream is not None and not self._blocked and not self.stopped:
            self.downstream.resumeProducing()
        if self._blocked or self.stopped:  # a waiter filled the buffer again, or closed the connection
            return
        if self._turn_fn is not None and self._turn is None:
            self._turn = self.reactor.callLater(0, self._run_turn)
        self.resume_reading(OUTPUT)

    def stopProducing(self) -> None:
        downstream, self.downstream = self.downstream, None
        self.stop()
        if downstream is not None:
            downstream.stopProducing()

    def stop(self) -> None:
        """The connection is closing or gone: no more pauses, timers or turns; waiting writers fail."""
        if self.stopped:
            return
        self.stopped = True
        self._blocked = False
        self._reasons.clear()
        self._on_input.clear()
        self._cancel_stall()
        if self._turn is not None and self._turn.active():
            self._turn.cancel()
        self._turn = self._turn_fn = None
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.errback(ConnectionError("connection closed"))

    def _cancel_stall(self) -> None:
        if self._stall is not None and self._stall.active():
            self._stall.cancel()
        self._stall = None

    def _stalled(self) -> None:
        self._stall = None
        if self.stopped:
            return
        log.info("connection from {ip} aborted: output not read for {t}s", ip=self.peer, t=self.stall_timeout)
        if self.on_stall is not None:
            self.on_stall()
        transport = self.transport
        self.stop()
        if transport is not None and not getattr(transport, "disconnected", False):
            transport.abortConnection()
