"""[listen_proxied] listeners (mailserver/proxied.py): a trusted balancer's PROXY header names the client, and every
part that looks at the client's address sees that one: the Received field, the mail and login logs, the per-address
connection cap, login throttling, the plaintext policy; implicit TLS listeners read the header before the handshake;
an untrusted peer, a bad header and a header that is too slow are closed without a greeting.

The balancer is played by the test, a trusted 127.0.0.1 writing headers by hand that claim documentation addresses
(192.0.2.0/24, 2001:db8::/32); an untrusted peer is 127.0.0.2 (Linux routes all of 127/8 to loopback)."""

from __future__ import annotations

import http.client
import imaplib
import poplib
import re
import socket
import ssl
import urllib.parse

import pytest
from twisted.internet import address, task
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.logger import formatEvent, globalLogPublisher

from mailserver.proxied import ProxiedFactory
from mailserver.proxywire import Networks, ProxiedHost, v1_header, v2_header
from tests import proxyclients as pc
from tests.harness import running_server

ALICE, PW = "alice@example.test", "secret"
CLIENT = ("192.0.2.7", 40001)
OTHER = ("192.0.2.8", 40002)
MSG = b"From: bob@example.net\r\nTo: alice@example.test\r\nSubject: via the balancer\r\n\r\nhello\r\n"
TRUSTED = {"trusted": ["127.0.0.1/32"]}


def proxied(*names: str) -> dict:
    return {name: ["127.0.0.1:0"] for name in names}


class _Logs:
    def __init__(self):
        self.events: list[dict] = []

    def __enter__(self):
        globalLogPublisher.addObserver(self.events.append)
        return self

    def __exit__(self, *exc):
        globalLogPublisher.removeObserver(self.events.append)

    def lines(self) -> list[str]:
        return [formatEvent(e) for e in list(self.events)]


# --------------------------------------------------------------------------------------------- without sockets


class _Recorder(Protocol):
    def connectionMade(self):
        self.peer = self.transport.getPeer()
        self.host = self.transport.getHost()
        self.transport.write(b"220 greeting\r\n")
        self.received = b""

    def dataReceived(self, data):
        self.received += data


def _connect(clock, peer="127.0.0.1", timeout=10.0):
    inner = Factory.forProtocol(_Recorder)
    factory = ProxiedFactory(inner, name="listen_proxied.smtp", trusted=Networks(["127.0.0.1/32"]), clock=clock,
                             header_timeout=timeout)
    proto = factory.buildProtocol(address.IPv4Address("TCP", peer, 5555))
    if proto is None:
        return factory, None, None
    transport = StringTransport(peerAddress=address.IPv4Address("TCP", peer, 5555),
                                hostAddress=address.IPv4Address("TCP", "127.0.0.1", 25))
    proto.makeConnection(transport)
    return factory, proto, transport


def test_untrusted_peer_gets_no_protocol_at_all():
    """A connection from outside [proxy] trusted is closed at accept: no protocol is built, nothing is sent."""
    factory, proto, _ = _connect(task.Clock(), peer="127.0.0.2")
    assert proto is None and not factory.pending


def test_protocol_starts_after_the_header_with_the_clients_address():
    clock = task.Clock()
    factory, proto, transport = _connect(clock)
    assert transport.value() == b""  # no greeting before the header
    header = v2_header(CLIENT, ("198.51.100.1", 25))
    proto.dataReceived(header[:5])
    proto.dataReceived(header[5:] + b"EHLO x\r\n")
    inner = proto.wrappedProtocol
    assert (inner.peer.host, inner.peer.port) == CLIENT and isinstance(inner.peer.host, ProxiedHost)
    assert (inner.host.host, inner.host.port) == ("198.51.100.1", 25)
    assert inner.received == b"EHLO x\r\n" and transport.value() == b"220 greeting\r\n"
    assert not factory.pending and not clock.getDelayedCalls()


def test_health_check_keeps_the_balancers_address_but_not_as_loopback():
    _, proto, _ = _connect(task.Clock())
    proto.dataReceived(v1_header(None))
    peer = proto.wrappedProtocol.peer
    assert peer.host == "127.0.0.1" and isinstance(peer.host, ProxiedHost)


def test_slow_header_is_aborted_at_the_deadline_however_it_trickles():
    """Slowloris: one byte per second keeps the connection only until proxy_header_timeout (10 s here)."""
    clock = task.Clock()
    factory, proto, transport = _connect(clock, timeout=10.0)
    header = v1_header(CLIENT)
    for i in range(9):
        proto.dataReceived(header[i:i + 1])
        clock.advance(1.0)
    assert not transport.disconnecting
    clock.advance(1.0)
    assert transport.disconnecting and transport.value() == b"" and proto.wrappedProtocol is None
    assert not factory.pending


def test_bad_header_is_aborted_without_a_greeting():
    clock = task.Clock()
    factory, proto, transport = _connect(clock)
    proto.dataReceived(b"EHLO client.example\r\n")
    assert transport.disconnecting and transport.value() == b"" and proto.wrappedProtocol is None
    assert not factory.pending and not clock.getDelayedCalls()


# --------------------------------------------------------------------------------------------- real listeners


def test_smtp_received_field_and_mail_log_name_the_client(tmp_path):
    with _Logs() as logs, running_server(tmp_path, listeners=("smtp", "imap"), listen_proxied=proxied("smtp"),
                                         proxy=TRUSTED) as srv:
        srv.add_user(ALICE, PW)
        for header in (v1_header(CLIENT, ("198.51.100.1", 25)), v2_header(("2001:db8::7", 4711))):
            with pc.SMTP(srv.port("smtp", proxied=True), header, timeout=30) as c:
                c.sendmail("bob@example.net", [ALICE], MSG)
        with imaplib.IMAP4("127.0.0.1", srv.port("imap")) as c:
            c.login(ALICE, PW)
            c.select("INBOX", readonly=True)
            heads = [c.fetch(str(n), "(BODY.PEEK[HEADER.FIELDS (RECEIVED)])")[1][0][1] for n in (1, 2)]
    assert re.match(rb"Received: from \S+ \(\[192\.0\.2\.7\]\)", heads[0]), heads[0]
    assert re.match(rb"Received: from \S+ \(\[IPv6:2001:db8::7\]\)", heads[1]), heads[1]
    mail_log = [ln for ln in logs.lines() if ln.startswith("smtp ") and "to=<alice@example.test>" in ln]
    assert any("client=192.0.2.7 " in ln for ln in mail_log), mail_log
    assert any("client=2001:db8::7 " in ln for ln in mail_log), mail_log


def test_a_proxy_header_on_a_plain_listener_is_only_a_bad_command(tmp_path):
    """[listen] addresses never read PROXY headers: the peer is the connection's, the line an unknown command."""
    with running_server(tmp_path, listeners=("smtp",)) as srv:
        with socket.create_connection(("127.0.0.1", srv.port("smtp")), timeout=30) as s:
            s.recv(1024)
            s.sendall(v1_header(CLIENT))
            assert s.recv(1024).startswith(b"5")


def test_login_throttling_and_log_count_the_claimed_client(tmp_path):
    """Failures from 192.0.2.7 throttle 192.0.2.7 only, not the balancer's 127.0.0.1 nor 192.0.2.8."""
    limits = {"auth_max_failures_per_ip": 3, "auth_max_failures_per_account": 100, "auth_max_delay": 0.0}
    with _Logs() as logs, running_server(tmp_path, listeners=(), listen_proxied=proxied("imaps"), proxy=TRUSTED,
                                         limits=limits) as srv:
        srv.add_user(ALICE, PW)
        port = srv.port("imaps", proxied=True)

        def attempt(client, password) -> str:
            c = pc.IMAP4_SSL(port, v2_header(client))
            try:
                c.login(ALICE, password)
                return "ok"
            except imaplib.IMAP4.error as e:
                return str(e)
            finally:
                c.shutdown()

        for _ in range(3):
            assert "AUTHENTICATIONFAILED" in attempt(CLIENT, "wrong")
        assert "UNAVAILABLE" in attempt(CLIENT, PW)
        assert attempt(OTHER, PW) == "ok"
    lines = [ln for ln in logs.lines() if ln.startswith("login ")]
    assert f"login failed for '{ALICE}' from 192.0.2.7 via imap (invalid)" in lines
    assert f"login ok for {ALICE} from 192.0.2.8 via imap" in lines
    assert not any("from 127.0.0.1" in ln for ln in lines)


def test_connection_cap_counts_the_claimed_client(tmp_path):
    """smtp_max_sessions_per_ip applies to the client named in the header, not to the balancer."""
    with running_server(tmp_path, listeners=(), listen_proxied=proxied("smtp"), proxy=TRUSTED,
                        limits={"smtp_max_sessions_per_ip": 2}) as srv:
        port = srv.port("smtp", proxied=True)
        held = [pc.proxied_socket(port, v1_header(CLIENT)) for _ in range(2)]
        try:
            for s in held:
                assert s.recv(1024).startswith(b"220")
            third = pc.proxied_socket(port, v1_header(CLIENT))
            assert third.recv(1024).startswith(b"421")
            third.close()
            other = pc.proxied_socket(port, v1_header(OTHER))
            assert other.recv(1024).startswith(b"220")
            other.close()
            assert srv.server_sessions("smtp") >= 2
        finally:
            for s in held:
                s.close()


def test_a_proxied_client_is_not_local_for_the_plaintext_policy(tmp_path):
    """Even named 127.0.0.1 by the balancer, a client without TLS gets no plaintext login (direct loopback does)."""
    header = v1_header(("127.0.0.1", 4711))
    with running_server(tmp_path, listeners=("imap", "pop3", "submission"),
                        listen_proxied=proxied("imap", "pop3", "submission"), proxy=TRUSTED) as srv:
        srv.add_user(ALICE, PW)
        direct = imaplib.IMAP4("127.0.0.1", srv.port("imap"))
        assert "LOGINDISABLED" not in direct.capabilities
        direct.logout()
        c = pc.IMAP4(srv.port("imap", proxied=True), header)
        assert "LOGINDISABLED" in c.capabilities
        with pytest.raises(imaplib.IMAP4.error):
            c.login(ALICE, PW)
        c.logout()
        p = pc.POP3(srv.port("pop3", proxied=True), header)
        assert "USER" not in p.capa()
        with pytest.raises(poplib.error_proto):
            p.user(ALICE)
            p.pass_(PW)
        p.quit()
        with pc.SMTP(srv.port("submission", proxied=True), header, timeout=30) as s:
            s.ehlo()
            assert not s.has_extn("auth")
            s.starttls(context=pc.client_tls())
            s.ehlo()
            assert s.has_extn("auth")  # inside TLS: allowed
            s.login(ALICE, PW)
            # The STARTTLS handshake reached the connection's handshake timer through the PROXY layer.
            tracked = [p for lst in srv.server.listening if lst.proxy is not None for p in lst.factory.protocols]
            assert tracked and all(srv.call(lambda p=p: p._handshake_timer) is None for p in tracked)


@pytest.mark.parametrize("name", ["imaps", "pop3s", "submissions", "https"])
def test_implicit_tls_reads_the_header_before_the_handshake(tmp_path, name):
    with running_server(tmp_path, listeners=(), listen_proxied=proxied(name), proxy=TRUSTED) as srv:
        srv.add_user(ALICE, PW)
        port = srv.port(name, proxied=True)
        header = v2_header(CLIENT, ("198.51.100.1", 993))
        if name == "imaps":
            c = pc.IMAP4_SSL(port, header)
            assert c.login(ALICE, PW)[0] == "OK"
            c.logout()
        elif name == "pop3s":
            c = pc.POP3_SSL(port, header)
            c.user(ALICE)
            assert c.pass_(PW).startswith(b"+OK")
            c.quit()
        elif name == "submissions":
            with pc.SMTP_SSL(port, header, timeout=30) as c:
                c.login(ALICE, PW)
        else:
            r = _https(port, header, "GET", "/login")
            assert r.status == 200


def test_untrusted_peer_bad_header_and_no_header_get_no_greeting(tmp_path):
    with _Logs() as logs, running_server(tmp_path, listeners=(), listen_proxied=proxied("smtp", "imaps"),
                                         proxy=TRUSTED) as srv:
        port = srv.port("smtp", proxied=True)
        # A valid header from 127.0.0.2, which is not trusted: closed at once.
        s = pc.proxied_socket(port, v1_header(CLIENT), source="127.0.0.2")
        assert _closed_without_data(s)
        # A trusted peer speaking SMTP directly, or TLS directly to the implicit-TLS port: closed.
        s = pc.proxied_socket(port, b"EHLO client.example\r\n")
        assert _closed_without_data(s)
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            pc.client_tls().wrap_socket(socket.create_connection(("127.0.0.1", srv.port("imaps", proxied=True)),
                                                                 timeout=30)).recv(10)
        assert srv.server_sessions("smtp") == 0
    lines = logs.lines()
    assert any("listen_proxied.smtp: connection from 127.0.0.2 refused: not a trusted proxy" in ln for ln in lines)
    assert any("listen_proxied.smtp: connection from 127.0.0.1 closed: not a PROXY header" in ln for ln in lines)


def test_a_header_that_never_completes_is_closed_at_the_deadline(tmp_path):
    """A bounded wait: proxy_header_timeout is 1 s here; the test allows 30 s for the close to be seen."""
    with running_server(tmp_path, listeners=(), listen_proxied=proxied("smtp"), proxy=TRUSTED,
                        limits={"proxy_header_timeout": 1.0}) as srv:
        s = pc.proxied_socket(srv.port("smtp", proxied=True), b"PROXY TCP4 192.0.2.7 ")
        assert _closed_without_data(s)


def _closed_without_data(s: socket.socket) -> bool:
    s.settimeout(30)
    try:
        return s.recv(1024) == b""
    except ConnectionResetError:
        return True
    finally:
        s.close()


# --------------------------------------------------------------------------------------------- webmail


class _ProxiedHTTPS(http.client.HTTPSConnection):
    def __init__(self, port, header):
        super().__init__("127.0.0.1", port, context=pc.client_tls(), timeout=30)
        self._proxy_header = header

    def connect(self):
        self.sock = self._context.wrap_socket(pc.proxied_socket(self.port, self._proxy_header), server_hostname=None)


def _https(port, header, method, path, body=b"", headers=None, cookies=None):
    conn = _ProxiedHTTPS(port, header)
    h = {"Host": f"127.0.0.1:{port}"}
    if cookies:
        h["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
    h.update(headers or {})
    conn.request(method, path, body=body, headers=h)
    r = conn.getresponse()
    r.body = r.read()
    r.cookies = {c.split(";", 1)[0].split("=", 1)[0]: c.split(";", 1)[0].split("=", 1)[1]
                 for c in r.headers.get_all("Set-Cookie") or []}
    conn.close()
    return r


def _webmail_login(port, header, password, extra=None) -> int:
    page = _https(port, header, "GET", "/login", headers=extra)
    pre = re.search(rb'name="_pre" value="([^"]+)"', page.body).group(1).decode()
    body = urllib.parse.urlencode({"_pre": pre, "username": ALICE, "password": password, "next": "/"}).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded", **(extra or {})}
    return _https(port, header, "POST", "/login", body, headers, cookies=page.cookies).status


def test_webmail_throttles_the_client_the_balancer_names(tmp_path):
    limits = {"auth_max_failures_per_ip": 3, "auth_max_failures_per_account": 100, "auth_max_delay": 0.0}
    with running_server(tmp_path, listeners=(), listen_proxied=proxied("https"), proxy=TRUSTED,
                        limits=limits) as srv:
        srv.add_user(ALICE, PW)
        port = srv.port("https", proxied=True)
        for _ in range(3):
            assert _webmail_login(port, v2_header(CLIENT), "wrong") == 403
        assert _webmail_login(port, v2_header(CLIENT), PW) == 429
        assert _webmail_login(port, v2_header(OTHER), PW) == 303


def test_webmail_believes_forwarded_headers_only_from_trusted_proxies(tmp_path):
    """X-Forwarded-For from a trusted reverse proxy names the client; the same header from anyone else is ignored."""
    limits = {"auth_max_failures_per_ip": 3, "auth_max_failures_per_account": 100, "auth_max_delay": 0.0}
    with running_server(tmp_path, listeners=("https",), listen_proxied=proxied("https"), proxy=TRUSTED,
                        limits=limits) as srv:
        srv.add_user(ALICE, PW)
        direct = srv.port("https")  # the test is 127.0.0.1: a trusted reverse proxy
        xff = {"X-Forwarded-For": "192.0.2.7"}

        def login(password, headers):
            conn = http.client.HTTPSConnection("127.0.0.1", direct, context=pc.client_tls(), timeout=30)
            h = {"Host": f"127.0.0.1:{direct}", **headers}
            conn.request("GET", "/login", headers=h)
            r = conn.getresponse()
            page = r.read()
            cookies = dict(c.split(";", 1)[0].split("=", 1) for c in r.headers.get_all("Set-Cookie") or [])
            pre = re.search(rb'name="_pre" value="([^"]+)"', page).group(1).decode()
            body = urllib.parse.urlencode({"_pre": pre, "username": ALICE, "password": password}).encode()
            h.update({"Content-Type": "application/x-www-form-urlencoded",
                      "Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())})
            conn.request("POST", "/login", body=body, headers=h)
            status = conn.getresponse().status
            conn.close()
            return status

        for _ in range(3):
            assert login("wrong", xff) == 403
        assert login(PW, xff) == 429  # 192.0.2.7 is throttled
        assert login(PW, {}) == 303  # 127.0.0.1 itself is not
        # Through the balancer the client is 192.0.2.9, not trusted: its own X-Forwarded-For is not believed.
        assert _webmail_login(srv.port("https", proxied=True), v2_header(("192.0.2.9", 1)), PW,
                              extra=xff) == 303
