"""The sans-IO SMTP client: no sockets, a scripted server, every rule checked on the bytes."""

from __future__ import annotations

import itertools

import pytest

from mailserver.delivery.client import (
    MAX_REPLY_LINE,
    ClientPolicy,
    Close,
    DotStuffer,
    Envelope,
    ProtocolError,
    Recipient,
    ReplyParser,
    Send,
    SendBody,
    SmtpClientSession,
    StartTls,
    dot_stuff,
)

EHLO_FULL = (b"250-rx.test\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-8BITMIME\r\n250-DSN\r\n"
             b"250-SMTPUTF8\r\n250 ENHANCEDSTATUSCODES\r\n")


def _env(*rcpts, size=100, **kw) -> Envelope:
    return Envelope("a@example.test", tuple(Recipient(r) for r in rcpts or ("b@remote.test",)), size, **kw)


def _sent(actions) -> bytes:
    return b"".join(a.data for a in actions if isinstance(a, Send))


def _session(*rcpts, tls="none", **kw) -> SmtpClientSession:
    s = SmtpClientSession(_env(*rcpts, **kw), ClientPolicy("mail.example.test", tls=tls))
    assert _sent(s.receive(b"220 rx.test ESMTP\r\n")) == b"EHLO mail.example.test\r\n"
    return s


def _unstuff(wire: bytes) -> bytes:
    assert wire.endswith(b"\r\n.\r\n") or wire == b".\r\n"
    body = wire[:-3]
    lines = body.split(b"\r\n")
    return b"\r\n".join(line[1:] if line.startswith(b".") else line for line in lines)


def test_dot_stuffing_is_correct_at_every_split_point():
    """Whatever the chunking, the stuffed stream equals the one-buffer result (smuggling-safe, byte-exact)."""
    data = b".a\r\n..b\r\nc.\r\n.\r\n\r\n.\r\nx\r.y\n.z\r\n."
    whole = dot_stuff(data)
    assert whole.startswith(b"..a\r\n...b\r\nc.\r\n..\r\n\r\n..\r\nx\r.y\n.z\r\n..\r\n.\r\n")
    for i, j in itertools.combinations(range(len(data) + 1), 2):
        s = DotStuffer()
        out = s.feed(data[:i]) + s.feed(data[i:j]) + s.feed(data[j:]) + s.finish()
        assert out == whole, (i, j)
    # byte by byte
    s = DotStuffer()
    assert b"".join(s.feed(data[k:k + 1]) for k in range(len(data))) + s.finish() == whole


def test_end_of_data_adds_crlf_only_when_missing():
    assert dot_stuff(b"") == b".\r\n"
    assert dot_stuff(b"a\r\n") == b"a\r\n.\r\n"
    assert dot_stuff(b"a") == b"a\r\n.\r\n"
    assert _unstuff(dot_stuff(b"x\r\n.\r\n..y\r\n")) == b"x\r\n.\r\n..y\r\n"


def test_reply_parser_multiline_and_limits():
    p = ReplyParser()
    assert p.feed(b"250-a\r\n250-b") == []
    r = p.feed(b"\r\n250 c\r\n")[0]
    assert r.code == 250 and r.lines == ("a", "b", "c")
    assert ReplyParser().feed(b"550 5.1.1 no\r\n")[0].status == "5.1.1"
    assert ReplyParser().feed(b"451 try later\r\n")[0].status == "4.0.0"
    ok = b"250 " + b"x" * (MAX_REPLY_LINE - 4) + b"\n"
    assert ReplyParser().feed(ok)[0].code == 250
    with pytest.raises(ProtocolError):
        ReplyParser().feed(b"250 " + b"x" * (MAX_REPLY_LINE - 3) + b"\n")  # one byte past the limit
    with pytest.raises(ProtocolError):
        ReplyParser().feed(b"hello\r\n")
    with pytest.raises(ProtocolError):
        ReplyParser().feed(b"250-a\r\n251 b\r\n")


def test_pipelined_transaction_with_mixed_recipient_results():
    """RFC 2920: MAIL, RCPTs and DATA in one write; each reply is matched to its command in order."""
    s = _session("ok@r.test", "later@r.test", "bad@r.test")
    out = _sent(s.receive(EHLO_FULL))
    assert out == (b"MAIL FROM:<a@example.test> SIZE=100\r\nRCPT TO:<ok@r.test>\r\nRCPT TO:<later@r.test>\r\n"
                   b"RCPT TO:<bad@r.test>\r\nDATA\r\n")
    acts = s.receive(b"250 ok\r\n250 ok\r\n451 4.2.0 later\r\n550 5.1.1 unknown\r\n354 go\r\n")
    assert acts == [SendBody()]
    s.body_sent()
    assert _sent(s.receive(b"250 2.0.0 queued\r\n")) == b"QUIT\r\n"
    assert {r: (v.status, v.reply.status) for r, v in s.results.items()} == {
        "ok@r.test": ("delivered", "2.0.0"), "later@r.test": ("deferred", "4.2.0"),
        "bad@r.test": ("failed", "5.1.1")}
    assert s.receive(b"221 bye\r\n") == [Close()] and s.done


def test_without_pipelining_one_command_at_a_time_and_no_data_without_recipients():
    s = _session("x@r.test", "y@r.test")
    assert _sent(s.receive(b"250-rx\r\n250 SIZE\r\n")) == b"MAIL FROM:<a@example.test> SIZE=100\r\n"
    assert _sent(s.receive(b"250 ok\r\n")) == b"RCPT TO:<x@r.test>\r\n"
    assert _sent(s.receive(b"550 5.1.1 no\r\n")) == b"RCPT TO:<y@r.test>\r\n"
    assert _sent(s.receive(b"550 5.1.1 no\r\n")) == b"QUIT\r\n"
    assert all(r.status == "failed" for r in s.results.values())


def test_ehlo_rejected_falls_back_to_helo_without_parameters():
    s = _session()
    assert _sent(s.receive(b"502 5.5.1 no EHLO\r\n")) == b"HELO mail.example.test\r\n"
    assert _sent(s.receive(b"250 rx\r\n")) == b"MAIL FROM:<a@example.test>\r\n"


def test_size_smtputf8_and_8bitmime_checks_before_sending():
    s = _session(size=1001)
    assert _sent(s.receive(EHLO_FULL)) == b"QUIT\r\n"
    assert s.results["b@remote.test"].reply.status == "5.3.4"
    s = _session(size=1000, smtputf8=True, body_8bit=True)
    assert _sent(s.receive(EHLO_FULL)).startswith(b"MAIL FROM:<a@example.test> SIZE=1000 BODY=8BITMIME SMTPUTF8\r\n")
    s = _session(smtputf8=True)
    s.receive(b"250-rx\r\n250 8BITMIME\r\n")
    assert s.results["b@remote.test"].status == "failed" and s.results["b@remote.test"].reply.status == "5.6.7"
    s = _session(body_8bit=True)
    s.receive(b"250-rx\r\n250 PIPELINING\r\n")
    assert s.results["b@remote.test"].reply.status == "5.6.3"


def test_opportunistic_starttls_then_ehlo_again_and_required_tls_without_offer():
    s = _session(tls="opportunistic")
    assert _sent(s.receive(b"250-rx\r\n250 STARTTLS\r\n")) == b"STARTTLS\r\n"
    assert s.receive(b"220 go\r\n") == [StartTls()]
    assert _sent(s.tls_started()) == b"EHLO mail.example.test\r\n"
    assert _sent(s.receive(b"250-rx\r\n250 PIPELINING\r\n")).startswith(b"MAIL FROM:")
    s = _session(tls="required")
    assert _sent(s.receive(b"250 rx\r\n")) == b"QUIT\r\n"
    assert s.results["b@remote.test"].status == "deferred" and s.results["b@remote.test"].reply.status == "4.7.4"


def test_auth_plain_and_login():
    pol = ClientPolicy("h", tls="implicit", username="u", password="p")
    s = SmtpClientSession(_env(), pol)
    s.receive(b"220 x\r\n")
    assert _sent(s.receive(b"250-rx\r\n250 AUTH LOGIN PLAIN\r\n")) == b"AUTH PLAIN AHUAcA==\r\n"
    assert _sent(s.receive(b"235 ok\r\n")).startswith(b"MAIL FROM:")
    s = SmtpClientSession(_env(), pol)
    s.receive(b"220 x\r\n")
    assert _sent(s.receive(b"250-rx\r\n250 AUTH LOGIN\r\n")) == b"AUTH LOGIN\r\n"
    assert _sent(s.receive(b"334 VXNlcm5hbWU6\r\n")) == b"dQ==\r\n"
    assert _sent(s.receive(b"334 UGFzc3dvcmQ6\r\n")) == b"cA==\r\n"
    assert _sent(s.receive(b"535 5.7.8 bad\r\n")) == b"QUIT\r\n"
    assert s.results["b@remote.test"].status == "deferred"  # our credentials: fixable, not the sender's fault


def test_dsn_parameters_only_when_offered_and_timeouts_per_state():
    env = Envelope("a@x.test", (Recipient("b@r.test", "SUCCESS,FAILURE", "rfc822;b@r.test"),), 10, envid="e1",
                   ret="HDRS")
    s = SmtpClientSession(env, ClientPolicy("h", tls="none"))
    assert s.timeout == 300.0  # RFC 5321 4.5.3.2.1
    s.receive(b"220 x\r\n")
    out = _sent(s.receive(EHLO_FULL))
    assert b"MAIL FROM:<a@x.test> SIZE=10 RET=HDRS ENVID=e1\r\n" in out
    assert b"RCPT TO:<b@r.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b@r.test\r\n" in out
    assert s.timeout == 300.0
    s.receive(b"250 ok\r\n250 ok\r\n")
    assert s.timeout == 120.0  # 4.5.3.2.4 DATA initiation
    s.receive(b"354 go\r\n")
    assert s.timeout == 180.0  # 4.5.3.2.5 data block
    s.body_sent()
    assert s.timeout == 600.0  # 4.5.3.2.6 DATA termination


def test_connection_lost_and_timeout_defer_the_rest():
    s = _session("a@r.test")
    s.connection_lost("reset")
    assert s.results["a@r.test"].status == "deferred" and s.done
    s = _session("a@r.test")
    assert s.timed_out() == [Close()]
    assert s.results["a@r.test"].reply.status == "4.4.2"
    s = SmtpClientSession(_env(), ClientPolicy("h", tls="none"))
    s.receive(b"554 5.7.1 go away\r\n")
    assert s.results["b@remote.test"].status == "deferred"  # greeting refusal: let the next MX try
