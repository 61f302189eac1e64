"""Hostile clients for the flow-control tests: bursts that never read, and what the server holds for them.

``flood(sock, unit)`` pipelines ``unit`` repeated (up to ``total`` octets) and never reads: it stops when the
server has not taken a byte for ``stall`` seconds (it stopped reading) and returns the octets sent.
``unsent_output(srv, listener)`` is what the server holds in user space for the listener's open connections:
written and not yet sent (the transport's buffer, and the TLS layer's).
"""

from __future__ import annotations

import socket
import ssl
import threading
import time

from tests.harness import call
from tests.logins import NORMAL_LOGIN_BOUND

#: Seconds a normal client's whole session (connect, greeting, EHLO or a login) may take during an attack (issue
#: 12: "within 1 s"; the suite's one wall-clock bound, as in tests/logins.py). The attacks take far longer.
SERVED_WITHIN = NORMAL_LOGIN_BOUND
#: Octets a hostile client offers in one burst (the issue's 20 MB).
BURST = 20 * 2**20
#: The most the server may hold unsent for one connection that does not read: the transport's 64 KiB bound, plus
#: one turn's replies (64 commands) and one TLS record, with room to spare.
MAX_UNSENT = 512 * 1024


def tls_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # no trust store to load: the tests' server is self-signed
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def flood(sock, unit: bytes, total: int = BURST, stall: float = 1.0) -> int:
    """Send ``unit`` repeated, never reading, until ``total`` octets or until the peer took nothing for ``stall``
    seconds. Works on plain and TLS sockets."""
    chunk = unit * max(1, 65536 // len(unit))
    sock.settimeout(stall)
    sent = 0
    while sent < total:
        try:
            n = sock.send(chunk[: total - sent])
        except (TimeoutError, socket.timeout, ssl.SSLWantWriteError):
            break
        if n == 0:
            break
        sent += n
    return sent


def unsent_output(srv, listener: str) -> list[int]:
    """Octets written and not yet sent, per open connection of ``listener`` (read on the reactor thread)."""
    factory = next(lst.factory for lst in srv.server.listening if lst.name == listener)

    def measure():
        out = []
        for tracked in list(factory.protocols):
            total = 0
            t = tracked.transport
            for _ in range(6):  # TrackedConnection -> [TLS protocol ->] [_BypassTLS ->] tcp connection
                total += sum(map(len, getattr(t, "_appSendBuffer", None) or []))
                if hasattr(t, "dataBuffer"):
                    total += len(t.dataBuffer) - t.offset + t._tempDataLen
                    break
                t = t.transport
            out.append(total)
        return out

    return call(measure)


def flows(srv, listener: str) -> list:
    """The FlowControl of each open connection of ``listener``."""
    factory = next(lst.factory for lst in srv.server.listening if lst.name == listener)
    return call(lambda: [getattr(t.wrappedProtocol, "flow", None) for t in list(factory.protocols)])


def output_blocked(srv, listener: str) -> bool:
    """Some open connection of ``listener`` has output that does not drain."""
    return any(f is not None and f.output_blocked for f in flows(srv, listener))


def small_send_buffers(srv, listener: str, size: int = 4096) -> None:
    """Give the server's sockets of ``listener`` a small fixed send buffer (no autotuning up to megabytes), so a
    client that does not read backs the server's output up after a few replies, not after megabytes of them."""
    factory = next(lst.factory for lst in srv.server.listening if lst.name == listener)

    def shrink():
        for tracked in list(factory.protocols):
            t = tracked.transport
            for _ in range(6):
                if hasattr(t, "getHandle") and hasattr(t, "dataBuffer"):
                    t.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
                    break
                t = t.transport

    call(shrink)


def dropped_after_stall(srv, listener: str, family: str, clock, stall: float) -> None:
    """The connection of ``listener`` whose output does not drain is still there ``stall - 1`` seconds after
    its output backed up, and is aborted after ``stall`` seconds (``clock`` is the listener's task.Clock).

    The server may still make a little progress now and then (kernel buffers grow): a new episode of back-pressure
    starts a new timer, so the clock is moved on by ``stall`` until the connection is gone (a bounded number of
    times)."""
    srv.wait_for(lambda: output_blocked(srv, listener), timeout=30)
    before = srv.server_sessions(family)
    srv.call(clock.advance, stall - 1)
    assert srv.server_sessions(family) == before, "aborted before the stall timeout"
    srv.call(clock.advance, 2)
    for _ in range(20):
        try:
            srv.wait_for(lambda: srv.server_sessions(family) == before - 1, timeout=1)
            return
        except AssertionError:
            srv.call(clock.advance, stall)
    raise AssertionError("the connection that does not read is still there")


def read_replies_in_background(sock, marker: bytes, expected: int):
    """Read and count ``marker`` in a thread (an attacker that reads its answers: the burst is about CPU).
    Returns (thread, counter, done-event)."""
    count = [0]
    done = threading.Event()

    def run():
        sock.settimeout(120)
        tail = b""
        try:
            while count[0] < expected:
                data = sock.recv(1 << 20)
                if not data:
                    break
                text = tail + data
                count[0] += text.count(marker)
                tail = text[-len(marker) + 1:]
        except OSError:
            pass
        done.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, count, done


class Timed:
    """``with Timed() as t: ...``; ``t.seconds`` afterwards (printed by the tests, never asserted on its own)."""

    def __enter__(self):
        self.start = time.monotonic()
        return self

    def __exit__(self, *exc):
        self.seconds = time.monotonic() - self.start
        return False
