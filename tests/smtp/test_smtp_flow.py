"""SMTP under hostile bursts: a pipelined NOOP/RSET bomb is answered a bounded number of commands per reactor
turn, and a client that pipelines EHLO/HELP and never reads stops being read (its commands stay in the kernel, not
our replies in memory) and is dropped after limits.output_stall_timeout, over plain TCP, STARTTLS and implicit TLS;
a normal client on a second connection is served meanwhile."""

from __future__ import annotations

import smtplib
import socket
import threading

import pytest
from twisted.internet import task

from tests.harness import running_server
from tests.hostile import (
    BURST,
    MAX_UNSENT,
    SERVED_WITHIN,
    Timed,
    dropped_after_stall,
    flood,
    read_replies_in_background,
    tls_context,
    unsent_output,
)

STALL = 50.0
NOOPS = 2_000_000


def _factory(srv, listener):
    return next(lst.factory.wrappedFactory for lst in srv.server.listening if lst.name == listener)


def _reply(f) -> bytes:
    out = b""
    while True:
        line = f.readline()
        if not line:
            raise EOFError("connection closed")
        out += line
        if line[3:4] != b"-":
            return out


def _normal_client(port: int, implicit_tls: bool = False) -> float:
    """Greeting and EHLO on a second connection within SERVED_WITHIN (the best of three, as in tests/logins.py:
    a stalled server fails all three); the seconds it took."""
    times = []
    for _ in range(3):
        with Timed() as t:
            cls = smtplib.SMTP_SSL if implicit_tls else smtplib.SMTP
            kw = {"context": tls_context()} if implicit_tls else {}
            c = cls("127.0.0.1", port, timeout=30, **kw)
            code, _ = c.ehlo("normal.example.net")
            assert code == 250
            c.quit()
        times.append(t.seconds)
        if t.seconds < SERVED_WITHIN:
            break
    print(f"normal client served in {min(times) * 1000:.1f} ms")
    assert min(times) < SERVED_WITHIN, f"greeting and EHLO took {times} during the attack"
    return min(times)


def test_noop_bomb_does_not_stall_other_clients(tmp_path):
    """2,000,000 pipelined NOOP/RSET lines (12 MB, the attacker reads its answers): the server answers 64 per
    turn, and a normal client gets its greeting and EHLO answered while the bomb is still being answered."""
    with running_server(tmp_path, listeners=("smtp",)) as srv:
        port = srv.port("smtp")
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        assert raw.recv(1000).startswith(b"220")
        reader, answered, done = read_replies_in_background(raw, b"\r\n", NOOPS)
        bomb = b"NOOP\r\nRSET\r\n" * (NOOPS // 2)
        sender = threading.Thread(target=lambda: _send_quietly(raw, bomb), daemon=True)
        sender.start()
        try:
            srv.wait_for(lambda: answered[0] > 10_000, timeout=60)  # the bomb is being answered
            _normal_client(port)
            assert not done.is_set() and answered[0] < NOOPS, "the normal client got through only after the bomb"
            print("bomb replies before the normal client finished:", answered[0])
        finally:
            raw.shutdown(socket.SHUT_RDWR)
            raw.close()
            sender.join(30)
            reader.join(30)
        srv.wait_for(lambda: srv.server_sessions("smtp") == 0)


def _send_quietly(sock, data: bytes) -> None:
    try:
        sock.sendall(data)
    except OSError:
        pass


def _attacker(port: int, mode: str):
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    if mode == "implicit":
        s = tls_context().wrap_socket(raw)
        assert _reply(s.makefile("rb")).startswith(b"220")
        return s
    f = raw.makefile("rb")
    assert _reply(f).startswith(b"220")
    if mode == "starttls":
        raw.sendall(b"EHLO attacker.example\r\n")
        assert _reply(f).startswith(b"250")
        raw.sendall(b"STARTTLS\r\n")
        assert _reply(f).startswith(b"220")
        return tls_context().wrap_socket(raw)
    return raw


@pytest.mark.parametrize("mode", ["plain", "starttls", "implicit"])
def test_client_that_never_reads_is_not_read_and_is_dropped_after_the_stall_timeout(tmp_path, mode):
    """20 MB of pipelined EHLO and HELP from a client that never reads: the server stops reading once its replies
    do not drain (a bounded amount is held unsent, the rest of the burst stays with the client), serves a normal
    client meanwhile, and aborts the connection after limits.output_stall_timeout (a task.Clock stands in)."""
    listener = "submissions" if mode == "implicit" else "smtp"
    with running_server(tmp_path, listeners=(listener,), limits={"output_stall_timeout": STALL}) as srv:
        clock = task.Clock()
        _factory(srv, listener).clock = clock
        port = srv.port(listener)
        attacker = _attacker(port, mode)
        sent = flood(attacker, b"EHLO attacker.example\r\nHELP\r\n")
        print(f"{mode}: the server took {sent} of {BURST} octets")
        assert sent < BURST // 2
        unsent = unsent_output(srv, listener)
        assert len(unsent) == 1 and unsent[0] < MAX_UNSENT, unsent
        assert flood(attacker, b"HELP\r\n", stall=0.5) < 2**20  # still not reading
        _normal_client(port, implicit_tls=mode == "implicit")
        srv.wait_for(lambda: srv.server_sessions("smtp") == 1)  # the normal client's session has ended
        dropped_after_stall(srv, listener, "smtp", clock, STALL)
        attacker.close()
