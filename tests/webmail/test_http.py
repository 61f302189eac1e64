"""Webmail over real HTTP(S) on 127.0.0.1: headers, sessions, CSRF, ownership, injection, client set-up documents."""

from __future__ import annotations

import http.client
import re
import ssl
import time
import urllib.parse
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import pytest

from mailserver.config import ListenAddress
from mailserver.service import Listening
from storage.models import FLAG_SEEN
from tests.harness import running_server
from webmail import web

ALICE, BOB = "alice@example.test", "bob@example.test"
PW = "correct horse battery"


def _ctx():
    c = ssl.create_default_context()
    c.check_hostname = False
    c.verify_mode = ssl.CERT_NONE
    return c


class Client:
    """A tiny cookie-keeping HTTPS client that never follows redirects (tests look at each answer)."""

    def __init__(self, srv, scheme="https"):
        self.port = srv.port(scheme)
        self.scheme = scheme
        self.cookies: dict[str, str] = {}

    def request(self, method, path, body=b"", headers=None, cookies=None):
        conn = (http.client.HTTPSConnection("127.0.0.1", self.port, context=_ctx(), timeout=30)
                if self.scheme == "https" else http.client.HTTPConnection("127.0.0.1", self.port, timeout=30))
        h = {"Host": f"127.0.0.1:{self.port}"}
        jar = self.cookies if cookies is None else cookies
        if jar:
            h["Cookie"] = "; ".join(f"{k}={v}" for k, v in jar.items())
        h.update(headers or {})
        conn.request(method, path, body=body, headers=h)
        r = conn.getresponse()
        data = r.read()
        for c in r.headers.get_all("Set-Cookie") or []:
            name, value = c.split(";", 1)[0].split("=", 1)
            if "Max-Age=0" in c:
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value
        conn.close()
        return r, data

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, fields, **kw):
        body = urllib.parse.urlencode(fields, doseq=True).encode()
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        headers.update(kw.pop("headers", {}) or {})
        return self.request("POST", path, body, headers, **kw)

    def login(self, user=ALICE, password=PW):
        r, page = self.get("/login")
        pre = re.search(rb'name="_pre" value="([^"]+)"', page).group(1).decode()
        return self.post("/login", {"_pre": pre, "username": user, "password": password, "next": "/"})

    def csrf(self, path="/settings"):
        r, page = self.get(path)
        return re.search(rb'name="_csrf" value="([^"]+)"', page).group(1).decode()


def _setup(srv):
    srv.add_user(ALICE, PW)
    srv.add_user(BOB, PW)
    plain = (b"From: Bob <bob@example.test>\r\nTo: alice@example.test\r\nSubject: plain\r\n"
             b"Message-ID: <p1@example.test>\r\n\r\nHello Alice\r\n")
    srv.deliver(ALICE, plain)
    att = (b"From: Carol <carol@example.org>\r\nTo: bob@example.test\r\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n"
           b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b1\r\n\r\n--b1\r\n"
           b"Content-Type: text/plain\r\n\r\nsee attached\r\n--b1\r\nContent-Type: text/html; name=evil.html\r\n"
           b"Content-Disposition: attachment; filename*=utf-8''%C3%9Cbung%20%22x%22.html\r\n\r\n"
           b"<script>alert(1)</script>\r\n--b1--\r\n")
    srv.deliver(BOB, att)
    return srv.store.get_mailbox(srv.store.get_account(ALICE).id, "INBOX"), \
        srv.store.get_mailbox(srv.store.get_account(BOB).id, "INBOX")


def test_security_headers_and_https_redirect(tmp_path):
    """https pages carry HSTS, framing, referrer and CSP headers; http redirects except client set-up paths."""
    with running_server(tmp_path, listeners=("http", "https")) as srv:
        _setup(srv)
        c = Client(srv)
        r, _ = c.get("/login")
        assert r.status == 200
        assert r.headers["Strict-Transport-Security"].startswith("max-age=")
        assert r.headers["X-Frame-Options"] == "DENY"
        assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
        assert "script-src 'self'" in r.headers["Content-Security-Policy"]
        assert r.headers["Referrer-Policy"] == "no-referrer"
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        plain = Client(srv, "http")
        r, _ = plain.get("/m/1?page=2")
        assert r.status == 301
        assert r.headers["Location"] == f"https://mail.example.test:{srv.port('https')}/m/1?page=2"
        r, _ = plain.get("/.well-known/autoconfig/mail/config-v1.1.xml?emailaddress=alice%40example.test")
        assert r.status == 200 and r.headers["Content-Type"].startswith("application/xml")
        r, _ = plain.request("POST", "/AutoDiscover/AutoDiscover.xml", b"<x/>", {"Content-Type": "text/xml"})
        assert r.status == 200
        # A Host that is not a host name never reaches the Location header: our own name is used.
        r, _ = plain.get("/x", headers={"Host": "evil.example/@attacker"})
        assert r.headers["Location"] == f"https://mail.example.test:{srv.port('https')}/x"


def test_https_redirect_goes_to_the_configured_host_name_only(tmp_path):
    """The http->https redirect never takes the Host header: an attacker's name, one of the names we also serve,
    an address, a malformed or a missing Host all get our configured host name (whose certificate the https
    listener presents)."""
    with running_server(tmp_path, listeners=("http", "https")) as srv:
        plain = Client(srv, "http")
        port = srv.port("https")
        for asked in ("evil.test", "evil.test:80", "mail.example.test", "autoconfig.example.test",
                      "autoconfig.evil.test", "127.0.0.1", f"127.0.0.1:{srv.port('http')}", "127.0.0.2", "[::1]",
                      "evil.test/@x", "evil.test\\", "", "MAIL.EXAMPLE.TEST."):
            r, _ = plain.get("/inbox?x=1", headers={"Host": asked})
            assert r.status == 301
            assert r.headers["Location"] == f"https://mail.example.test:{port}/inbox?x=1", asked
        # A request-target that is not a path (absolute form, "//host") cannot steer it either.
        r, _ = plain.get("//evil.test/x")
        assert r.headers["Location"] == f"https://mail.example.test:{port}/"
        r, _ = plain.get("http://evil.test/x")
        assert r.headers["Location"] == f"https://mail.example.test:{port}/"


def test_login_session_fixation_and_cookie_flags(tmp_path):
    """Sign-in issues a new Secure/HttpOnly/SameSite=Lax id; a planted id never becomes a session."""
    with running_server(tmp_path, listeners=("https",)) as srv:
        _setup(srv)
        c = Client(srv)
        c.cookies["__Host-wm"] = "planted-by-attacker"
        r, _ = c.get("/login")
        pre = c.cookies["wm_pre"]
        conn = http.client.HTTPSConnection("127.0.0.1", c.port, context=_ctx())
        body = urllib.parse.urlencode({"_pre": pre, "username": ALICE, "password": PW}).encode()
        conn.request("POST", "/login", body, {"Content-Type": "application/x-www-form-urlencoded",
                                               "Cookie": f"wm_pre={pre}; __Host-wm=planted-by-attacker"})
        r = conn.getresponse()
        r.read()
        assert r.status == 303
        set_cookie = [v for v in r.headers.get_all("Set-Cookie") if v.startswith("__Host-wm=")][0]
        token = set_cookie.split(";", 1)[0].split("=", 1)[1]
        assert token != "planted-by-attacker" and len(token) >= 40
        for attr in ("Secure", "HttpOnly", "SameSite=Lax", "Path=/"):
            assert attr in set_cookie
        assert "Domain=" not in set_cookie
        # The planted id is not a session; the new one is.
        r, _ = c.get("/settings", cookies={"__Host-wm": "planted-by-attacker"})
        assert r.status == 303 and r.headers["Location"].startswith("/login")
        r, _ = c.get("/settings", cookies={"__Host-wm": token})
        assert r.status == 200
        # Signing in again gives yet another id; the database keeps only hashes.
        c2 = Client(srv)
        c2.login()
        assert c2.cookies["__Host-wm"] != token
        from sqlalchemy import select

        from webmail.models import WebmailSession
        with srv.store.engine.connect() as conn2:
            ids = [r[0] for r in conn2.execute(select(WebmailSession.id))]
        assert token not in ids and len(ids) == 2


def test_wrong_password_and_logout(tmp_path):
    """A wrong password is refused; sign-out deletes the session so the old cookie no longer works."""
    with running_server(tmp_path, listeners=("https",)) as srv:
        _setup(srv)
        c = Client(srv)
        r, page = c.login(password="nope")
        assert r.status == 403 and b"Wrong address or password" in page
        r, _ = c.login()
        assert r.status == 303
        old = dict(c.cookies)
        token = c.csrf()
        r, _ = c.post("/logout", {"_csrf": token})
        assert r.status == 303 and "__Host-wm" not in c.cookies
        r, _ = c.get("/settings", cookies=old)
        assert r.status == 303 and r.headers["Location"].startswith("/login")


def test_csrf_and_origin_rejected(tmp_path):
    """State-changing requests without the session's CSRF token, or from another origin, are refused (403)."""
    with running_server(tmp_path, listeners=("https",)) as srv:
        inbox, _ = _setup(srv)
        c = Client(srv)
        c.login()
        token = c.csrf()
        for fields in ({"action": "read", "uid": "1"}, {"action": "read", "uid": "1", "_csrf": "x" * len(token)}):
            r, _ = c.post(f"/m/{inbox.id}/action", fields)
            assert r.status == 403
        r, _ = c.post(f"/m/{inbox.id}/action", {"action": "read", "uid": "1", "_csrf": token},
                      headers={"Origin": "https://evil.example"})
        assert r.status == 403
        r, _ = c.post(f"/m/{inbox.id}/action", {"action": "read", "uid": "1", "_csrf": token},
                      headers={"Origin": f"https://127.0.0.1:{c.port}"})
        assert r.status == 303
        # Login CSRF: a sign-in form without the pre-session token is refused.
        r, _ = Client(srv).post("/login", {"username": ALICE, "password": PW})
        assert r.status == 403
        # GET never changes mailboxes (other than marking the opened message seen).
        r, _ = c.get(f"/m/{inbox.id}/action")
        assert r.status == 405


def test_body_limit_one_byte_past(tmp_path):
    """Small forms are limited to MAX_SMALL_BODY bytes: exactly that passes the size check, one more is 413."""
    with running_server(tmp_path, listeners=("https",)) as srv:
        inbox, _ = _setup(srv)
        c = Client(srv)
        c.login()
        prefix = b"action=read&uid=1&pad="
        ok = prefix + b"a" * (web.MAX_SMALL_BODY - len(prefix))
        r, _ = c.request("POST", f"/m/{inbox.id}/action", ok, {"Content-Type": "application/x-www-form-urlencoded"})
        assert r.status == 403  # passed the size check, then failed CSRF
        r, _ = c.request("POST", f"/m/{inbox.id}/action", ok + b"a",
                         {"Content-Type": "application/x-www-form-urlencoded"})
        assert r.status == 413


def test_other_accounts_ids_are_404(tmp_path):
    """Another user's mailbox, message, attachment, HTML part, source or cid id answers 404."""
    with running_server(tmp_path, listeners=("https",)) as srv:
        _inbox, bob_inbox = _setup(srv)
        c = Client(srv)
        c.login()
        b = bob_inbox.id
        for path in (f"/m/{b}", f"/m/{b}/1", f"/m/{b}/1/part/2", f"/m/{b}/1/html/1", f"/m/{b}/1/source",
                     f"/m/{b}/1/cid/x", f"/compose?reply={b}:1&mode=reply", f"/compose?draft={b}:1",
                     f"/search?q=x&mb={b}"):
            r, page = c.get(path)
            assert r.status == 404, path
            assert b"see attached" not in page
        token = c.csrf()
        r, _ = c.post(f"/m/{b}/action", {"_csrf": token, "action": "delete", "uid": "1"})
        assert r.status == 404
        r, _ = c.post("/folders", {"_csrf": token, "op": "delete", "mb": str(b)})
        assert r.status == 404
        # Forwarding another user's attachment by reference is refused as well.
        r, _ = c.post("/compose", {"_csrf": token, "action": "send", "from": ALICE, "to": ALICE, "subject": "x",
                                   "body": "x", "keep": f"{b}:1:2"})
        assert r.status == 404
        assert srv.store.get_mailbox(srv.store.get_account(BOB).id, "INBOX").message_count == 1


def test_attachment_download_is_safe(tmp_path):
    """Attachments download with a safe Content-Disposition (RFC 2231 name decoded), nosniff and no HTML type."""
    with running_server(tmp_path, listeners=("https",)) as srv:
        _inbox, bob_inbox = _setup(srv)
        c = Client(srv)
        c.login(BOB)
        r, page = c.get(f"/m/{bob_inbox.id}/1")
        assert r.status == 200
        assert "Übung \"x\".html".encode() in page.replace(b"&#34;", b'"') or b"&#220;bung" in page
        link = re.search(rb'href="(/m/\d+/1/part/\d+)"', page).group(1).decode()
        r, data = c.get(link)
        assert r.status == 200 and data.startswith(b"<script>")
        assert r.headers["Content-Type"] == "application/octet-stream"
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        cd = r.headers["Content-Disposition"]
        assert cd.startswith("attachment; ")
        assert "filename*=UTF-8''%C3%9Cbung%20%22x%22.html" in cd
        assert '"' not in cd.split("filename=", 1)[1].split(";", 1)[0].strip('"')
        assert r.headers["Content-Security-Policy"].startswith("default-src 'none'")


def test_header_injection_refused(tmp_path):
    """CR/LF in To, Subject or threading fields is refused: nothing is sent, queued or stored."""
    with running_server(tmp_path, listeners=("https",)) as srv:
        _setup(srv)
        c = Client(srv)
        c.login()
        token = c.csrf("/compose")
        base = {"_csrf": token, "action": "send", "from": ALICE, "to": BOB, "subject": "hi", "body": "x"}
        for field, value in (("subject", "hi\r\nBcc: victim@example.org"), ("to", "bob@example.test\r\nX: y"),
                             ("subject", "a\nb"), ("references", "<a@b>\r\nBcc: v@e.org"),
                             ("to", "not an address")):
            r, page = c.post("/compose", dict(base, **{field: value}))
            assert r.status == 400, (field, value)
        acct = srv.store.get_account(ALICE)
        assert srv.store.get_mailbox(acct.id, "Sent").message_count == 0
        assert srv.store.get_mailbox(srv.store.get_account(BOB).id, "INBOX").message_count == 1
        # Sending as an address that is not the account's own is refused too.
        r, page = c.post("/compose", dict(base, **{"from": BOB}))
        assert r.status == 400 and b"may not send as" in page


@pytest.mark.parametrize("subject", ["a\x0bb", "a\u2028b", "a\u2029b", "a\x85b", "a\x0cb", "a\x1cb", "a\x00b",
                                     "a\x1bb"])
def test_subject_with_characters_the_header_writer_refuses_is_a_form_error(tmp_path, subject):
    """A subject with VT, U+2028 and the like used to answer 500 (the email package refuses them): now the form
    comes back with a clear error, for send and for saving a draft, and nothing is stored."""
    with running_server(tmp_path, listeners=("https",)) as srv:
        _setup(srv)
        c = Client(srv)
        c.login()
        token = c.csrf("/compose")
        for action in ("send", "save"):  # "save" is the Save draft button
            r, page = c.post("/compose", {"_csrf": token, "action": action, "from": ALICE, "to": BOB,
                                          "subject": subject, "body": "x"})
            assert r.status == 400, action
            assert b"Subject must not contain" in page
        acct = srv.store.get_account(ALICE)
        assert srv.store.get_mailbox(acct.id, "Sent").message_count == 0
        assert srv.store.get_mailbox(acct.id, "Drafts").message_count == 0


def _multipart(fields: dict[str, str], files: list[tuple[str, bytes]]) -> tuple[bytes, str]:
    """A multipart/form-data body as browsers send it (file names as raw UTF-8 in the quoted string)."""
    boundary = "----formboundary7MA4YWxkTrZu0gW"
    out = b""
    for k, v in fields.items():
        out += (f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n').encode()
    for name, data in files:
        out += (f'--{boundary}\r\nContent-Disposition: form-data; name="attach"; filename="{name}"\r\n'
                f"Content-Type: text/plain\r\n\r\n").encode() + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


REFUSED_BY_THE_HEADER_WRITER = ["\x0b", "\x0c", "\x1c", "\x85", "\u2028", "\u2029", "\x1b", "\x00"]


@pytest.mark.parametrize("char", REFUSED_BY_THE_HEADER_WRITER)
def test_recipients_names_and_file_names_with_characters_the_header_writer_refuses(tmp_path, char):
    """Not only the subject: a To, Cc or Bcc display name with VT, U+2028 and the like is a form error for send and
    for a draft; a display name in the settings is refused when saved (it would break every later send); an
    uploaded file's name loses such characters and the message goes out. Never an HTTP 500."""
    with running_server(tmp_path, listeners=("https",)) as srv:
        _setup(srv)
        c = Client(srv)
        c.login()
        token = c.csrf("/compose")
        acct = srv.store.get_account(ALICE)
        for field in ("to", "cc", "bcc"):
            for action in ("send", "save"):
                fields = {"_csrf": token, "action": action, "from": ALICE, "to": BOB, "subject": "s", "body": "x",
                          field: f"Bob{char}Smith <{BOB}>"}
                r, page = c.post("/compose", fields)
                assert r.status == 400, (field, action)
                assert f"{field.capitalize()} must not contain".encode() in page, (field, action)
        assert srv.store.get_mailbox(acct.id, "Sent").message_count == 0
        assert srv.store.get_mailbox(acct.id, "Drafts").message_count == 0
        for op, extra in (("profile", {"display_name": f"Alice{char}A", "signature": "s"}),
                          ("identity", {"address": ALICE, "name": f"Alice{char}A", "signature": "s"})):
            r, _ = c.post("/settings", {"_csrf": token, "op": op, **extra})
            assert r.status == 400, op
        assert srv.store.get_account(ALICE).display_name == ""
        body, ctype = _multipart({"_csrf": token, "action": "send", "from": ALICE, "to": BOB, "subject": "file",
                                  "body": "attached"}, [(f"re{char}port\u202e.txt", b"hello")])
        r, _ = c.request("POST", "/compose", body, {"Content-Type": ctype})
        assert r.status == 303
        (sent,) = srv.store.get_messages(srv.store.get_mailbox(acct.id, "Sent").id, [1])
        raw = srv.store.read_blob(sent.blob_id)
        assert b'filename="report.txt"' in raw, raw


def test_sessions_survive_restart_and_expire(tmp_path):
    """Sessions are kept in the database: a restart keeps them; the idle limit ends them."""
    with running_server(tmp_path, listeners=("https",)) as srv:
        _setup(srv)
        c = Client(srv)
        c.login()
        cookies = dict(c.cookies)
    with running_server(tmp_path, listeners=("https",)) as srv:
        c = Client(srv)
        c.cookies = cookies
        r, _ = c.get("/settings")
        assert r.status == 200
    with running_server(tmp_path, listeners=("https",), webmail={"session_idle": 0.5}) as srv:
        c = Client(srv)
        c.cookies = dict(cookies)
        time.sleep(0.8)
        r, _ = c.get("/settings")
        assert r.status == 303


@dataclass
class _FakePort:
    port: int

    def getHost(self):
        return self

    def stopListening(self):
        return None


def _pretend_listening(srv, ports: dict[str, int]):
    """Make the server report client listeners (their protocol modules are other engineers' work)."""
    for name, port in ports.items():
        srv.server.listening.append(Listening(name, ListenAddress("127.0.0.1", port), _FakePort(port),
                                              type("F", (), {"protocols": []})()))


CLIENT_PORTS = {"imaps": 993, "imap": 143, "pop3s": 995, "pop3": 110, "submissions": 465, "submission": 587}


def test_mozilla_autoconfig_document(tmp_path):
    """config-v1.1.xml lists IMAP 993/143, POP3 995/110, SMTP 465/587 with the right socket types."""
    with running_server(tmp_path, listeners=("http", "https")) as srv:
        _setup(srv)
        _pretend_listening(srv, CLIENT_PORTS)
        try:
            c = Client(srv, "http")
            r, data = c.get("/.well-known/autoconfig/mail/config-v1.1.xml?emailaddress=alice%40example.test")
            assert r.status == 200
            root = ET.fromstring(data)
            assert root.tag == "clientConfig" and root.get("version") == "1.1"
            prov = root.find("emailProvider")
            assert prov.get("id") == "example.test" and prov.findtext("domain") == "example.test"
            incoming = [(s.get("type"), s.findtext("hostname"), int(s.findtext("port")), s.findtext("socketType"),
                         s.findtext("authentication"), s.findtext("username"))
                        for s in prov.findall("incomingServer")]
            assert incoming == [
                ("imap", "mail.example.test", 993, "SSL", "password-cleartext", "%EMAILADDRESS%"),
                ("imap", "mail.example.test", 143, "STARTTLS", "password-cleartext", "%EMAILADDRESS%"),
                ("pop3", "mail.example.test", 995, "SSL", "password-cleartext", "%EMAILADDRESS%"),
                ("pop3", "mail.example.test", 110, "STARTTLS", "password-cleartext", "%EMAILADDRESS%"),
            ]
            outgoing = [(s.get("type"), int(s.findtext("port")), s.findtext("socketType"))
                        for s in prov.findall("outgoingServer")]
            assert outgoing == [("smtp", 465, "SSL"), ("smtp", 587, "STARTTLS")]
            # autoconfig.<domain>/mail/config-v1.1.xml uses the Host name.
            r, data = c.get("/mail/config-v1.1.xml", headers={"Host": "autoconfig.example.test"})
            assert r.status == 200 and ET.fromstring(data).find("emailProvider").get("id") == "example.test"
            r, _ = c.get("/.well-known/autoconfig/mail/config-v1.1.xml?emailaddress=x%40unknown.example")
            assert r.status == 404
        finally:
            srv.server.listening = [lst for lst in srv.server.listening if not isinstance(lst.port, _FakePort)]


AD_NS = "{http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006}"
OL_NS = "{http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a}"


def test_outlook_autodiscover_document(tmp_path):
    """POST /autodiscover/autodiscover.xml (any case) answers the 2006a schema for IMAP, POP3 and SMTP."""
    request = (b'<?xml version="1.0" encoding="utf-8"?><Autodiscover xmlns="http://schemas.microsoft.com/exchange/'
               b'autodiscover/outlook/requestschema/2006"><Request><EMailAddress>alice@example.test</EMailAddress>'
               b'<AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/'
               b'responseschema/2006a</AcceptableResponseSchema></Request></Autodiscover>')
    with running_server(tmp_path, listeners=("http", "https")) as srv:
        _setup(srv)
        _pretend_listening(srv, CLIENT_PORTS)
        try:
            for scheme, path in (("http", "/autodiscover/autodiscover.xml"),
                                 ("https", "/Autodiscover/Autodiscover.xml")):
                r, data = Client(srv, scheme).request("POST", path, request, {"Content-Type": "text/xml"})
                assert r.status == 200
                root = ET.fromstring(data)
                assert root.tag == AD_NS + "Autodiscover"
                resp = root.find(OL_NS + "Response")
                assert resp.find(f"{OL_NS}User/{OL_NS}AutoDiscoverSMTPAddress").text == "alice@example.test"
                acct = resp.find(OL_NS + "Account")
                assert acct.findtext(OL_NS + "AccountType") == "email"
                assert acct.findtext(OL_NS + "Action") == "settings"
                protos = [(p.findtext(OL_NS + "Type"), p.findtext(OL_NS + "Server"), int(p.findtext(OL_NS + "Port")),
                           p.findtext(OL_NS + "SSL"), p.findtext(OL_NS + "Encryption"),
                           p.findtext(OL_NS + "LoginName"), p.findtext(OL_NS + "AuthRequired"))
                          for p in acct.findall(OL_NS + "Protocol")]
                assert protos == [
                    ("IMAP", "mail.example.test", 993, "on", "SSL", "alice@example.test", "on"),
                    ("IMAP", "mail.example.test", 143, "on", "TLS", "alice@example.test", "on"),
                    ("POP3", "mail.example.test", 995, "on", "SSL", "alice@example.test", "on"),
                    ("POP3", "mail.example.test", 110, "on", "TLS", "alice@example.test", "on"),
                    ("SMTP", "mail.example.test", 465, "on", "SSL", "alice@example.test", "on"),
                    ("SMTP", "mail.example.test", 587, "on", "TLS", "alice@example.test", "on"),
                ]
            # Entity declarations are refused, not expanded.
            evil = b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "y">]><a><EMailAddress>&x;</EMailAddress></a>'
            r, data = Client(srv, "http").request("POST", "/autodiscover/autodiscover.xml", evil)
            assert ET.fromstring(data).find(f"{AD_NS}Response/{AD_NS}Error/{AD_NS}ErrorCode").text == "600"
            # The Apple profile for the signed-in user.
            c = Client(srv)
            c.login()
            r, data = c.get("/setup/mail.mobileconfig")
            assert r.headers["Content-Type"] == "application/x-apple-aspen-config"
            import plistlib

            prof = plistlib.loads(data)
            mail = prof["PayloadContent"][0]
            assert mail["PayloadType"] == "com.apple.mail.managed"
            assert (mail["IncomingMailServerHostName"], mail["IncomingMailServerPortNumber"]) == \
                ("mail.example.test", 993)
            assert mail["OutgoingMailServerPortNumber"] == 465 and mail["EmailAddress"] == ALICE
            r, page = c.get("/setup")
            assert b"993" in page and b"STARTTLS" in page
        finally:
            srv.server.listening = [lst for lst in srv.server.listening if not isinstance(lst.port, _FakePort)]


AD_REQUEST = (b'<?xml version="1.0" encoding="utf-8"?><Autodiscover xmlns="http://schemas.microsoft.com/exchange/'
              b'autodiscover/outlook/requestschema/2006"><Request><EMailAddress>alice@example.test</EMailAddress>'
              b'<AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/'
              b'responseschema/2006a</AcceptableResponseSchema></Request></Autodiscover>')


def _child_tags(el):
    return [n.tagName for n in el.childNodes if n.nodeType == n.ELEMENT_NODE]


def test_autodiscover_element_names_have_no_prefix(tmp_path):
    """The Autodiscover answer names its elements without prefixes: ``<Autodiscover xmlns="…2006">`` holding
    ``<Response xmlns="…2006a">``, so a client that looks up ``Autodiscover.Response`` by node name (Thunderbird)
    finds it; the error answer likewise."""
    import xml.dom.minidom

    with running_server(tmp_path, listeners=("http",)) as srv:
        _setup(srv)
        _pretend_listening(srv, CLIENT_PORTS)
        try:
            c = Client(srv, "http")
            r, data = c.request("POST", "/autodiscover/autodiscover.xml", AD_REQUEST, {"Content-Type": "text/xml"})
            assert r.status == 200
            assert b'<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006">' \
                in data
            assert b'<Response xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a">' \
                in data
            assert not re.search(rb"<[A-Za-z_][\w.-]*:|xmlns:", data), data
            doc = xml.dom.minidom.parseString(data).documentElement
            assert doc.tagName == "Autodiscover"
            assert doc.getAttribute("xmlns") == "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
            assert _child_tags(doc) == ["Response"]
            resp = doc.getElementsByTagName("Response")[0]
            assert resp.namespaceURI == \
                "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
            assert _child_tags(resp) == ["User", "Account"]
            acct = resp.getElementsByTagName("Account")[0]
            assert _child_tags(acct) == ["AccountType", "Action"] + ["Protocol"] * 6
            proto = acct.getElementsByTagName("Protocol")[0]
            assert _child_tags(proto) == ["Type", "Server", "Port", "DomainRequired", "LoginName", "SPA", "SSL",
                                          "Encryption", "AuthRequired"]
            assert proto.getElementsByTagName("Server")[0].firstChild.data == "mail.example.test"
            # The error answer: Response and Error stay in the outer 2006 namespace, also unprefixed.
            r, data = c.request("POST", "/autodiscover/autodiscover.xml", b"<x/>", {"Content-Type": "text/xml"})
            assert not re.search(rb"<[A-Za-z_][\w.-]*:|xmlns:", data), data
            doc = xml.dom.minidom.parseString(data).documentElement
            assert doc.tagName == "Autodiscover" and _child_tags(doc) == ["Response"]
            error = doc.getElementsByTagName("Error")[0]
            assert error.parentNode.tagName == "Response"
            assert _child_tags(error) == ["ErrorCode", "Message", "DebugData"]
        finally:
            srv.server.listening = [lst for lst in srv.server.listening if not isinstance(lst.port, _FakePort)]


def test_bidi_controls_in_attachment_names_are_removed(tmp_path):
    """An attachment named ``invoice<U+202E>fdp.exe`` (shown by a bidi-aware renderer as "invoiceexe.pdf") is listed
    and downloaded as ``invoicefdp.exe``: control and format characters never reach the page or the header."""
    with running_server(tmp_path, listeners=("https",)) as srv:
        srv.add_user(ALICE, PW)
        srv.deliver(ALICE, b"From: x@example.org\r\nTo: alice@example.test\r\nSubject: bill\r\nMIME-Version: 1.0\r\n"
                           b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n"
                           b"see attached\r\n--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: "
                           b"attachment; filename*=utf-8''invoice%E2%80%AEfdp%E2%80%8B.exe\r\n\r\nMZ\r\n--b--\r\n")
        inbox = srv.store.get_mailbox(srv.store.get_account(ALICE).id, "INBOX")
        c = Client(srv)
        c.login(ALICE)
        r, page = c.get(f"/m/{inbox.id}/1")
        assert r.status == 200
        assert b"invoicefdp.exe" in page
        assert "\u202e".encode() not in page and b"&#8238;" not in page and "\u200b".encode() not in page
        link = re.search(rb'href="(/m/\d+/1/part/\d+)"', page).group(1).decode()
        r, _ = c.get(link)
        assert "invoicefdp.exe" in r.headers["Content-Disposition"]
        assert "%E2%80%AE" not in r.headers["Content-Disposition"].upper()


def test_bidi_controls_in_every_attachment_name_shown(tmp_path):
    """Every other place an attachment name is shown or downloaded: an attached message named after its subject
    (reader list and download), the forward-as-attachment and forward pages of a message whose subject carries
    U+202E (its .eml name), and the source download named after the subject."""
    with running_server(tmp_path, listeners=("https",)) as srv:
        srv.add_user(ALICE, PW)
        srv.deliver(ALICE, b"From: x@example.org\r\nTo: alice@example.test\r\n"
                           b"Subject: =?utf-8?q?invoice=E2=80=AEfdp.exe?=\r\nMIME-Version: 1.0\r\n"
                           b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n"
                           b"see attached\r\n--b\r\nContent-Type: message/rfc822\r\n\r\n"
                           b"Subject: =?utf-8?q?report=E2=81=A6gpj.exe?=\r\nFrom: y@example.org\r\n\r\ninner\r\n"
                           b"--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; "
                           b"filename*=utf-8''data%E2%80%8F%E2%80%AE.bin\r\n\r\nMZ\r\n--b--\r\n")
        inbox = srv.store.get_mailbox(srv.store.get_account(ALICE).id, "INBOX")
        bidi = re.compile("[\u200e\u200f\u202a-\u202e\u2066-\u2069]")
        c = Client(srv)
        c.login(ALICE)
        r, page = c.get(f"/m/{inbox.id}/1")
        listed = page[page.index(b'class="attachments"'):].decode()
        assert "reportgpj.exe.eml" in listed and "data.bin" in listed
        assert not bidi.search(listed)
        for link in re.findall(r'href="(/m/\d+/1/part/\d+)"', listed):
            r, _ = c.get(link)
            cd = r.headers["Content-Disposition"]
            assert "%E2%80%AE" not in cd.upper() and "%E2%81%A6" not in cd.upper() and "%E2%80%8F" not in cd.upper()
            assert "reportgpj.exe.eml" in cd or "data.bin" in cd, cd
        for mode in ("forward_att", "forward"):
            r, page = c.get(f"/compose?reply={inbox.id}:1&mode={mode}")
            assert r.status == 200
            kept = "".join(re.findall(r'<label><input type="checkbox" name="keep"[^\n]*', page.decode()))
            assert kept and not bidi.search(kept), (mode, kept)
        assert b"invoicefdp.exe.eml" in c.get(f"/compose?reply={inbox.id}:1&mode=forward_att")[1]
        r, _ = c.get(f"/m/{inbox.id}/1/source?download=1")
        assert "invoicefdp.exe.eml" in r.headers["Content-Disposition"]


@pytest.mark.parametrize("query", ["/%09/evil.test/", "/%0D%0A/evil.test", "%20//evil.test/", "/%5Cevil.test/",
                                   "%5C%5Cevil.test/", "https://evil.test/", "//evil.test", "/%09%09/evil.test"])
def test_login_next_never_leaves_the_site(tmp_path, query):
    """An open redirect through ?next= (as browsers read a Location: TAB, CR, LF dropped, "\\" as "/") lands on
    "/": both the page's own next field and a next posted as it came."""
    with running_server(tmp_path, listeners=("https",)) as srv:
        srv.add_user(ALICE, PW)
        c = Client(srv)
        r, page = c.get("/login?next=" + query)
        kept = re.search(rb'name="next" value="([^"]*)"', page).group(1).decode()
        assert kept == "/"
        pre = re.search(rb'name="_pre" value="([^"]+)"', page).group(1).decode()
        r, _ = c.post("/login", {"_pre": pre, "username": ALICE, "password": PW,
                                 "next": urllib.parse.unquote(query)})
        assert r.status == 303
        assert r.headers["Location"] == "/"


def test_sending_with_a_full_mailbox_is_refused_before_anything_leaves(tmp_path):
    """The copy in Sent counts against the quota: a send that would not fit is refused with a clear error, and
    nothing is delivered or queued (it used to be sent and its copy stored past the quota)."""
    with running_server(tmp_path, listeners=("https",)) as srv:
        srv.add_user(ALICE, PW, quota_bytes=3000)
        srv.add_user(BOB, PW)
        srv.deliver(ALICE, b"From: x@example.org\r\nSubject: big\r\n\r\n" + b"x" * 2500 + b"\r\n")
        c = Client(srv)
        c.login()
        token = c.csrf("/compose")
        r, page = c.post("/compose", {"_csrf": token, "action": "send", "from": ALICE, "to": BOB,
                                      "subject": "hello", "body": "y" * 1000})
        assert r.status == 400 and b"mailbox is full" in page
        assert srv.store.get_mailbox(srv.store.get_account(BOB).id, "INBOX").message_count == 0
        assert srv.store.get_mailbox(srv.store.get_account(ALICE).id, "Sent").message_count == 0
        r, page = c.post("/compose", {"_csrf": token, "action": "send", "from": ALICE, "to": BOB,
                                      "subject": "hi", "body": "y"})
        assert r.status == 303  # a small one still fits
        assert srv.store.get_mailbox(srv.store.get_account(BOB).id, "INBOX").message_count == 1
        assert srv.store.get_mailbox(srv.store.get_account(ALICE).id, "Sent").message_count == 1


def test_a_cross_site_link_to_a_message_does_not_mark_it_read(tmp_path):
    """The session cookie is SameSite=Lax, so a link on another site opens the message with the user's session:
    the GET still shows it, but marks nothing read when the browser says it came from another site
    (Sec-Fetch-Site); our own links (same-origin) and a typed address (none) do."""
    with running_server(tmp_path, listeners=("https",)) as srv:
        inbox, _ = _setup(srv)
        c = Client(srv)
        c.login()

        def seen() -> bool:
            (m,) = srv.store.get_messages(inbox.id, [1])
            return bool(m.flags & FLAG_SEEN)

        for site in ("cross-site", "same-site"):
            r, _ = c.get(f"/m/{inbox.id}/1", headers={"Sec-Fetch-Site": site})
            assert r.status == 200 and not seen(), site
        r, _ = c.get(f"/m/{inbox.id}/1", headers={"Sec-Fetch-Site": "same-origin"})
        assert r.status == 200 and seen()
        r, _ = c.post(f"/m/{inbox.id}/action", {"_csrf": c.csrf(), "action": "unread", "uid": "1"},
                      headers={"Sec-Fetch-Site": "same-origin"})
        assert r.status == 303 and not seen()
        for path in ("/source", "/part/1", "/html/1"):  # the reader's other GETs never mark anything read
            c.get(f"/m/{inbox.id}/1{path}", headers={"Sec-Fetch-Site": "cross-site"})
        assert not seen()
        r, _ = c.get(f"/m/{inbox.id}/1", headers={"Sec-Fetch-Site": "none"})  # a typed address, a bookmark
        assert r.status == 200 and seen()


def test_without_fetch_metadata_the_reader_page_marks_read_by_a_same_origin_post(tmp_path):
    """A browser that sends no Sec-Fetch-Site (Safari before 16.4) cannot say where the GET came from: the GET
    marks nothing, and the page it shows carries the form our script posts (with the CSRF token) to mark it."""
    with running_server(tmp_path, listeners=("https",)) as srv:
        inbox, _ = _setup(srv)
        c = Client(srv)
        c.login()

        def seen() -> bool:
            (m,) = srv.store.get_messages(inbox.id, [1])
            return bool(m.flags & FLAG_SEEN)

        r, page = c.get(f"/m/{inbox.id}/1")
        assert r.status == 200 and not seen()
        assert b'id="mark-seen"' in page and b'name="action" value="read"' in page
        r, _ = c.post(f"/m/{inbox.id}/action", {"_csrf": c.csrf(), "action": "read", "uid": "1"})
        assert r.status == 303 and seen()
        r, page = c.get(f"/m/{inbox.id}/1")  # already read: nothing left to post
        assert b'id="mark-seen"' not in page
        r, js = c.get("/static/app.js")
        assert b"#mark-seen" in js


@pytest.mark.parametrize("back", ["/%09/evil.test/", "/%0D%0A/evil.test", "%20//evil.test/", "/%5Cevil.test/",
                                  "%5C%5Cevil.test/", "https://evil.test/", "//evil.test", "/%09%09/evil.test",
                                  "%0B//evil.test", "javascript:alert(1)", "/%5C/evil.test"])
def test_bulk_action_back_never_leaves_the_site(tmp_path, back):
    """The bulk actions' back= (where the list goes after moving or marking) is judged like ?next=: anything a
    browser would read as another site lands on the mailbox's own list, with and without messages to act on."""
    with running_server(tmp_path, listeners=("https",)) as srv:
        inbox, _ = _setup(srv)
        c = Client(srv)
        c.login()
        token = c.csrf()
        for uids in ([], ["1"]):
            r, _ = c.post(f"/m/{inbox.id}/action", {"_csrf": token, "action": "read", "uid": uids,
                                                    "back": urllib.parse.unquote(back)})
            assert r.status == 303, uids
            assert r.headers["Location"] == f"/m/{inbox.id}", (back, uids)


def test_redirect_targets_of_this_site_are_kept(tmp_path):
    """A local next= or back= is kept as it came (query included, non-ASCII too), so the protection above does
    not cost the user their place."""
    with running_server(tmp_path, listeners=("https",)) as srv:
        inbox, _ = _setup(srv)
        c = Client(srv)
        c.login()
        token = c.csrf()
        for target in (f"/m/{inbox.id}?page=2&sort=from", "/search?q=gr%C3%BC%C3%9Fe", "/folders"):
            r, _ = c.post(f"/m/{inbox.id}/action", {"_csrf": token, "action": "read", "uid": "1", "back": target})
            assert (r.status, r.headers["Location"]) == (303, target)
        r, page = Client(srv).get("/login?next=" + urllib.parse.quote(f"/m/{inbox.id}?page=2", safe=""))
        assert f'name="next" value="/m/{inbox.id}?page=2"'.encode() in page.replace(b"&amp;", b"&")
        r, _ = c.post(f"/m/{inbox.id}/action", {"_csrf": token, "action": "read", "uid": "1", "back": "/grüße"})
        assert r.status == 303  # a non-ASCII path is no server error
