"""POP3 over real sockets: poplib (plain, STLS, implicit TLS) against a running server on 127.0.0.1."""

import contextlib
import hashlib
import poplib
import socket
import ssl
import time

import pytest
from twisted.internet import task

from mailserver.pop3 import protocol as pop3_protocol
from storage import changes as ch
from tests.harness import running_server

ALICE = "alice@example.test"
BOB = "bob@example.test"
PW = "correct horse"


def message(n: int, body: bytes = b"") -> bytes:
    return (b"From: sender@example.org\r\nTo: alice@example.test\r\nSubject: message %d\r\n"
            b"Message-ID: <m%d@example.org>\r\n\r\n" % (n, n)) + (body or b"Body of message %d\r\n" % n)


def tls_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("pop3"), listeners=("pop3", "pop3s")) as s:
        s.add_user(ALICE, PW)
        s.add_user(BOB, PW)
        yield s


@pytest.fixture
def fresh(tmp_path):
    """A server of its own, for tests that change the maildrop."""
    with running_server(tmp_path, listeners=("pop3", "pop3s")) as s:
        s.add_user(ALICE, PW)
        yield s


def connect(s, user=ALICE, pw=PW) -> poplib.POP3:
    c = poplib.POP3("127.0.0.1", s.port("pop3"), timeout=30)
    c.user(user)
    c.pass_(pw)
    return c


def inbox_uids(s, address=ALICE) -> list[int]:
    acct = s.store.get_account(address)
    mb = s.store.get_mailbox(acct.id, "INBOX")
    return [m.uid for m in s.store.list_messages(mb.id)]


def wait_for(pred, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return pred()


class Raw:
    """A raw client socket for exact-octet checks."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(self.buf)
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def until_terminator(self) -> bytes:
        """Everything up to and including CRLF . CRLF."""
        while True:
            i = self.buf.find(b"\r\n.\r\n")
            if i >= 0:
                data, self.buf = self.buf[:i + 5], self.buf[i + 5:]
                return data
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise EOFError(len(self.buf))
            self.buf += chunk

    def closed_by_server(self, timeout=5.0) -> bool:
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except (TimeoutError, socket.timeout):
            return False
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()


# --------------------------------------------------------------------------------------------- commands


def test_every_command_over_plain_connection(fresh):
    """Greeting, CAPA, USER/PASS, STAT, LIST, UIDL, RETR, TOP, DELE, RSET, NOOP, QUIT with exact sizes."""
    msgs = [message(i) for i in range(1, 4)]
    for m in msgs:
        fresh.deliver(ALICE, m)
    uv = fresh.store.get_mailbox(fresh.store.get_account(ALICE).id, "INBOX").uid_validity
    c = poplib.POP3("127.0.0.1", fresh.port("pop3"), timeout=30)
    assert c.getwelcome().startswith(b"+OK mail.example.test POP3 server ready")
    caps = c.capa()
    for cap in ("TOP", "UIDL", "USER", "SASL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "STLS", "EXPIRE",
                "IMPLEMENTATION"):
        assert cap in caps, cap
    assert caps["SASL"] == ["PLAIN", "LOGIN"]
    assert c.user(ALICE) == b"+OK send PASS"
    total = sum(len(m) for m in msgs)
    assert c.pass_(PW) == f"+OK maildrop has 3 messages ({total} octets)".encode()
    assert c.stat() == (3, total)
    resp, lines, _ = c.list()
    assert lines == [f"{i} {len(m)}".encode() for i, m in enumerate(msgs, 1)]
    assert c.list(2) == f"+OK 2 {len(msgs[1])}".encode()
    resp, lines, _ = c.uidl()
    assert lines == [f"{i} {uv}.{i}".encode() for i in (1, 2, 3)]
    assert c.uidl(3) == f"+OK 3 {uv}.3".encode()
    resp, lines, octets = c.retr(1)
    assert resp == f"+OK {len(msgs[0])} octets".encode()
    assert b"\r\n".join(lines) + b"\r\n" == msgs[0]
    resp, lines, _ = c.top(2, 0)
    assert b"\r\n".join(lines) + b"\r\n" == msgs[1].split(b"\r\n\r\n")[0] + b"\r\n\r\n"
    assert c.dele(1) == b"+OK message 1 deleted"
    with pytest.raises(poplib.error_proto, match="already deleted"):
        c.retr(1)
    assert c.stat() == (2, total - len(msgs[0]))
    assert c.rset().startswith(b"+OK")
    assert c.stat() == (3, total)
    assert c.noop() == b"+OK"
    with pytest.raises(poplib.error_proto, match="no such message"):
        c.retr(4)
    with pytest.raises(poplib.error_proto, match="unknown command"):
        c._shortcmd("XYZZY")
    with pytest.raises(poplib.error_proto, match="not valid in this state"):
        c._shortcmd("STLS")
    c.dele(2)
    assert c.quit().startswith(b"+OK")
    assert inbox_uids(fresh) == [1, 3]


def test_wrong_password_is_auth_code(srv):
    c = poplib.POP3("127.0.0.1", srv.port("pop3"), timeout=30)
    c.user(ALICE)
    with pytest.raises(poplib.error_proto, match=r"-ERR \[AUTH\]"):
        c.pass_("wrong")
    c.user(ALICE)
    c.pass_(PW)  # the session goes on and a good password works
    c.quit()


def test_apop_is_refused(srv):
    c = poplib.POP3("127.0.0.1", srv.port("pop3"), timeout=30)
    with pytest.raises(poplib.error_proto, match="APOP not supported"):
        c._shortcmd("APOP alice 0123456789abcdef0123456789abcdef")
    c.quit()


def test_auth_plain_with_initial_response_and_login(srv):
    """RFC 5034: AUTH PLAIN with initial response; AUTH LOGIN with continuations."""
    import base64

    r = Raw(srv.port("pop3"))
    r.line()
    r.send(b"AUTH PLAIN " + base64.b64encode(f"\0{ALICE}\0{PW}".encode()) + b"\r\n")
    assert r.line().startswith(b"+OK maildrop has")
    r.send(b"QUIT\r\n")
    assert r.line().startswith(b"+OK")
    r.close()
    r = Raw(srv.port("pop3"))
    r.line()
    r.send(b"AUTH LOGIN\r\n")
    assert r.line() == b"+ " + base64.b64encode(b"Username:")
    r.send(base64.b64encode(ALICE.encode()) + b"\r\n")
    assert r.line() == b"+ " + base64.b64encode(b"Password:")
    r.send(base64.b64encode(b"bad") + b"\r\n")
    assert r.line() == b"-ERR [AUTH] authentication failed"
    r.send(b"AUTH PLAIN\r\n")
    assert r.line() == b"+ "
    r.send(b"*\r\n")
    assert r.line() == b"-ERR authentication cancelled"
    r.close()


# --------------------------------------------------------------------------------------------- TLS


def test_stls_then_login(fresh):
    fresh.deliver(ALICE, message(1))
    c = poplib.POP3("127.0.0.1", fresh.port("pop3"), timeout=30)
    assert c.stls(tls_context()).startswith(b"+OK")
    assert "STLS" not in c.capa()
    c.user(ALICE)
    c.pass_(PW)
    resp, lines, _ = c.retr(1)
    assert b"\r\n".join(lines) + b"\r\n" == message(1)
    c.quit()


def test_stls_discards_plaintext_injected_before_handshake(srv):
    """CVE-2011-0411 class: a command sent in the same packet as STLS is not executed inside TLS."""
    r = Raw(srv.port("pop3"))
    r.line()
    r.send(b"STLS\r\nCAPA\r\n")
    assert r.line() == b"+OK begin TLS negotiation"
    assert r.buf == b""
    tls = tls_context().wrap_socket(r.sock, server_hostname="mail.example.test")
    tls.settimeout(1.0)
    with pytest.raises((TimeoutError, socket.timeout)):
        tls.recv(100)  # nothing answers the injected CAPA
    tls.settimeout(30)
    tls.sendall(b"NOOP\r\n")
    assert tls.recv(100) == b"-ERR command not valid in this state\r\n"
    tls.close()


def test_implicit_tls(fresh):
    fresh.deliver(ALICE, message(1))
    c = poplib.POP3_SSL("127.0.0.1", fresh.port("pop3s"), context=tls_context(), timeout=30)
    caps = c.capa()
    assert "STLS" not in caps and "USER" in caps
    c.user(ALICE)
    c.pass_(PW)
    assert c.stat() == (1, len(message(1)))
    with pytest.raises(poplib.error_proto, match="not valid in this state"):
        c._shortcmd("STLS")
    c.quit()


# --------------------------------------------------------------------------------------------- bodies


def stuffed(body: bytes) -> bytes:
    parts = body.split(b"\n")
    return b"\n".join(b"." + p if p.startswith(b".") else p for p in parts) + b".\r\n"


def test_dot_lines_at_every_buffer_boundary_byte_exact(fresh, monkeypatch):
    """With 61-octet read chunks, a line starting with "." falls at every chunk offset; the download is exact."""
    monkeypatch.setattr(pop3_protocol, "CHUNK", 61)
    lines = []
    for k in range(61 * 3):
        lines.append(b"x" * (k % 61) + b"\r\n")
        lines.append(b"." * (1 + k % 3) + b"dot %d\r\n" % k)
    lines.append(b".\r\n")
    raw = message(1, b"".join(lines))
    fresh.deliver(ALICE, raw)
    r = Raw(fresh.port("pop3"))
    r.line()
    r.send(f"USER {ALICE}\r\nPASS {PW}\r\nRETR 1\r\n".encode())
    r.line()
    r.line()
    assert r.line() == f"+OK {len(raw)} octets".encode()
    assert r.until_terminator() == stuffed(raw)
    r.close()
    c = connect(fresh)
    resp, got, octets = c.retr(1)
    assert b"\r\n".join(got) + b"\r\n" == raw
    c.quit()


def test_25_mb_message(fresh):
    """A 25 MB message is listed with its exact size and streamed byte-exact."""
    line = b"0123456789" * 99 + b"\r\n"
    body = line * (25 * 1024 * 1024 // len(line))
    raw = message(1, body)
    fresh.deliver(ALICE, raw)
    r = Raw(fresh.port("pop3"))
    r.line()
    r.send(f"USER {ALICE}\r\nPASS {PW}\r\nLIST 1\r\nRETR 1\r\n".encode())
    r.line()
    r.line()
    assert r.line() == f"+OK 1 {len(raw)}".encode()
    assert r.line() == f"+OK {len(raw)} octets".encode()
    data = r.until_terminator()
    assert hashlib.sha256(data[:-3]).digest() == hashlib.sha256(raw).digest()
    r.send(b"QUIT\r\n")
    assert r.line().startswith(b"+OK")
    r.close()


def test_pipelined_downloads_byte_exact_through_the_read_ahead(fresh):
    """60 messages (dot lines, one larger than the read-ahead budget, one without a final line end) downloaded by
    pipelined RETR and TOP in one packet, with DELE and a message expunged elsewhere meanwhile: every reply is
    byte-exact, in order, whether its body was read ahead or opened on its own."""
    raws = []
    for n in range(1, 61):
        body = b"line %d\r\n.dot line\r\n..two dots\r\n" % n * (n % 7 + 1)
        if n == 20:
            body = (b"x" * 998 + b"\r\n") * (pop3_protocol.READ_AHEAD_OCTETS // 1000 + 10)  # over the budget
        if n == 33:
            body = b"no final line end"
        raws.append(message(n, body))
        fresh.deliver(ALICE, raws[-1])
    r = Raw(fresh.port("pop3"))
    r.line()
    r.send(f"USER {ALICE}\r\nPASS {PW}\r\n".encode())
    r.line()
    assert r.line().startswith(b"+OK maildrop has 60 messages")
    mb = fresh.store.get_mailbox(fresh.store.get_account(ALICE).id, "INBOX")
    fresh.call(fresh.server.astore.delete_messages, mb.id, [50])  # before any RETR: never read ahead
    commands = [b"RETR 1", b"DELE 3"] + [b"RETR %d" % n for n in range(2, 61) if n != 3] + [b"TOP 5 1", b"RETR 3"]
    r.send(b"".join(c + b"\r\n" for c in commands))

    def expect_body(n: int, top: int | None = None) -> None:
        raw = raws[n - 1]
        if top is None:
            assert r.line() == f"+OK {len(raw)} octets".encode()
            want = raw if raw.endswith(b"\r\n") else raw + b"\r\n"
        else:
            assert r.line() == b"+OK top of message follows"
            head, body = raw.split(b"\r\n\r\n", 1)
            want = head + b"\r\n\r\n" + b"".join(body.splitlines(keepends=True)[:top])
        assert r.until_terminator() == stuffed(want)

    expect_body(1)
    assert r.line() == b"+OK message 3 deleted"
    for n in range(2, 61):
        if n == 3:
            continue
        if n == 50:
            assert r.line() == b"-ERR message no longer available"
            continue
        expect_body(n)
    expect_body(5, top=1)
    assert r.line() == b"-ERR message 3 already deleted"
    r.send(b"QUIT\r\n")
    assert r.line().startswith(b"+OK")
    r.close()
    assert 3 not in inbox_uids(fresh) and 50 not in inbox_uids(fresh) and len(inbox_uids(fresh)) == 58


def test_top_over_socket(srv):
    body = b"l1\r\n.l2\r\nl3\r\n"
    srv.deliver(BOB, message(9, body))
    c = connect(srv, BOB)
    n = c.stat()[0]
    resp, lines, _ = c.top(n, 2)
    assert lines[-3:] == [b"", b"l1", b".l2"]
    c.quit()


# --------------------------------------------------------------------------------------------- maildrop semantics


def test_dropped_connection_deletes_nothing(fresh):
    for i in range(3):
        fresh.deliver(ALICE, message(i))
    r = Raw(fresh.port("pop3"))
    r.line()
    r.send(f"USER {ALICE}\r\nPASS {PW}\r\nDELE 1\r\nDELE 2\r\n".encode())
    for _ in range(4):
        assert r.line().startswith(b"+OK")
    r.sock.shutdown(socket.SHUT_RDWR)
    r.close()
    # The lock goes with the connection: a new session gets in and sees every message.
    assert wait_for(lambda: not pop3_protocol.maildrop_locks(fresh.services).held(
        fresh.store.get_account(ALICE).id))
    c = connect(fresh)
    assert c.stat()[0] == 3
    c.quit()
    assert inbox_uids(fresh) == [1, 2, 3]


def test_second_session_is_in_use(srv):
    first = connect(srv)
    second = poplib.POP3("127.0.0.1", srv.port("pop3"), timeout=30)
    second.user(ALICE)
    with pytest.raises(poplib.error_proto, match=r"-ERR \[IN-USE\]"):
        second.pass_(PW)
    # The lock is shared with the implicit-TLS listener.
    third = poplib.POP3_SSL("127.0.0.1", srv.port("pop3s"), context=tls_context(), timeout=30)
    third.user(ALICE)
    with pytest.raises(poplib.error_proto, match=r"\[IN-USE\]"):
        third.pass_(PW)
    first.quit()
    second.user(ALICE)
    second.pass_(PW)
    second.quit()
    third.quit()


def test_messages_delivered_during_session_are_not_shown(fresh):
    fresh.deliver(ALICE, message(1))
    c = connect(fresh)
    fresh.deliver(ALICE, message(2))
    assert c.stat() == (1, len(message(1)))
    assert len(c.uidl()[1]) == 1
    c.quit()
    c = connect(fresh)
    assert c.stat()[0] == 2
    c.quit()


def test_uidl_stable_across_sessions_and_deletions(fresh):
    for i in range(4):
        fresh.deliver(ALICE, message(i))
    c = connect(fresh)
    before = dict(ln.split() for ln in c.uidl()[1])
    c.dele(2)
    c.quit()
    c = connect(fresh)
    after = [ln.split()[1] for ln in c.uidl()[1]]
    c.quit()
    assert after == [before[b"1"], before[b"3"], before[b"4"]]
    fresh.deliver(ALICE, message(5))
    c = connect(fresh)
    newest = c.uidl()[1][-1].split()[1]
    c.quit()
    assert newest not in before.values()  # never reused


def test_quit_expunge_is_published_to_other_sessions(fresh):
    """The UPDATE-state deletion emits EXPUNGE change events on the hub, as IMAP sessions consume them.

    (The IMAP server is not in the tree yet; this checks the events an IMAP session applies, and the store.)
    """
    for i in range(3):
        fresh.deliver(ALICE, message(i))
    acct = fresh.store.get_account(ALICE)
    seen: list = []
    unsubscribe = fresh.call(fresh.server.hub.subscribe, acct.id, seen.extend)
    try:
        c = connect(fresh)
        c.dele(1)
        c.dele(3)
        c.quit()
        assert wait_for(lambda: len([e for e in seen if e.kind == ch.EXPUNGE]) == 2)
    finally:
        fresh.call(unsubscribe)
    assert sorted(e.uid for e in seen if e.kind == ch.EXPUNGE) == [1, 3]
    assert inbox_uids(fresh) == [2]


def test_message_expunged_elsewhere_during_session(fresh):
    """A message removed by another client meanwhile answers -ERR on RETR; QUIT still works."""
    for i in range(2):
        fresh.deliver(ALICE, message(i))
    c = connect(fresh)
    mb = fresh.store.get_mailbox(fresh.store.get_account(ALICE).id, "INBOX")
    fresh.call(fresh.server.astore.delete_messages, mb.id, [1])
    with pytest.raises(poplib.error_proto, match="no longer available"):
        c.retr(1)
    c.dele(1)
    c.dele(2)
    assert c.quit().startswith(b"+OK")
    assert inbox_uids(fresh) == []


# --------------------------------------------------------------------------------------------- limits, pipelining


def test_pipelined_commands_in_one_packet(srv):
    r = Raw(srv.port("pop3"))
    r.line()
    r.send(f"CAPA\r\nUSER {BOB}\r\nPASS {PW}\r\nSTAT\r\nNOOP\r\nUIDL\r\nQUIT\r\n".encode())
    capa = r.until_terminator()
    assert capa.startswith(b"+OK capability list follows")
    assert r.line() == b"+OK send PASS"
    assert r.line().startswith(b"+OK maildrop has")
    assert r.line().startswith(b"+OK ")
    assert r.line() == b"+OK"
    assert r.until_terminator().startswith(b"+OK unique-id listing follows")
    assert r.line().startswith(b"+OK mail.example.test POP3 server signing off")
    assert r.closed_by_server()


def test_line_limit_over_socket(srv):
    limit = srv.config.limits.pop3_max_line
    r = Raw(srv.port("pop3"))
    r.line()
    r.send(b"USER " + b"a" * (limit - 7) + b"\r\n")
    assert r.line() == b"+OK send PASS"
    r.send(b"USER " + b"a" * (limit - 6) + b"\r\n")
    assert r.line() == f"-ERR line longer than {limit} octets".encode()
    r.send(b"QUIT\r\n")
    assert r.line().startswith(b"+OK")
    r.close()


def test_commands_without_progress_close_the_connection(srv):
    limit = srv.config.limits.pop3_max_commands_without_progress
    r = Raw(srv.port("pop3"))
    r.line()
    r.send(b"BOGUS\r\n" * (limit + 1))
    for _ in range(limit + 1):
        assert r.line() == b"-ERR unknown command"
    assert r.line() == b"-ERR too many commands without progress, closing"
    assert r.closed_by_server()


def test_idle_timeout_closes_without_response(fresh):
    """RFC 1939 section 3: the autologout timer closes the connection silently and deletes nothing."""
    fresh.deliver(ALICE, message(1))
    pop3_factory = next(lst.factory.wrappedFactory for lst in fresh.server.listening if lst.name == "pop3")
    clock = task.Clock()
    pop3_factory.clock = clock
    r = Raw(fresh.port("pop3"))
    r.line()
    r.send(f"USER {ALICE}\r\nPASS {PW}\r\nDELE 1\r\n".encode())
    for _ in range(3):
        r.line()
    fresh.call(clock.advance, pop3_factory.idle_timeout - 1)
    assert not r.closed_by_server(timeout=0.2)
    fresh.call(clock.advance, 2)
    assert r.closed_by_server(timeout=10)
    assert r.buf == b""
    assert inbox_uids(fresh) == [1]


def test_server_shutdown_notice(tmp_path):
    with running_server(tmp_path, listeners=("pop3",)) as s:
        r = Raw(s.port("pop3"))
        r.line()
        with contextlib.suppress(Exception):
            s.call(s.server.stopService)
        assert r.closed_by_server()
        assert r.buf.startswith(b"-ERR [SYS/TEMP] server shutting down")
