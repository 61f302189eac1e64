"""POP3 under hostile bursts: 2,000,000 pipelined NOOPs are answered a bounded number per reactor turn, and a client
that pipelines CAPA and never reads stops being read and is dropped after limits.output_stall_timeout; a normal
client logs in on a second connection meanwhile."""

from __future__ import annotations

import socket
import threading
import time

from twisted.internet import task

from tests.harness import running_server
from tests.hostile import (
    BURST,
    MAX_UNSENT,
    Timed,
    dropped_after_stall,
    flood,
    output_blocked,
    read_replies_in_background,
    small_send_buffers,
    unsent_output,
)
from tests.logins import assert_logs_in_promptly

STALL = 50.0
NOOPS = 2_000_000
PASSWORD = "secret"


def _factory(srv):
    return next(lst.factory.wrappedFactory for lst in srv.server.listening if lst.name == "pop3")


def _logged_in(port: int, user: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    f = sock.makefile("rb")
    assert f.readline().startswith(b"+OK")
    sock.sendall(f"USER {user}\r\n".encode())
    assert f.readline().startswith(b"+OK")
    sock.sendall(f"PASS {PASSWORD}\r\n".encode())
    assert f.readline().startswith(b"+OK maildrop")
    return sock


def _normal_login(port: int, user: str) -> None:
    with Timed() as t:
        assert_logs_in_promptly("pop3", port, user, PASSWORD)
    print(f"normal login in {t.seconds * 1000:.1f} ms")


def test_noop_bomb_does_not_stall_other_clients(tmp_path):
    """2,000,000 pipelined NOOPs (the attacker reads its answers): a normal client logs in while the bomb is still
    being answered."""
    with running_server(tmp_path, listeners=("pop3",)) as srv:
        for u in ("bomb@example.test", "normal@example.test"):
            srv.add_user(u, PASSWORD)
        port = srv.port("pop3")
        raw = _logged_in(port, "bomb@example.test")
        reader, answered, done = read_replies_in_background(raw, b"+OK", NOOPS)
        sender = threading.Thread(target=lambda: _send_quietly(raw, b"NOOP\r\n" * NOOPS), daemon=True)
        sender.start()
        try:
            srv.wait_for(lambda: answered[0] > 10_000, timeout=60)
            _normal_login(port, "normal@example.test")
            assert not done.is_set() and answered[0] < NOOPS, "the normal client got through only after the bomb"
            print("bomb replies before the normal login finished:", answered[0])
        finally:
            raw.shutdown(socket.SHUT_RDWR)
            raw.close()
            sender.join(30)
            reader.join(30)


def _send_quietly(sock, data: bytes) -> None:
    try:
        sock.sendall(data)
    except OSError:
        pass


def test_client_that_never_reads_is_not_read_and_is_dropped_after_the_stall_timeout(tmp_path):
    """20 MB of pipelined CAPA after login from a client that never reads: the server stops reading once the
    replies do not drain, holds a bounded amount unsent, lets a normal client log in, and aborts the connection
    after the stall timeout (a task.Clock stands in)."""
    with running_server(tmp_path, listeners=("pop3",), limits={"output_stall_timeout": STALL}) as srv:
        for u in ("flood@example.test", "normal@example.test"):
            srv.add_user(u, PASSWORD)
        clock = task.Clock()
        _factory(srv).clock = clock
        port = srv.port("pop3")
        raw = _logged_in(port, "flood@example.test")
        sent = flood(raw, b"CAPA\r\n")
        print(f"the server took {sent} of {BURST} octets")
        assert sent < BURST // 2
        unsent = unsent_output(srv, "pop3")
        assert len(unsent) == 1 and unsent[0] < MAX_UNSENT, unsent
        _normal_login(port, "normal@example.test")
        srv.wait_for(lambda: srv.server_sessions("pop3") == 1)  # the normal client's session has ended
        dropped_after_stall(srv, "pop3", "pop3", clock, STALL)
        raw.close()


def test_pipelined_retr_never_read_holds_a_bounded_amount_and_is_dropped(tmp_path):
    """400 pipelined RETRs of 5 KB messages (answered from the read-ahead, without a thread hop) from a client that
    never reads: once its output backs up the server writes nothing more, holds a bounded amount unsent, and aborts
    the connection after the stall timeout; a normal client logs in meanwhile."""
    with running_server(tmp_path, listeners=("pop3",), limits={"output_stall_timeout": STALL}) as srv:
        for u in ("flood@example.test", "normal@example.test"):
            srv.add_user(u, PASSWORD)
        body = b"Lorem ipsum dolor sit amet, consectetur adipiscing elit.\r\n.A dot line.\r\n" * 70
        for n in range(400):
            srv.deliver("flood@example.test", b"Subject: m%d\r\n\r\n" % n + body)
        clock = task.Clock()
        _factory(srv).clock = clock
        port = srv.port("pop3")
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the kernel does not take megabytes for us
        raw.settimeout(10)
        raw.connect(("127.0.0.1", port))
        f = raw.makefile("rb")
        assert f.readline().startswith(b"+OK")
        raw.sendall(f"USER flood@example.test\r\nPASS {PASSWORD}\r\n".encode())
        assert f.readline().startswith(b"+OK")
        assert f.readline().startswith(b"+OK maildrop has 400 messages")
        small_send_buffers(srv, "pop3")
        raw.sendall(b"".join(b"RETR %d\r\n" % n for n in range(1, 401)))
        srv.wait_for(lambda: output_blocked(srv, "pop3"), timeout=30)
        for _ in range(20):  # while the server could go on answering RETRs, it must not
            unsent = unsent_output(srv, "pop3")
            assert len(unsent) == 1 and unsent[0] < MAX_UNSENT, unsent
            time.sleep(0.1)
        listener = next(lst.factory for lst in srv.server.listening if lst.name == "pop3")
        waiting = srv.call(lambda: [t.wrappedProtocol.session.buffered for t in list(listener.protocols)])
        assert waiting[0] > 0, "every RETR was answered into a connection that does not read"
        _normal_login(port, "normal@example.test")
        srv.wait_for(lambda: srv.server_sessions("pop3") == 1)
        dropped_after_stall(srv, "pop3", "pop3", clock, STALL)
        raw.close()
