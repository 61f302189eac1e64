"""Implicit-TLS ports (465, 993, 995, 443) under a connection flood that never starts TLS.

An attacker (127.0.0.2) fills its per-address cap with connections that never send a ClientHello, and keeps
opening more. The connections over the cap are closed at once, before any handshake (they used to stay open for
ever: a close before the handshake waits for the handshake); the ones within the cap are aborted at
``limits.tls_handshake_timeout`` (a task.Clock stands in for time), which gives their slots back. Throughout, a
normal client on its own connection logs in within a second.
"""

from __future__ import annotations

import socket

import pytest
from twisted.internet import task

from tests.harness import running_server
from tests.logins import assert_logs_in_promptly

ATTACKER = "127.0.0.2"
CAP = 8
OVER = 40

# listener -> (the cap's limit, the family counted, the normal client's login)
CASES = {
    "submissions": ("smtp_max_sessions_per_ip", "smtp", "smtp"),
    "imaps": ("imap_max_sessions_per_ip", "imap", "imap"),
    "pop3s": ("pop3_max_sessions_per_ip", "pop3", "pop3"),
    "https": ("http_max_connections_per_ip", "http", "webmail"),
}


def _connect(port: int) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(10)
    s.bind((ATTACKER, 0))
    s.connect(("127.0.0.1", port))
    return s


def _closed(s: socket.socket, timeout: float = 10) -> bool:
    """Whether the server closed ``s`` (EOF or reset) within ``timeout``; it sends nothing before a ClientHello."""
    s.settimeout(timeout)
    try:
        return s.recv(100) == b""
    except ConnectionResetError:
        return True
    except (TimeoutError, socket.timeout):
        return False


@pytest.mark.parametrize("listener", list(CASES))
def test_flood_of_silent_connections_on_an_implicit_tls_port(tmp_path, listener):
    limit, family, kind = CASES[listener]
    with running_server(tmp_path, listeners=(listener,), limits={limit: CAP}) as srv:
        srv.add_user("alice@example.test", "secret")
        clock = task.Clock()
        tracking = next(lst.factory for lst in srv.server.listening if lst.name == listener)
        tracking.clock = clock  # the handshake deadlines
        port = srv.port(listener)

        held = [_connect(port) for _ in range(CAP)]
        srv.wait_for(lambda: srv.server_sessions(family) == CAP)
        srv.wait_for(lambda: len(clock.getDelayedCalls()) == CAP)  # one handshake deadline each
        over = []
        for _ in range(OVER):
            try:
                over.append(_connect(port))
            except ConnectionResetError:
                pass  # aborted before connect() returned: just as refused
        assert all(_closed(s) for s in over), "an over-cap connection was kept"
        assert srv.server_sessions(family) == CAP

        # During the attack: a normal client from another address, and one more over-cap try of the attacker.
        assert_logs_in_promptly(kind, port, "alice@example.test", "secret", tls=True)
        assert not any(_closed(s, timeout=0.2) for s in held[:2])  # still within their deadline

        srv.call(clock.advance, srv.config.limits.tls_handshake_timeout + 1)
        assert all(_closed(s) for s in held), "a connection that never started TLS outlived the deadline"
        srv.wait_for(lambda: srv.server_sessions(family) == 0)
        for s in held + over:
            s.close()
        # The attacker's slots came back: it may connect (and this time complete the handshake) again.
        assert_logs_in_promptly(kind, port, "alice@example.test", "secret", source=ATTACKER, tls=True)


# listener -> (lines before the STARTTLS answer arrives, the command, how its "go ahead" answer starts)
STARTTLS = {
    "smtp": ([b"EHLO client.example.net\r\n"], b"STARTTLS\r\n", b"220"),
    "submission": ([b"EHLO client.example.net\r\n"], b"STARTTLS\r\n", b"220"),
    "imap": ([], b"a STARTTLS\r\n", b"a OK"),
    "pop3": ([], b"STLS\r\n", b"+OK"),
}


def _reply(f, first: bytes) -> bytes:
    """Lines up to and including the one starting with ``first``."""
    while True:
        line = f.readline()
        assert line, "connection closed"
        if line.startswith(first):
            return line


@pytest.mark.parametrize("listener", list(STARTTLS))
def test_starttls_never_followed_by_a_handshake_is_aborted(tmp_path, listener):
    """After STARTTLS / STLS is accepted, a client that never sends its ClientHello is aborted at
    limits.tls_handshake_timeout, like one on an implicit-TLS port; a normal client logs in meanwhile."""
    before, command, go_ahead = STARTTLS[listener]
    with running_server(tmp_path, listeners=(listener,)) as srv:
        srv.add_user("alice@example.test", "secret")
        clock = task.Clock()
        next(lst.factory for lst in srv.server.listening if lst.name == listener).clock = clock
        s = _connect(srv.port(listener))
        f = s.makefile("rb")
        f.readline()  # greeting
        for line in before:
            s.sendall(line)
            _reply(f, b"250 ")
        assert not clock.getDelayedCalls()  # in plain text: no handshake deadline
        s.sendall(command)
        _reply(f, go_ahead)
        srv.wait_for(lambda: len(clock.getDelayedCalls()) == 1)
        kind = {"smtp": None, "submission": "smtp", "imap": "imap", "pop3": "pop3"}[listener]
        if kind:
            assert_logs_in_promptly(kind, srv.port(listener), "alice@example.test", "secret")
        srv.call(clock.advance, srv.config.limits.tls_handshake_timeout - 1)
        assert not _closed(s, timeout=0.2)
        srv.call(clock.advance, 2)
        assert _closed(s)
        f.close()
        s.close()
