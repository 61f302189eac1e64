"""The SMTP listeners over real sockets on 127.0.0.1 with smtplib (plain, STARTTLS, implicit TLS)."""

from __future__ import annotations

import base64
import smtplib
import socket
import ssl
import threading

import pytest

from mailserver.delivery import hooks as hooks_mod
from mailserver.smtp import codes
from storage import changes as ch
from tests.harness import running_server

LISTENERS = ("smtp", "submission", "submissions")
MSG = b"From: a@example.net\r\nTo: alice@example.test\r\nSubject: hello\r\n\r\nHi there.\r\n"


def tls_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


@pytest.fixture
def srv(tmp_path):
    with running_server(tmp_path, listeners=LISTENERS) as s:
        s.alice = s.add_user("alice@example.test", "secret")
        yield s


def inbox(srv, address="alice@example.test"):
    acct = srv.store.get_account(address)
    mb = srv.store.get_mailbox(acct.id, "INBOX")
    return [srv.store.read_blob(m.blob_id) for m in srv.store.get_messages(mb.id, [x.uid for x in
                                                                                 srv.store.list_messages(mb.id)])]


def queued(srv):
    from sqlalchemy import select

    from storage.models import QueuedMessage, QueueRecipient

    with srv.store.engine.connect() as conn:
        msgs = conn.execute(select(QueuedMessage)).all()
        rcpts = conn.execute(select(QueueRecipient)).all()
    return msgs, rcpts


def raw_session(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.recv(1000)
    return s


def read_replies(s: socket.socket, n: int) -> list[bytes]:
    buf = b""
    while buf.count(b"\r\n") < n or not _complete(buf, n):
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
    return [line for line in buf.split(b"\r\n") if line]


def _complete(buf: bytes, n: int) -> bool:
    finals = [line for line in buf.split(b"\r\n") if len(line) >= 4 and line[3:4] == b" "]
    return len(finals) >= n


# ------------------------------------------------------------------------------------------ MX


def test_mx_delivers_with_trace_fields_and_a_second_session_sees_it_at_once(srv):
    seen = []
    srv.call(lambda: srv.server.hub.subscribe(srv.alice.id, seen.append) and None)
    with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as c:
        c.ehlo("client.example.net")
        assert "pipelining" in c.esmtp_features and "chunking" in c.esmtp_features
        assert "auth" not in c.esmtp_features  # RFC: no AUTH on the MX port
        c.sendmail("a@example.net", ["alice@example.test"], MSG)
        # The change event was published before the 250 went out.
        assert [e.kind for batch in seen for e in batch] == [ch.EXISTS]
    (raw,) = inbox(srv)
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert raw.endswith(MSG)
    lines = head.split(b"\r\n")
    assert lines[0] == b"Return-Path: <a@example.net>"
    assert lines[1] == b"Delivered-To: alice@example.test"
    assert lines[2].startswith(b"Received: from client.example.net ([127.0.0.1])")
    assert b"by mail.example.test with ESMTP id" in head and b"for <alice@example.test>" in head


def test_mx_starttls_received_names_tls_version_and_cipher(srv):
    with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as c:
        c.starttls(context=tls_context())
        c.sendmail("a@example.net", ["alice@example.test"], MSG)
    (raw,) = inbox(srv)
    assert b"with ESMTPS id" in raw and b"(using TLSv1." in raw and b"with cipher " in raw


def test_mx_unknown_recipient_is_refused_at_rcpt(srv):
    with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as c:
        c.ehlo()
        c.mail("a@example.net")
        assert c.rcpt("nobody@example.test") == (550, b"5.1.1 Mailbox does not exist")


def test_mx_is_not_an_open_relay(srv):
    with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as c:
        c.ehlo()
        c.mail("a@example.net")
        assert c.rcpt("someone@elsewhere.example") == (554, b"5.7.1 Relay access denied")
    assert queued(srv) == ([], [])


def test_vrfy_noop_help_rset_quit(srv):
    with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as c:
        c.ehlo()
        assert c.verify("alice@example.test")[0] == 252
        assert c.verify("nobody@example.test")[0] == 252  # never discloses accounts
        assert c.noop()[0] == 250
        assert c.docmd("HELP")[0] == 214
        assert c.rset()[0] == 250
        assert c.docmd("EXPN", "x")[0] == 502
        assert c.docmd("BOGUS")[0] == 500


def test_size_advertised_and_enforced(tmp_path):
    with running_server(tmp_path, listeners=("smtp",), limits={"message_size": 2000}) as s:
        s.add_user("alice@example.test", "secret")
        with smtplib.SMTP("127.0.0.1", s.port("smtp")) as c:
            c.ehlo()
            assert c.esmtp_features["size"] == "2000"
            assert c.mail("a@example.net", ["SIZE=2001"])[0] == 552
            c.rset()
            c.mail("a@example.net")
            c.rcpt("alice@example.test")
            assert c.data(b"x" * 2100 + b"\r\n") == (552, b"5.3.4 Message size exceeds fixed maximum message size")


def test_pipelined_commands_written_in_one_packet(srv):
    s = raw_session(srv.port("smtp"))
    s.sendall(b"EHLO c\r\nMAIL FROM:<a@example.net>\r\nRCPT TO:<alice@example.test>\r\n"
              b"RCPT TO:<nobody@example.test>\r\nDATA\r\n")
    replies = read_replies(s, 5)
    assert [r[:3] for r in replies if r[3:4] == b" "] == [b"250", b"250", b"250", b"550", b"354"]
    s.sendall(b"Subject: p\r\n\r\nbody\r\n.\r\nQUIT\r\n")
    assert [r[:3] for r in read_replies(s, 2)] == [b"250", b"221"]
    s.close()
    assert len(inbox(srv)) == 1


def test_smuggling_over_the_wire(srv):
    s = raw_session(srv.port("smtp"))
    s.sendall(b"EHLO c\r\nMAIL FROM:<a@example.net>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n")
    read_replies(s, 4)
    s.sendall(b"Subject: x\r\n\r\nhi\n.\nMAIL FROM:<admin@example.test>\r\nRCPT TO:<alice@example.test>\r\n"
              b"DATA\r\nspoofed\r\n.\r\nQUIT\r\n")
    replies = read_replies(s, 2)
    assert replies[0].startswith(b"550 5.6.0") and replies[1].startswith(b"221")
    s.close()
    assert inbox(srv) == []


def test_bdat_over_raw_socket(srv):
    s = raw_session(srv.port("smtp"))
    body = b"Subject: chunks\r\n\r\nfirst part\r\n"
    s.sendall(b"EHLO c\r\nMAIL FROM:<a@example.net>\r\nRCPT TO:<alice@example.test>\r\n"
              + b"BDAT %d\r\n" % len(body) + body + b"BDAT 8 LAST\r\nend.\r\n\r\nQUIT\r\n")
    replies = [r for r in read_replies(s, 6) if r[3:4] == b" "]
    assert [r[:3] for r in replies] == [b"250", b"250", b"250", b"250", b"250", b"221"]
    s.close()
    (raw,) = inbox(srv)
    assert raw.endswith(body + b"end.\r\n\r\n")


def test_smtputf8_addresses_and_headers(srv):
    srv.add_user("jörg@example.test", "pw")
    msg = "From: δοκιμή@example.net\r\nSubject: Grüße\r\n\r\nÜmlaut\r\n".encode()
    with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as c:
        c.ehlo()
        assert "smtputf8" in c.esmtp_features
        c.sendmail("δοκιμή@example.net", ["jörg@example.test"], msg, mail_options=["SMTPUTF8", "BODY=8BITMIME"])
    (raw,) = inbox(srv, "jörg@example.test")
    assert raw.endswith(msg) and b"with UTF8SMTP id" in raw
    assert "Return-Path: <δοκιμή@example.net>".encode() in raw


def test_received_loop_limit(tmp_path):
    with running_server(tmp_path, listeners=("smtp",), limits={"smtp_max_received_headers": 3}) as s:
        s.add_user("alice@example.test", "secret")
        with smtplib.SMTP("127.0.0.1", s.port("smtp")) as c:
            ok = b"Received: from a\r\n" * 3 + MSG
            c.sendmail("a@example.net", ["alice@example.test"], ok)
            with pytest.raises(smtplib.SMTPDataError) as e:
                c.sendmail("a@example.net", ["alice@example.test"], b"Received: from a\r\n" * 4 + MSG)
            assert e.value.smtp_code == 554 and e.value.smtp_error.startswith(b"5.4.6")


def test_over_quota_at_rcpt(srv):
    srv.store.set_quota("alice@example.test", 10)
    with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as c:
        c.ehlo()
        c.mail("a@example.net", ["SIZE=100"])
        assert c.rcpt("alice@example.test") == (452, b"4.2.2 Mailbox full")


def test_aliases_catch_all_and_subaddress(srv):
    srv.add_user("bob@example.test", "pw")
    srv.store.add_alias("team@example.test", "alice@example.test")
    srv.store.add_alias("team@example.test", "bob@example.test")
    srv.store.add_alias("team@example.test", "friend@elsewhere.example")
    srv.store.add_alias("loop1@example.test", "loop2@example.test")
    srv.store.add_alias("loop2@example.test", "loop1@example.test")
    with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as c:
        c.ehlo()
        c.sendmail("a@example.net", ["team@example.test"], MSG)
        c.sendmail("a@example.net", ["alice+news@example.test"], MSG)
        c.mail("a@example.net")
        assert c.rcpt("loop1@example.test")[0] == 550
        c.rset()
        srv.store.add_alias("@example.test", "bob@example.test")
        c.sendmail("a@example.net", ["whoever@example.test"], MSG)
    assert len(inbox(srv, "alice@example.test")) == 2
    assert len(inbox(srv, "bob@example.test")) == 2
    bob_first = inbox(srv, "bob@example.test")[0]
    assert b"Delivered-To" not in bob_first.split(b"\r\n\r\n")[0]  # shared copy for two local recipients
    msgs, rcpts = queued(srv)
    assert [r.recipient for r in rcpts] == ["friend@elsewhere.example"]
    assert rcpts[0].orcpt == "rfc822;team@example.test" and msgs[0].source == "relay"


# ------------------------------------------------------------------------------------------ submission


def test_submission_requires_auth_and_checks_sender(srv):
    srv.store.add_alias("sales@example.test", "alice@example.test")
    with smtplib.SMTP("127.0.0.1", srv.port("submission")) as c:
        c.ehlo()
        assert c.mail("alice@example.test") == (530, b"5.7.0 Authentication required")
        c.starttls(context=tls_context())
        c.ehlo()
        assert c.esmtp_features["auth"].split() == ["PLAIN", "LOGIN"]
        with pytest.raises(smtplib.SMTPAuthenticationError) as e:
            c.login("alice@example.test", "wrong")
        assert e.value.smtp_code == 535
        c.login("alice@example.test", "secret")
        assert c.mail("mallory@example.test") == (553, b"5.7.1 Sender address not owned by the authenticated user")
        c.rset()
        c.sendmail("sales@example.test", ["friend@elsewhere.example", "alice@example.test"],
                   b"Subject: out\r\n\r\nbody\r\n")
    msgs, rcpts = queued(srv)
    assert len(msgs) == 1 and msgs[0].source == "submission" and msgs[0].account_id == srv.alice.id
    assert [r.recipient for r in rcpts] == ["friend@elsewhere.example"]
    queue_copy = srv.store.read_blob(msgs[0].blob_id)
    assert not queue_copy.startswith(b"Return-Path") and b"with ESMTPSA id" in queue_copy
    assert b"\r\nMessage-ID: <" in queue_copy and b"\r\nDate: " in queue_copy  # added on submission
    (local,) = inbox(srv)
    assert local.startswith(b"Return-Path: <sales@example.test>\r\n")


def test_submission_auth_login_and_dsn_parameters_kept(srv):
    with smtplib.SMTP("127.0.0.1", srv.port("submission")) as c:
        c.starttls(context=tls_context())
        c.ehlo()
        c.user, c.password = "alice@example.test", "secret"
        assert c.auth("LOGIN", c.auth_login, initial_response_ok=False)[0] == 235
        c.sendmail("alice@example.test", ["x@elsewhere.example"], b"Subject: dsn\r\n\r\nx\r\n",
                   mail_options=["RET=HDRS", "ENVID=abc+2B1"], rcpt_options=["NOTIFY=FAILURE,DELAY",
                                                                            "ORCPT=rfc822;x+40elsewhere.example"])
    msgs, rcpts = queued(srv)
    assert (msgs[0].ret, msgs[0].envid) == ("HDRS", "abc+2B1")
    assert (rcpts[0].notify, rcpts[0].orcpt) == ("FAILURE,DELAY", "rfc822;x+40elsewhere.example")


def test_submissions_implicit_tls(srv):
    with smtplib.SMTP_SSL("127.0.0.1", srv.port("submissions"), context=tls_context()) as c:
        c.ehlo()
        assert "starttls" not in c.esmtp_features
        c.login("alice@example.test", "secret")
        # (submission refuses a From: the account does not own: tests/smtp/test_sender_headers.py)
        c.sendmail("alice@example.test", ["alice@example.test"], MSG.replace(b"a@example.net", b"alice@example.test"))
    (raw,) = inbox(srv)
    assert b"with ESMTPSA id" in raw and b"(using TLSv1." in raw


def test_starttls_plaintext_injection_is_discarded(srv):
    """CVE-2011-0411: a command sent in plaintext right behind STARTTLS must not run inside TLS."""
    s = raw_session(srv.port("smtp"))
    s.sendall(b"EHLO c\r\n")
    read_replies(s, 1)
    s.sendall(b"STARTTLS\r\nRSET\r\n")
    assert read_replies(s, 1)[0].startswith(b"220 2.0.0")
    tls = tls_context().wrap_socket(s, server_hostname="mail.example.test")
    tls.sendall(b"NOOP\r\n")
    # The injected RSET would have produced a 250 before the NOOP's one; there is exactly one reply.
    assert tls.recv(1000) == b"250 2.0.0 OK\r\n"
    tls.close()


def test_sessions_per_ip_limit(tmp_path):
    with running_server(tmp_path, listeners=("smtp",), limits={"smtp_max_sessions_per_ip": 2}) as s:
        a, b = raw_session(s.port("smtp")), raw_session(s.port("smtp"))
        c = socket.create_connection(("127.0.0.1", s.port("smtp")), timeout=10)
        assert c.recv(1000).startswith(b"421 4.7.0")
        for x in (a, b, c):
            x.close()


def test_trusted_network_may_relay_without_auth(tmp_path):
    with running_server(tmp_path, listeners=("smtp",), smtp={"trusted_networks": ["127.0.0.0/8"]}) as s:
        with smtplib.SMTP("127.0.0.1", s.port("smtp")) as c:
            c.sendmail("app@example.test", ["x@elsewhere.example"], MSG)
        msgs, rcpts = queued(s)
        assert [r.recipient for r in rcpts] == ["x@elsewhere.example"]


def test_25mb_message_streams(srv):
    import tracemalloc

    line = b"0123456789" * 7 + b"\r\n"
    body = b"Subject: big\r\n\r\n" + line * (25 * 1024 * 1024 // len(line))
    tracemalloc.start()
    try:
        with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as c:
            c.ehlo()
            c.mail("a@example.net")
            c.rcpt("alice@example.test")
            start = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            # Send the pre-stuffed body ourselves in 64 KiB writes, so the client holds nothing extra.
            code, _ = c.docmd("DATA")
            assert code == 354
            for i in range(0, len(body), 65536):
                c.sock.sendall(body[i:i + 65536])
            c.sock.sendall(b".\r\n")
            code, msg = c.getreply()
            assert code == 250, msg
            peak = tracemalloc.get_traced_memory()[1] - start
    finally:
        tracemalloc.stop()
    # Server side: the body went to the blob spool chunk by chunk; it is read back once for parsing.
    assert peak < 2 * len(body), peak
    acct = srv.store.get_account("alice@example.test")
    assert srv.store.quota(acct.id)[0] > len(body)


class _Hook:
    name = "test"

    def __init__(self, result):
        self.result = result
        self.seen = []

    def check(self, ctx):
        self.seen.append(ctx)
        return self.result


def test_hook_reject_and_tag(srv):
    reject = _Hook(hooks_mod.HookResult(hooks_mod.REJECT, codes.Reply(550, "5.7.1", "Spam")))
    srv.services.pipeline.hooks = [reject]
    with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as c:
        with pytest.raises(smtplib.SMTPDataError) as e:
            c.sendmail("a@example.net", ["alice@example.test"], MSG)
        assert e.value.smtp_code == 550
    assert inbox(srv) == [] and reject.seen[0].recipients == ("alice@example.test",)
    tag = _Hook(hooks_mod.HookResult(hooks_mod.TAG, add_headers=(("X-Spam", "yes"),), keywords=("$Junk",),
                                     mailbox="Junk"))
    srv.services.pipeline.hooks = [tag]
    with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as c:
        c.sendmail("a@example.net", ["alice@example.test"], MSG)
    acct = srv.store.get_account("alice@example.test")
    junk = srv.store.get_mailbox(acct.id, "Junk")
    (m,) = srv.store.get_messages(junk.id, [1])
    raw = srv.store.read_blob(m.blob_id)
    assert raw.startswith(b"Return-Path: <a@example.net>\r\nDelivered-To: alice@example.test\r\nX-Spam: yes\r\n")
    assert raw.endswith(MSG) and m.keywords == ("$Junk",)


def test_parallel_sessions(srv):
    errors = []

    def one(i):
        try:
            with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as c:
                for _ in range(5):
                    c.sendmail("a@example.net", ["alice@example.test"], MSG)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    ts = [threading.Thread(target=one, args=(i,)) for i in range(5)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors and len(inbox(srv)) == 25


def test_auth_plain_initial_response_over_raw_socket_after_starttls(srv):
    s = raw_session(srv.port("submission"))
    s.sendall(b"EHLO c\r\n")
    read_replies(s, 1)
    s.sendall(b"STARTTLS\r\n")
    read_replies(s, 1)
    tls = tls_context().wrap_socket(s, server_hostname="mail.example.test")
    cred = base64.b64encode(b"\0alice@example.test\0secret")
    tls.sendall(b"EHLO c\r\nAUTH PLAIN " + cred + b"\r\nMAIL FROM:<alice@example.test>\r\n")
    got = b""
    while got.count(b"\r\n250 ") + got.startswith(b"250 ") < 2 or b"235 " not in got:
        got += tls.recv(10000)
    assert b"235 2.7.0" in got and got.rstrip().endswith(b"250 2.1.0 Sender OK")
    tls.close()
