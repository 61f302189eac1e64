"""Every way an SMTP connection ends releases its per-address slot (the Postfix client's pipelined ``.`` + QUIT)."""

from __future__ import annotations

import socket
import ssl

import pytest
from twisted.internet import task

from tests.harness import running_server

MSG = b"From: a@example.net\r\nTo: alice@example.test\r\nSubject: pipelined close\r\n\r\nHello.\r\n"


def _tls_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _read_reply(f) -> bytes:
    """One whole (possibly multi-line) SMTP reply from a file object."""
    out = b""
    while True:
        line = f.readline()
        if not line:
            raise EOFError("connection closed")
        out += line
        if len(line) < 4 or line[3:4] != b"-":
            return out


def _postfix_like_delivery(port: int, implicit_tls: bool) -> None:
    """What Postfix's smtp client does with ``smtp_skip_quit_response``: the final dot and QUIT in one TLS write,
    then close without waiting for the 221."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    ctx = _tls_context()
    if implicit_tls:
        s = ctx.wrap_socket(raw)
        f = s.makefile("rb")
        assert _read_reply(f).startswith(b"220")
    else:
        f = raw.makefile("rb")
        assert _read_reply(f).startswith(b"220")
        raw.sendall(b"EHLO client.example.net\r\n")
        assert _read_reply(f).startswith(b"250")
        raw.sendall(b"STARTTLS\r\n")
        assert _read_reply(f).startswith(b"220")
        s = ctx.wrap_socket(raw)
        f = s.makefile("rb")
    s.sendall(b"EHLO client.example.net\r\n")
    assert _read_reply(f).startswith(b"250")
    s.sendall(b"MAIL FROM:<a@example.net>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n")
    assert _read_reply(f).startswith(b"250")
    assert _read_reply(f).startswith(b"250")
    assert _read_reply(f).startswith(b"354")
    s.sendall(MSG + b".\r\nQUIT\r\n")
    assert _read_reply(f).startswith(b"250")
    # No wait for the 221: close at once, as Postfix does.
    f.close()
    s.close()


@pytest.mark.parametrize("listener", ["smtp", "submissions"])
def test_tls_sessions_ending_with_pipelined_dot_and_quit_release_their_slot(tmp_path, listener):
    """30 TLS sessions that pipeline ``.`` + QUIT and close at once, with a cap of 5 per address: every later
    connection still gets a greeting (the count used to leak one slot per session: 421 after 20)."""
    with running_server(tmp_path, listeners=(listener,), limits={"smtp_max_sessions_per_ip": 5},
                        smtp={"trusted_networks": ["127.0.0.0/8"]} if listener == "submissions" else {}) as srv:
        srv.add_user("alice@example.test", "secret")
        port = srv.port(listener)
        for _ in range(30):
            _postfix_like_delivery(port, implicit_tls=listener == "submissions")
        # The server may still be finishing the last close; the slot is free once connectionLost ran.
        srv.wait_for(lambda: srv.server_sessions("smtp") == 0)
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        s = _tls_context().wrap_socket(raw) if listener == "submissions" else raw
        assert _read_reply(s.makefile("rb")).startswith(b"220")
        s.close()
        acct = srv.store.get_account("alice@example.test")
        mb = srv.store.get_mailbox(acct.id, "INBOX")
        assert len(srv.store.list_messages(mb.id)) == 30


@pytest.mark.parametrize("listener,limit", [("submissions", "smtp_max_sessions_per_ip"),
                                            ("imaps", "imap_max_sessions_per_ip"),
                                            ("pop3s", "pop3_max_sessions_per_ip")])
def test_over_cap_connection_on_implicit_tls_port_is_closed_without_handshake(tmp_path, listener, limit):
    """A connection over the per-address cap on 465/993/995 that never starts TLS is closed at once: it used to
    stay open for ever (a close before the handshake waits for the handshake), keeping its descriptor."""
    with running_server(tmp_path, listeners=(listener,), limits={limit: 1}) as srv:
        port = srv.port(listener)
        first = _tls_context().wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10))
        assert first.recv(100)  # greeting inside TLS
        try:
            over = socket.create_connection(("127.0.0.1", port), timeout=10)
            try:
                assert over.recv(100) == b""  # closed by the server, no handshake started
            finally:
                over.close()
        except ConnectionResetError:
            pass  # aborted (even before connect() returned): just as closed
        first.close()


def _tracking_factory(srv, listener):
    return next(lst.factory for lst in srv.server.listening if lst.name == listener)


def _closed(sock: socket.socket) -> bool:
    sock.settimeout(10)
    try:
        return sock.recv(100) == b""
    except ConnectionResetError:
        return True


@pytest.mark.parametrize("listener", ["submissions", "imaps", "pop3s", "https"])
def test_tls_handshake_never_started_is_aborted_after_the_handshake_timeout(tmp_path, listener):
    """A client that connects to an implicit-TLS port and never starts the handshake is cut off after
    limits.tls_handshake_timeout (a task.Clock stands in for time); a finished handshake is not."""
    with running_server(tmp_path, listeners=(listener,)) as srv:
        clock = task.Clock()
        _tracking_factory(srv, listener).clock = clock
        port = srv.port(listener)
        done = _tls_context().wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10))
        srv.wait_for(lambda: not clock.getDelayedCalls())  # handshake completed: its timer is gone
        silent = socket.create_connection(("127.0.0.1", port), timeout=10)
        srv.wait_for(lambda: len(clock.getDelayedCalls()) == 1)
        srv.call(clock.advance, srv.config.limits.tls_handshake_timeout - 1)
        silent.settimeout(0.2)
        with pytest.raises((TimeoutError, socket.timeout)):
            silent.recv(100)  # not yet
        srv.call(clock.advance, 2)
        assert _closed(silent)
        silent.close()
        if listener != "https":
            assert done.recv(1000)  # the greeting: the finished session goes on
        done.close()


def test_starttls_handshake_never_started_is_aborted(tmp_path):
    with running_server(tmp_path, listeners=("smtp",)) as srv:
        clock = task.Clock()
        _tracking_factory(srv, "smtp").clock = clock
        raw = socket.create_connection(("127.0.0.1", srv.port("smtp")), timeout=10)
        f = raw.makefile("rb")
        assert _read_reply(f).startswith(b"220")
        raw.sendall(b"EHLO client.example.net\r\n")
        assert _read_reply(f).startswith(b"250")
        assert not clock.getDelayedCalls()  # plain text: no handshake timer
        raw.sendall(b"STARTTLS\r\n")
        assert _read_reply(f).startswith(b"220")
        srv.wait_for(lambda: len(clock.getDelayedCalls()) == 1)
        srv.call(clock.advance, srv.config.limits.tls_handshake_timeout + 1)
        assert _closed(raw)
