"""Hostile peers on 127.0.0.1 for the rspamd and clamd clients: a threaded TCP server whose every connection runs
a behaviour function (read what it likes, answer garbage, hang until released, flood)."""

from __future__ import annotations

import socket
import struct
import threading
from contextlib import contextmanager


class FakePeer:
    def __init__(self, behaviour):
        self.behaviour = behaviour
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.received: list[bytes] = []  # what each connection's behaviour recorded
        self.arrived = threading.Event()  # a request reached the peer
        self.release = threading.Event()  # the test lets a hanging behaviour go on
        self.closing = False
        self.threads: list[threading.Thread] = []
        self.acceptor = threading.Thread(target=self._accept, daemon=True)
        self.acceptor.start()

    def _accept(self):
        while not self.closing:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self.threads.append(t)
            t.start()

    def _serve(self, conn):
        conn.settimeout(30)
        try:
            self.behaviour(self, conn)
        except OSError:
            pass
        finally:
            conn.close()

    def hang(self, conn) -> None:
        """Say nothing until the test releases us or the client gives up."""
        self.arrived.set()
        conn.settimeout(0.05)
        while not self.release.is_set() and not self.closing:
            try:
                if conn.recv(65536) == b"":
                    return
            except socket.timeout:
                continue

    def close(self):
        self.closing = True
        self.release.set()
        self.sock.close()
        for t in self.threads:
            t.join(10)


@contextmanager
def fake_peer(behaviour):
    peer = FakePeer(behaviour)
    try:
        yield peer
    finally:
        peer.close()


# ------------------------------------------------------------------------------------------------- HTTP (rspamd)


def read_http_request(conn) -> bytes:
    """One request: head and a Content-Length body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def http_response(body: bytes, status: bytes = b"200 OK", length: int | None = None) -> bytes:
    n = len(body) if length is None else length
    return (b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\nContent-Length: " + str(n).encode() +
            b"\r\nConnection: close\r\n\r\n" + body)


# ------------------------------------------------------------------------------------------------- clamd


def read_instream(conn) -> bytes | None:
    """The command and every chunk of one INSTREAM; the data, or None if the framing is wrong."""
    buf = b""

    def need(n):
        nonlocal buf
        while len(buf) < n:
            chunk = conn.recv(65536)
            if not chunk:
                raise EOFError
            buf += chunk
        out, buf = buf[:n], buf[n:]
        return out

    try:
        if need(10) != b"zINSTREAM\0":
            return None
        data = b""
        while True:
            (n,) = struct.unpack(">I", need(4))
            if n == 0:
                return data
            data += need(n)
    except EOFError:
        return None
