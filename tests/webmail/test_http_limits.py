"""HTTP connections against slowloris: a deadline for each request's headers, and a per-address cap."""

from __future__ import annotations

import http.client
import socket

import pytest
from twisted.internet import task

from tests.harness import running_server


def _site(srv, name="http"):
    return next(lst.factory.wrappedFactory for lst in srv.server.listening if lst.name == name)


def _closed(sock: socket.socket, timeout: float = 10) -> bool:
    sock.settimeout(timeout)
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except ConnectionResetError:
        return True
    except (TimeoutError, socket.timeout):
        return False


def _get(port: int) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/login")
    status = conn.getresponse().status
    conn.close()
    return status


def test_slowloris_connections_are_cut_at_the_header_deadline_and_others_are_served(tmp_path):
    """50 connections trickling header bytes keep nothing past limits.http_header_timeout (a task.Clock stands in
    for time), however often they send; a normal client is served during the attack and after."""
    with running_server(tmp_path, listeners=("http",)) as srv:
        site = _site(srv)
        clock = task.Clock()
        site.clock = clock
        port = srv.port("http")
        slow = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(50)]
        for s in slow:
            s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        srv.wait_for(lambda: srv.server_sessions("http") == 50)
        timeout = srv.config.limits.http_header_timeout
        for _ in range(3):  # a byte every few "seconds" does not buy more time
            srv.call(clock.advance, timeout / 4)
            for s in slow:
                s.sendall(b"X")
        assert _get(port) == 200  # during the attack
        srv.call(clock.advance, timeout / 4 + 1)
        assert all(_closed(s) for s in slow)
        for s in slow:
            s.close()
        srv.wait_for(lambda: srv.server_sessions("http") == 0)
        assert _get(port) == 200


def test_idle_keep_alive_connection_ends_at_the_header_deadline(tmp_path):
    with running_server(tmp_path, listeners=("http",)) as srv:
        clock = task.Clock()
        _site(srv).clock = clock
        s = socket.create_connection(("127.0.0.1", srv.port("http")), timeout=10)
        s.sendall(b"GET /login HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        s.settimeout(10)
        first = s.recv(65536)
        assert first.startswith(b"HTTP/1.1 200")
        srv.call(clock.advance, srv.config.limits.http_header_timeout - 1)
        assert not _closed(s, timeout=0.2)  # still open: within the deadline
        srv.call(clock.advance, 2)
        assert _closed(s)
        s.close()


def test_connections_over_the_per_address_cap_are_aborted(tmp_path):
    with running_server(tmp_path, listeners=("http",), limits={"http_max_connections_per_ip": 3}) as srv:
        port = srv.port("http")
        held = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(3)]
        srv.wait_for(lambda: srv.server_sessions("http") == 3)
        try:
            over = socket.create_connection(("127.0.0.1", port), timeout=10)
            over.sendall(b"GET /login HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert _closed(over)
            over.close()
        except ConnectionResetError:
            pass  # aborted before the request was even written: just as refused
        for s in held:
            s.close()
        srv.wait_for(lambda: srv.server_sessions("http") == 0)
        assert _get(port) == 200


@pytest.mark.parametrize("name", ["https"])
def test_header_deadline_applies_on_https(tmp_path, name):
    import ssl

    with running_server(tmp_path, listeners=(name,)) as srv:
        clock = task.Clock()
        _site(srv, name).clock = clock
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", srv.port(name)), timeout=10))
        s.sendall(b"GET / HTTP/1.1\r\n")
        srv.wait_for(lambda: srv.server_sessions("http") == 1)
        srv.call(clock.advance, srv.config.limits.http_header_timeout + 1)
        s.settimeout(10)
        try:
            assert s.recv(100) == b""
        except (ConnectionResetError, ssl.SSLError):
            pass
        s.close()


@pytest.mark.parametrize("name", ["http", "https"])
def test_slowloris_from_one_address_while_a_normal_client_signs_in(tmp_path, name):
    """An attacker (127.0.0.2) fills its per-address cap with connections that trickle header bytes and keeps
    opening more: the ones over the cap are aborted at once, the others at limits.http_header_timeout after they
    opened however often they send (a task.Clock stands in for time); meanwhile a normal client signs in to the
    webmail within a second, on http and on https."""
    import ssl

    from tests.logins import assert_logs_in_promptly, tls_context

    cap, tls = 20, name == "https"
    with running_server(tmp_path, listeners=(name,), limits={"http_max_connections_per_ip": cap}) as srv:
        srv.add_user("alice@example.test", "secret")
        clock = task.Clock()
        _site(srv, name).clock = clock  # header deadlines
        next(lst.factory for lst in srv.server.listening if lst.name == name).clock = clock  # TLS handshakes
        port = srv.port(name)

        def connect() -> socket.socket:
            s = socket.socket()
            s.settimeout(10)
            s.bind(("127.0.0.2", 0))
            s.connect(("127.0.0.1", port))
            return tls_context().wrap_socket(s) if tls else s

        slow = [connect() for _ in range(cap)]
        for s in slow:
            s.sendall(b"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        srv.wait_for(lambda: srv.server_sessions("http") == cap)
        refused = 0
        for _ in range(10):
            try:
                extra = connect()
                extra.sendall(b"GET /login HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                refused += _closed(extra)
                extra.close()
            except (ConnectionResetError, ssl.SSLError, BrokenPipeError):
                refused += 1  # aborted before or during the handshake
        assert refused == 10
        timeout = srv.config.limits.http_header_timeout
        for _ in range(3):
            srv.call(clock.advance, timeout / 4)
            for s in slow:
                s.sendall(b"X-Slow: 1\r\n")
            assert_logs_in_promptly("webmail", port, "alice@example.test", "secret", tls=tls)
        srv.call(clock.advance, timeout / 4 + 1)
        assert all(_closed(s) for s in slow)
        for s in slow:
            s.close()
        srv.wait_for(lambda: srv.server_sessions("http") == 0)
        assert_logs_in_promptly("webmail", port, "alice@example.test", "secret", source="127.0.0.2", tls=tls)
