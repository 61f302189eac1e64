"""The IMAP Twisted protocol over real sockets: pipelining in order, named limits one byte past, commands without
progress, per-IP sessions, autologout, COMPRESS=DEFLATE, large FETCH output."""

from __future__ import annotations

import time
import zlib

import pytest
from twisted.internet import task

from tests.imap.imap_client import Raw, imap_server, message, new_user

MAX_LINE = 2000


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    limits = {"imap_max_line": MAX_LINE, "imap_max_literal": 5000, "imap_max_commands_without_progress": 5,
              "imap_max_sessions_per_ip": 30}
    with imap_server(tmp_path_factory.mktemp("imap-proto"), limits=limits) as s:
        yield s


def _factory(srv, name="imap"):
    for lst in srv.server.listening:
        if lst.name == name:
            return lst.factory.wrappedFactory
    raise KeyError(name)


def test_pipelined_commands_answer_in_order(srv):
    """Many commands in one write are executed and answered strictly in order, even those that wait on the
    database."""
    user = new_user(srv)
    srv.deliver(user, message("p"))
    raw = Raw(srv.port("imap"))
    raw.login(user)
    batch = b"".join(b"t%d %s\r\n" % (i, cmd) for i, cmd in enumerate(
        [b"SELECT INBOX", b"STATUS Trash (MESSAGES)", b"NOOP", b"FETCH 1 (UID)", b"CREATE X", b"LIST \"\" X",
         b"STORE 1 +FLAGS (\\Seen)", b"SEARCH SEEN", b"DELETE X", b"CAPABILITY"]))
    raw.send(batch)
    tags = []
    while len(tags) < 10:
        ln = raw.line()
        if ln.startswith(b"t"):
            tags.append(ln.split()[0])
            assert ln.split()[1] == b"OK", ln
    assert tags == [b"t%d" % i for i in range(10)]
    raw.close()


def test_line_limit_exact_and_one_past(srv):
    """A line of exactly imap_max_line octets is parsed; one octet more answers BAD and the session goes on."""
    raw = Raw(srv.port("imap"))
    prefix = b"a NOOP "
    ok_line = prefix + b"x" * (MAX_LINE - len(prefix))
    out = raw.cmd("a", ok_line[2:])
    assert not out[-1].startswith(b"a BAD line too long"), out  # NOOP with junk is a parse BAD, not a limit
    raw.send(b"b NOOP " + b"x" * (MAX_LINE - 6) + b"\r\n")
    out = raw.until(b"b")
    assert out[-1] == b"b BAD line too long\r\n"
    assert raw.cmd("c", "NOOP")[-1].startswith(b"c OK")
    raw.close()


def test_literal_limit_one_past(srv):
    """A literal one octet over imap_max_literal is refused before the data is sent."""
    raw = Raw(srv.port("imap"))
    raw.send(b"a LOGIN {5001}\r\n")
    assert raw.line().startswith(b"a NO [TOOBIG]")
    raw.send(b"b LOGIN {3}\r\n")
    assert raw.line().startswith(b"+ ")
    raw.send(b"abc {3}\r\n")
    assert raw.line().startswith(b"+ ")
    raw.send(b"def\r\n")
    assert raw.until(b"b")[-1].startswith(b"b NO [AUTHENTICATIONFAILED]")
    raw.close()


def test_non_synchronizing_literal_over_limit_is_skipped(srv):
    """A LITERAL+ literal over the limit is read and dropped, never executed as commands."""
    raw = Raw(srv.port("imap"))
    raw.send(b"a LOGIN {5001+}\r\n" + b"z NOOP\r\n" * 555 + b"x" * (5001 - 8 * 555) + b" y\r\nb NOOP\r\n")
    out = raw.until(b"b")
    assert out[0].startswith(b"a NO [TOOBIG]") and not any(ln.startswith(b"z ") for ln in out)
    raw.close()


def test_commands_without_progress_end_the_session(srv):
    raw = Raw(srv.port("imap"))
    for i in range(5):
        assert raw.cmd(f"e{i}", "BOGUS")[-1].startswith(b"e%d BAD" % i)
    raw.send(b"e5 BOGUS\r\n")
    out = [raw.line(), raw.line()]
    assert out[0].startswith(b"e5 BAD") and out[1].startswith(b"* BYE")
    assert raw.closed()


def test_sessions_per_ip_limit(srv):
    """One connection past imap_max_sessions_per_ip gets * BYE and is closed."""
    factory = _factory(srv)
    # Connections of earlier tests may still be closing: wait until the count is settled.
    deadline = time.time() + 10
    while factory.limiter.count("127.0.0.1") and time.time() < deadline:
        time.sleep(0.02)
    before = factory.limiter.count("127.0.0.1")
    conns = []
    try:
        conns = [Raw(srv.port("imap")) for _ in range(30 - before)]
        sock = Raw.__new__(Raw)
        import socket

        sock.sock = socket.create_connection(("127.0.0.1", srv.port("imap")), timeout=5)
        sock.buf = b""
        assert sock.line().startswith(b"* BYE")
        assert sock.closed()
    finally:
        for c in conns:
            c.close()
        while factory.limiter.count("127.0.0.1") and time.time() < deadline + 10:
            time.sleep(0.02)


def test_autologout(srv):
    """After the idle timeout the server says BYE and closes; IDLE re-arms the timer."""
    factory = _factory(srv)
    clock = task.Clock()
    factory.clock = clock
    try:
        raw = Raw(srv.port("imap"))
        srv.call(clock.advance, factory.idle_timeout + 1)
        assert raw.line().startswith(b"* BYE")
        assert raw.closed()
    finally:
        factory.clock = srv.server.reactor


def test_compress_deflate(srv):
    """RFC 4978: after COMPRESS DEFLATE both directions are raw deflate streams."""
    user = new_user(srv)
    srv.deliver(user, message("zipped", body="z" * 3000))
    raw = Raw(srv.port("imap"))
    raw.login(user)
    assert raw.cmd("a", "COMPRESS DEFLATE")[-1].startswith(b"a OK")
    comp = zlib.compressobj(6, zlib.DEFLATED, -15)
    decomp = zlib.decompressobj(-15)

    def send(text: bytes) -> None:
        raw.sock.sendall(comp.compress(text) + comp.flush(zlib.Z_SYNC_FLUSH))

    def read_until(tag: bytes) -> bytes:
        data = b""
        while tag + b" " not in data:
            data += decomp.decompress(raw.sock.recv(65536))
        return data

    send(b"b SELECT INBOX\r\n")
    assert b"* 1 EXISTS" in read_until(b"b")
    send(b"c FETCH 1 BODY.PEEK[TEXT]\r\n")
    data = read_until(b"c")
    assert b"z" * 3000 in data and b"c OK" in data
    send(b"d COMPRESS DEFLATE\r\n")
    assert b"d NO [COMPRESSIONACTIVE]" in read_until(b"d")
    raw.close()


def test_large_fetch_streams_with_backpressure(srv):
    """A FETCH of many large bodies completes for a client that reads slowly (output waits for the transport)."""
    srv_user = new_user(srv)
    big = message("big", body=("y" * 998 + "\r\n") * 2000)  # ~2 MB each
    for _ in range(4):
        srv.deliver(srv_user, big)
    raw = Raw(srv.port("imap"), timeout=30)
    raw.login(srv_user)
    raw.cmd("s", "SELECT INBOX")
    raw.send(b"f FETCH 1:4 BODY.PEEK[]\r\n")
    time.sleep(0.5)  # let the server fill the socket buffers and pause
    out = raw.until(b"f")
    assert out[-1].startswith(b"f OK")
    assert sum(len(x) for x in out) > 4 * len(big)
    raw.close()
