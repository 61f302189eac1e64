"""IMAP not-authenticated state over real sockets: greeting, CAPABILITY, LOGIN, AUTHENTICATE (PLAIN, LOGIN,
SASL-IR), STARTTLS, implicit TLS, LOGINDISABLED for non-loopback clients, ID, ENABLE, NAMESPACE."""

from __future__ import annotations

import base64
import imaplib

import pytest

from mailserver.imap.session import ImapSession
from tests.imap.imap_client import PASSWORD, Raw, imap_server, insecure_context, new_user


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    with imap_server(tmp_path_factory.mktemp("imap-auth")) as s:
        yield s


def test_greeting_and_capability_before_login(srv):
    """The greeting carries CAPABILITY; before login STARTTLS and AUTH=PLAIN (loopback) are offered."""
    raw = Raw(srv.port("imap"))
    assert raw.greeting.startswith(b"* OK [CAPABILITY IMAP4rev1 IMAP4rev2")
    out = raw.cmd("a", "CAPABILITY")
    caps = out[0].split()
    assert b"STARTTLS" in caps and b"AUTH=PLAIN" in caps and b"SASL-IR" in caps and b"LITERAL+" in caps
    assert b"LOGINDISABLED" not in caps
    assert b"IDLE" in caps and b"ID" in caps and b"ENABLE" in caps
    assert out[-1].startswith(b"a OK")
    raw.close()


def test_login_success_and_capabilities_after(srv):
    """LOGIN answers OK with the authenticated capabilities; STARTTLS is no longer listed."""
    user = new_user(srv)
    c = imaplib.IMAP4("127.0.0.1", srv.port("imap"))
    typ, data = c.login(user, PASSWORD)
    assert typ == "OK" and b"CAPABILITY" in data[0]
    typ, data = c.capability()
    caps = data[0].split()
    for cap in (b"UIDPLUS", b"MOVE", b"CONDSTORE", b"QRESYNC", b"SPECIAL-USE", b"LIST-STATUS", b"QUOTA",
                b"COMPRESS=DEFLATE", b"MULTIAPPEND", b"ESEARCH", b"UTF8=ACCEPT", b"STATUS=SIZE"):
        assert cap in caps, cap
    assert b"STARTTLS" not in caps and any(x.startswith(b"APPENDLIMIT=") for x in caps)
    c.logout()


def test_login_wrong_password_is_no_authenticationfailed(srv):
    """A wrong password answers NO [AUTHENTICATIONFAILED] and the session stays not authenticated."""
    user = new_user(srv)
    raw = Raw(srv.port("imap"))
    out = raw.cmd("a", f'LOGIN "{user}" "wrong"')
    assert out[-1].startswith(b"a NO [AUTHENTICATIONFAILED]")
    out = raw.cmd("b", "SELECT INBOX")
    assert out[-1].startswith(b"b BAD")
    raw.close()


def test_authenticate_plain_with_initial_response(srv):
    """RFC 4959 SASL-IR: AUTHENTICATE PLAIN <base64> logs in without a continuation."""
    user = new_user(srv)
    raw = Raw(srv.port("imap"))
    ir = base64.b64encode(f"\0{user}\0{PASSWORD}".encode()).decode()
    out = raw.cmd("a", f"AUTHENTICATE PLAIN {ir}")
    assert out[-1].startswith(b"a OK")
    raw.close()


def test_authenticate_plain_with_continuation(srv):
    """AUTHENTICATE PLAIN without an initial response gets an empty "+ " challenge."""
    user = new_user(srv)
    raw = Raw(srv.port("imap"))
    raw.send(b"a AUTHENTICATE PLAIN\r\n")
    assert raw.line() == b"+ \r\n"
    raw.send(base64.b64encode(f"\0{user}\0{PASSWORD}".encode()) + b"\r\n")
    assert raw.until(b"a")[-1].startswith(b"a OK")
    raw.close()


def test_authenticate_login_mechanism(srv):
    """The LOGIN mechanism prompts for user name and password."""
    user = new_user(srv)
    raw = Raw(srv.port("imap"))
    raw.send(b"a AUTHENTICATE LOGIN\r\n")
    assert raw.line() == b"+ " + base64.b64encode(b"Username:") + b"\r\n"
    raw.send(base64.b64encode(user.encode()) + b"\r\n")
    assert raw.line() == b"+ " + base64.b64encode(b"Password:") + b"\r\n"
    raw.send(base64.b64encode(PASSWORD.encode()) + b"\r\n")
    assert raw.until(b"a")[-1].startswith(b"a OK")
    raw.close()


def test_authenticate_cancel_is_bad(srv):
    """RFC 9051 6.2.2: "*" cancels the exchange with a tagged BAD."""
    raw = Raw(srv.port("imap"))
    raw.send(b"a AUTHENTICATE PLAIN\r\n")
    raw.line()
    raw.send(b"*\r\n")
    assert raw.until(b"a")[-1].startswith(b"a BAD")
    assert raw.cmd("b", "NOOP")[-1].startswith(b"b OK")
    raw.close()


def test_authenticate_unknown_mechanism(srv):
    raw = Raw(srv.port("imap"))
    assert raw.cmd("a", "AUTHENTICATE CRAM-MD5")[-1].startswith(b"a NO")
    raw.close()


def test_starttls_then_login(srv):
    """STARTTLS upgrades the connection; CAPABILITY no longer lists STARTTLS."""
    user = new_user(srv)
    c = imaplib.IMAP4("127.0.0.1", srv.port("imap"))
    c.starttls(ssl_context=insecure_context())
    typ, data = c.capability()
    assert b"STARTTLS" not in data[0].split()
    assert c.login(user, PASSWORD)[0] == "OK"
    c.logout()


def test_starttls_discards_pipelined_plaintext(srv):
    """Commands pipelined after STARTTLS in the same packet are never executed (CVE-2011-0411 class)."""
    user = new_user(srv)
    raw = Raw(srv.port("imap"))
    raw.send(b"a STARTTLS\r\nb LOGIN " + user.encode() + b" " + PASSWORD.encode() + b"\r\n")
    assert raw.line().startswith(b"a OK")
    raw.sock = insecure_context().wrap_socket(raw.sock, server_hostname="localhost")
    out = raw.cmd("c", "SELECT INBOX")
    # Not logged in: "b LOGIN" was dropped, so SELECT is not allowed and no "b" reply ever comes.
    assert all(not ln.startswith(b"b ") for ln in out)
    assert out[-1].startswith(b"c BAD")
    raw.close()


def test_starttls_twice_is_bad(srv):
    raw = Raw(srv.port("imap"))
    raw.send(b"a STARTTLS\r\n")
    raw.line()
    raw.sock = insecure_context().wrap_socket(raw.sock, server_hostname="localhost")
    assert raw.cmd("b", "STARTTLS")[-1].startswith(b"b BAD")
    raw.close()


def test_implicit_tls_listener(srv):
    """imaps (RFC 8314): TLS from the first byte; no STARTTLS offered."""
    user = new_user(srv)
    c = imaplib.IMAP4_SSL("127.0.0.1", srv.port("imaps"), ssl_context=insecure_context())
    assert b"STARTTLS" not in c.capabilities and "STARTTLS" not in c.capabilities
    assert c.login(user, PASSWORD)[0] == "OK"
    c.logout()


class _FakeConn:
    def __init__(self):
        self.out = b""
        self.closed = False

    def write(self, data):
        self.out += data

    def start_tls(self):
        pass

    def start_compress(self):
        pass

    def close(self):
        self.closed = True

    def set_reading(self, on):
        pass

    def writable(self):
        return None

    def activity(self, idle=False):
        pass

    def call_soon(self, f):
        f()


def test_logindisabled_for_remote_client_without_tls(srv):
    """RFC 9051 6.2.3: a non-loopback client without TLS sees LOGINDISABLED and LOGIN answers NO."""

    def run():
        conn = _FakeConn()
        s = ImapSession(srv.services, conn, client_ip="192.0.2.7", tls_available=True)
        s.greeting()
        s.data_received(b"a CAPABILITY\r\nb LOGIN x y\r\n")
        return conn.out

    out = srv.call(run)
    assert b"LOGINDISABLED" in out and b"AUTH=PLAIN" not in out
    assert b"b NO [PRIVACYREQUIRED]" in out


def test_id_enable_namespace(srv):
    user = new_user(srv)
    raw = Raw(srv.port("imap"))
    out = raw.cmd("a", 'ID ("name" "test")')
    assert out[0].startswith(b'* ID ("name" "mailserver"')
    raw.login(user)
    out = raw.cmd("b", "ENABLE CONDSTORE UTF8=ACCEPT X-UNKNOWN")
    assert out[0] == b"* ENABLED CONDSTORE UTF8=ACCEPT\r\n"
    out = raw.cmd("c", "ENABLE CONDSTORE")
    assert out[0] == b"* ENABLED\r\n"  # RFC 5161: only newly enabled ones
    out = raw.cmd("d", "NAMESPACE")
    assert out[0] == b'* NAMESPACE (("" "/")) (("Other Users/" "/")) (("Shared/" "/"))\r\n'
    raw.close()


def test_enable_before_login_is_bad(srv):
    raw = Raw(srv.port("imap"))
    assert raw.cmd("a", "ENABLE CONDSTORE")[-1].startswith(b"a BAD")
    raw.close()


def test_logout(srv):
    raw = Raw(srv.port("imap"))
    out = raw.cmd("a", "LOGOUT")
    assert out[0].startswith(b"* BYE") and out[-1].startswith(b"a OK")
    assert raw.closed()
