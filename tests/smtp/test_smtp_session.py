"""The sans-IO SMTP session: every command, extension, limit and security rule, without sockets."""

from __future__ import annotations

import pytest

from mailserver.smtp import codes
from mailserver.smtp.session import Peer, Send, SessionConfig, SmtpSession
from tests.smtp.sansio import CFG, LOOPBACK, REMOTE, SUBMISSION, Driver, b64, transaction

# ------------------------------------------------------------------------------------------ basics


def test_greeting_has_no_enhanced_code():
    d = Driver()
    assert d.replies[0].encode() == b"220 mx.example.org ESMTP\r\n"


def test_ehlo_advertises_extensions_on_the_mx():
    d = Driver()
    (reply,) = d.send("EHLO client.example\r\n")
    assert reply.code == 250 and reply.enhanced == ""  # RFC 2034 3
    assert reply.lines[1:] == ("PIPELINING", "SIZE 10000", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES", "DSN",
                               "CHUNKING", "STARTTLS", "HELP")


def test_submission_offers_auth_only_inside_tls_or_on_loopback():
    plain = Driver(SUBMISSION, REMOTE).send("EHLO c\r\n")[0].lines
    assert "STARTTLS" in plain and not any(x.startswith("AUTH") for x in plain)
    tls = Driver(SUBMISSION, REMOTE, tls=True).send("EHLO c\r\n")[0].lines
    assert "AUTH PLAIN LOGIN" in tls and "STARTTLS" not in tls
    local = Driver(SUBMISSION, LOOPBACK).send("EHLO c\r\n")[0].lines
    assert "AUTH PLAIN LOGIN" in local


def test_helo_reply_is_single_line_and_disables_parameters():
    d = Driver()
    (r,) = d.send("HELO client.example\r\n")
    assert r.encode() == b"250 mx.example.org Hello client.example\r\n"
    assert d.send("MAIL FROM:<a@example.net> SIZE=10\r\n") == [codes.UNKNOWN_PARAMETER.with_text(
        "MAIL FROM/RCPT TO parameter not recognized or not implemented: parameters require EHLO")]


COMMAND_TABLE = [
    # (input after EHLO, expected reply codes)
    ("NOOP\r\n", [250]),
    ("NOOP anything\r\n", [250]),
    ("RSET\r\n", [250]),
    ("RSET x\r\n", [501]),
    ("VRFY alice\r\n", [252]),
    ("VRFY\r\n", [501]),
    ("EXPN list\r\n", [502]),
    ("HELP\r\n", [214]),
    ("HELP MAIL\r\n", [214]),
    ("FOO\r\n", [500]),
    ("\r\n", [500]),
    ("MAIL\r\n", [501]),
    ("MAIL TO:<a@b.example>\r\n", [501]),
    ("MAIL FROM:a@b.example\r\n", [501]),
    ("MAIL FROM:<a@b.example\r\n", [501]),
    ("MAIL FROM:<>\r\n", [250]),
    ("MAIL FROM: <a@example.net>\r\n", [250]),
    ("mail from:<a@example.net>\r\n", [250]),
    ("MAIL FROM:<@relay.example:a@example.net>\r\n", [250]),
    ('MAIL FROM:<"john doe"@example.net>\r\n', [250]),
    ("MAIL FROM:<a@[192.0.2.1]>\r\n", [250]),
    ("MAIL FROM:<a@[IPv6:2001:db8::1]>\r\n", [250]),
    ("MAIL FROM:<a@[300.1.1.1]>\r\n", [501]),
    ("MAIL FROM:<a..b@example.net>\r\n", [501]),
    ("MAIL FROM:<a@-bad.example>\r\n", [501]),
    ("MAIL FROM:<" + "l" * 64 + "@example.net>\r\n", [250]),
    ("MAIL FROM:<" + "l" * 65 + "@example.net>\r\n", [501]),  # RFC 5321 4.5.3.1.1
    ("MAIL FROM:<a@example.net> FOO=1\r\n", [555]),
    ("MAIL FROM:<a@example.net> SIZE=abc\r\n", [501]),
    ("MAIL FROM:<a@example.net> SIZE=10000\r\n", [250]),
    ("MAIL FROM:<a@example.net> SIZE=10001\r\n", [552]),
    ("MAIL FROM:<a@example.net> BODY=8BITMIME\r\n", [250]),
    ("MAIL FROM:<a@example.net> BODY=7BIT\r\n", [250]),
    ("MAIL FROM:<a@example.net> BODY=BINARYMIME\r\n", [555]),
    ("MAIL FROM:<a@example.net> SMTPUTF8\r\n", [250]),
    ("MAIL FROM:<a@example.net> SMTPUTF8=yes\r\n", [501]),
    ("MAIL FROM:<a@example.net> RET=HDRS ENVID=QQ+2B1\r\n", [250]),
    ("MAIL FROM:<a@example.net> RET=ALL\r\n", [501]),
    ("MAIL FROM:<a@example.net> ENVID=bad+zz\r\n", [501]),
    ("MAIL FROM:<a@example.net> ENVID=" + "e" * 101 + "\r\n", [501]),
    ("MAIL FROM:<a@example.net> SIZE=1 SIZE=2\r\n", [501]),
    ("MAIL FROM:<a@example.net> AUTH=<>\r\n", [555]),  # AUTH not offered on the MX
    ("MAIL FROM:<a@example.net>\r\nMAIL FROM:<a@example.net>\r\n", [250, 503]),
    ("RCPT TO:<bob@example.org>\r\n", [503]),
    ("DATA\r\n", [503]),
    ("MAIL FROM:<a@example.net>\r\nDATA\r\n", [250, 554]),
    ("MAIL FROM:<a@example.net>\r\nRCPT TO:<nobody@example.org>\r\nDATA\r\n", [250, 550, 554]),
    ("MAIL FROM:<a@example.net>\r\nRCPT TO:<>\r\n", [250, 501]),
    ("MAIL FROM:<a@example.net>\r\nRCPT TO:<Postmaster>\r\n", [250, 250]),  # RFC 5321 4.5.1
    ("MAIL FROM:<a@example.net>\r\nRCPT TO:<bob@example.org> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;b+40x\r\n",
     [250, 250]),
    ("MAIL FROM:<a@example.net>\r\nRCPT TO:<bob@example.org> NOTIFY=NEVER,DELAY\r\n", [250, 501]),
    ("MAIL FROM:<a@example.net>\r\nRCPT TO:<bob@example.org> NOTIFY=SUCCESS,SUCCESS\r\n", [250, 501]),
    ("MAIL FROM:<a@example.net>\r\nRCPT TO:<bob@example.org> ORCPT=rfc822\r\n", [250, 501]),
    ("MAIL FROM:<a@example.net>\r\nRCPT TO:<bob@example.org> SIZE=1\r\n", [250, 555]),
    ("MAIL FROM:<a@example.net>\r\nRSET\r\nRCPT TO:<bob@example.org>\r\n", [250, 250, 503]),
    ("STARTTLS now\r\n", [501]),
    ("AUTH PLAIN\r\n", [502]),  # not offered on the MX
    ("BDAT\r\n", [501]),
    ("BDAT x\r\n", [501]),
    ("BDAT 1 FIRST\r\n", [501]),
    ("QUIT\r\n", [221]),
    ("QUIT now\r\n", [501]),
]


@pytest.mark.parametrize("line,expected", COMMAND_TABLE)
def test_command_table(line, expected):
    assert Driver().ehlo().codes(line) == expected


def test_every_error_reply_has_an_enhanced_code():
    d = Driver().ehlo()
    for line, _ in COMMAND_TABLE:
        for r in d.send(line):
            assert r.code in (214, 220, 221, 250, 252, 354) or r.enhanced, (line, r)
        if d.closed:
            d = Driver().ehlo()


@pytest.mark.parametrize("line", ["MAIL FROM:<a@b.example>\r\n", "RCPT TO:<a@b.example>\r\n", "DATA\r\n",
                                  "BDAT 0 LAST\r\n", "STARTTLS\r\n"])
def test_transaction_commands_need_ehlo_first(line):
    assert Driver().codes(line) == [503]


def test_rset_and_ehlo_reset_the_transaction():
    d = Driver().ehlo()
    assert d.codes(transaction() + "RSET\r\nDATA\r\n") == [250, 250, 250, 503]
    assert d.codes(transaction() + "EHLO again\r\nDATA\r\n") == [250, 250, 250, 503]


def test_quit_closes():
    d = Driver().ehlo()
    assert d.codes("QUIT\r\nNOOP\r\n") == [221]
    assert d.closed and d.session.closed


# ------------------------------------------------------------------------------------------ DATA


def test_full_transaction_delivers_unstuffed_body_and_keeps_dsn_params():
    d = Driver().ehlo()
    out = d.codes("MAIL FROM:<a@example.net> RET=FULL ENVID=id+2B1\r\n"
                  "RCPT TO:<bob@example.org> NOTIFY=FAILURE ORCPT=rfc822;bob+40example.org\r\n"
                  "DATA\r\n")
    assert out == [250, 250, 354]
    assert d.codes("Subject: hi\r\n\r\n..dot\r\nbody\r\n.\r\n") == [250]
    assert d.messages == [b"Subject: hi\r\n\r\n.dot\r\nbody\r\n"]
    env = d.envelopes[0]
    assert env.reverse_path.address == "a@example.net"
    assert (env.mail_params.ret, env.mail_params.envid) == ("FULL", "id+2B1")
    assert env.recipients[0].params.notify == ("FAILURE",)
    assert env.recipients[0].params.orcpt == "rfc822;bob+40example.org"
    assert env.recipients[0].route == "local"
    assert d.events == ["CheckMail", "CheckRcpt", "start", "data", "MessageEnd"]
    assert d.session.messages == 1


def test_message_body_streams_out_in_chunks():
    d = Driver(SessionConfig(hostname="mx", max_message_size=10**7)).ehlo()
    d.send(transaction() + "DATA\r\n")
    for _ in range(20):
        d.send(b"x" * 1000 + b"\r\n")
    d.send(".\r\n")
    assert d.events.count("data") == 20
    assert len(d.messages[0]) == 20 * 1002


def test_size_limit_during_data_rejects_with_552_and_aborts():
    d = Driver().ehlo()
    d.send(transaction() + "DATA\r\n")
    assert d.codes(b"x" * 9000 + b"\r\n" + b"y" * 2000 + b"\r\n.\r\n") == [552]
    assert "abort" in d.events and "MessageEnd" not in d.events
    assert d.replies[-1] == codes.MESSAGE_TOO_BIG
    assert d.codes("DATA\r\n") == [503]  # the transaction is over


def test_failed_delivery_reply_is_passed_on_and_transaction_ends():
    d = Driver(end_reply=codes.LOCAL_ERROR).ehlo()
    assert d.codes(transaction() + "DATA\r\nx\r\n.\r\nDATA\r\n") == [250, 250, 354, 451, 503]
    assert d.session.messages == 0


# ------------------------------------------------------------------------------------------ SMTP smuggling


@pytest.mark.parametrize("fake_end", [b"\n.\n", b"\n.\r\n", b"\r.\r", b"\r\n.\n", b"\r.\r\n", b"\n.\r"])
def test_smuggling_bare_line_ends_never_end_data_and_never_run_commands(fake_end):
    """SMTP smuggling: ``<LF>.<LF>`` etc. do not end DATA; the message is rejected 550 5.6.0 at the real end."""
    d = Driver().ehlo()
    d.send(transaction() + "DATA\r\n")
    wire = (b"Subject: x\r\n\r\nhi" + fake_end + b"MAIL FROM:<admin@example.org>\r\nRCPT TO:<x@example.org>\r\n"
            b"DATA\r\nspoofed\r\n.\r\nNOOP\r\n")
    assert d.send(wire) == [codes.BARE_NEWLINE_DATA, codes.NOOP_OK]
    assert d.messages == [] and d.events.count("CheckMail") == 1 and "abort" in d.events


def test_dot_unstuffing_at_every_read_boundary_through_the_session():
    wire = b"..a\r\n.b\r\nc\r\n.\r\nNOOP\r\n"
    for cut in range(len(wire) + 1):
        d = Driver().ehlo()
        d.send(transaction() + "DATA\r\n")
        d.send(wire[:cut])
        d.send(wire[cut:])
        assert d.messages == [b".a\r\nb\r\nc\r\n"], cut
        assert [r.code for r in d.replies[-2:]] == [250, 250]


def test_bare_lf_in_command_line_is_refused():
    assert Driver().ehlo().codes("NOOP\nNOOP\r\n") == [500]


def test_invalid_utf8_command_is_refused():
    assert Driver().ehlo().codes(b"MAIL FROM:<\xff@example.net>\r\n") == [500]


# ------------------------------------------------------------------------------------------ PIPELINING


def test_pipelined_group_in_one_packet_replies_in_order():
    d = Driver().ehlo()
    packet = transaction(rcpts=("<bob@example.org>", "<nobody@example.org>", "<carol@example.org>")) + "DATA\r\n"
    assert d.codes(packet) == [250, 250, 550, 250, 354]


def test_command_waiting_on_a_check_holds_the_ones_behind_it():
    d = Driver(auto=False).ehlo()
    out = d.send("MAIL FROM:<a@example.net>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\nSubject: x\r\n\r\nbody\r\n"
                 ".\r\nNOOP\r\n")
    assert out == [] and d.session.waiting and d.events == ["CheckMail"]
    assert d.session.current_timeout() is None  # we are the slow party
    d.resolve_next()  # MAIL accepted -> RCPT check starts, nothing else read yet
    assert [r.code for r in d.replies[2:]] == [250] and d.events[-1] == "CheckRcpt"
    d.resolve_next()
    # DATA ran only now; the body was read as body, the NOOP waits for the message to be delivered.
    assert [r.code for r in d.replies[2:]] == [250, 250, 354]
    assert d.events[-1] == "MessageEnd" and bytes(d.body) == b"Subject: x\r\n\r\nbody\r\n"
    d.resolve_next()
    assert [r.code for r in d.replies[2:]] == [250, 250, 354, 250, 250]


def test_body_pipelined_after_a_rejected_data_is_read_as_commands_only_after_the_reply():
    """RFC 2920 3.1: the client waits for 354; a DATA refused earlier cannot switch to body mode."""
    d = Driver().ehlo()
    assert d.codes("MAIL FROM:<a@example.net>\r\nDATA\r\nNOOP\r\n") == [250, 554, 250]


def test_late_check_result_after_connection_lost_is_ignored():
    d = Driver(auto=False).ehlo()
    d.send("MAIL FROM:<a@example.net>\r\n")
    d.handle(d.session.connection_lost())
    assert d.session.resolve(None) == []


# ------------------------------------------------------------------------------------------ SMTPUTF8


def test_utf8_addresses_need_the_smtputf8_parameter():
    d = Driver().ehlo()
    assert d.send("MAIL FROM:<jörg@example.net>\r\n") == [codes.NON_ASCII_ADDRESS]
    assert d.codes("MAIL FROM:<jörg@bücher.example> SMTPUTF8\r\nRCPT TO:<δοκιμή@παράδειγμα.example>\r\n") == \
        [250, 250]
    d.send("DATA\r\nSubject: Grüße\r\n\r\nÜ\r\n.\r\n")
    env = d.envelopes[0]
    assert env.smtputf8 and env.reverse_path.address == "jörg@bücher.example"
    assert env.recipients[0].mailbox.address == "δοκιμή@παράδειγμα.example"


def test_utf8_recipient_without_smtputf8_is_refused():
    d = Driver().ehlo()
    assert d.codes("MAIL FROM:<a@example.net>\r\nRCPT TO:<δοκιμή@example.org>\r\n") == [250, 553]


# ------------------------------------------------------------------------------------------ STARTTLS


def test_starttls_discards_buffered_plaintext_and_resets_state():
    """CVE-2011-0411 class: commands pipelined after STARTTLS in plaintext are never executed."""
    d = Driver().ehlo()
    d.send("MAIL FROM:<a@example.net>\r\n")
    out = d.send("STARTTLS\r\nMAIL FROM:<evil@example.net>\r\nRCPT TO:<bob@example.org>\r\n")
    assert out == [codes.READY_TLS] and d.events[-1] == "starttls"
    assert d.session.tls and d.session.helo is None and d.session.envelope is None
    assert d.events.count("CheckMail") == 1
    # Inside TLS the client must start over with EHLO.
    assert d.codes("MAIL FROM:<a@example.net>\r\n") == [503]
    (ehlo,) = d.send("EHLO again\r\n")
    assert "STARTTLS" not in ehlo.lines
    assert d.codes("STARTTLS\r\n") == [503]


def test_starttls_not_offered_on_implicit_tls():
    d = Driver(SessionConfig(hostname="mx", offer_starttls=False)).ehlo()
    assert d.codes("STARTTLS\r\n") == [502]


def test_starttls_resets_authentication():
    d = Driver(SUBMISSION, LOOPBACK).ehlo()
    assert d.codes(f"AUTH PLAIN {b64(chr(0) + 'alice@example.org' + chr(0) + 'secret')}\r\n") == [235]
    d.send("STARTTLS\r\n")
    assert d.session.identity is None
    d.ehlo()
    assert d.codes("MAIL FROM:<alice@example.org>\r\n") == [530]


# ------------------------------------------------------------------------------------------ AUTH


def plain(user="alice@example.org", password="secret", authzid=""):
    return b64(f"{authzid}\0{user}\0{password}")


def test_auth_plain_with_initial_response_over_tls():
    d = Driver(SUBMISSION, REMOTE, tls=True).ehlo()
    assert d.send(f"AUTH PLAIN {plain()}\r\n") == [codes.AUTH_OK]
    assert d.session.identity.username == "alice@example.org"
    assert d.codes("MAIL FROM:<alice@example.org>\r\n") == [250]


def test_auth_plain_without_initial_response():
    d = Driver(SUBMISSION, REMOTE, tls=True).ehlo()
    assert d.send("AUTH PLAIN\r\n")[0].encode() == b"334 \r\n"
    assert d.codes(plain() + "\r\n") == [235]


def test_auth_login_exchange():
    d = Driver(SUBMISSION, REMOTE, tls=True).ehlo()
    assert d.send("AUTH LOGIN\r\n")[0].encode() == b"334 VXNlcm5hbWU6\r\n"
    assert d.send(b64("alice@example.org") + "\r\n")[0].encode() == b"334 UGFzc3dvcmQ6\r\n"
    assert d.codes(b64("secret") + "\r\n") == [235]


def test_auth_login_with_initial_response():
    d = Driver(SUBMISSION, REMOTE, tls=True).ehlo()
    assert d.send(f"AUTH LOGIN {b64('alice@example.org')}\r\n")[0].code == 334
    assert d.codes(b64("secret") + "\r\n") == [235]


def test_auth_pipelined_with_mail_in_one_packet():
    d = Driver(SUBMISSION, REMOTE, tls=True).ehlo()
    assert d.codes(f"AUTH PLAIN {plain()}\r\nMAIL FROM:<alice@example.org>\r\n") == [235, 250]


@pytest.mark.parametrize("steps,expected", [
    ([f"AUTH PLAIN {plain(password='wrong')}"], [535]),
    ([f"AUTH PLAIN {plain(user='ghost@example.org')}"], [535]),
    ([f"AUTH PLAIN {plain(authzid='bob@example.org')}"], [535]),
    (["AUTH PLAIN", "*"], [334, 501]),
    (["AUTH LOGIN", "*"], [334, 501]),
    (["AUTH PLAIN", "!!!notbase64"], [334, 501]),
    (["AUTH PLAIN !!!"], [501]),
    (["AUTH PLAIN ="], [501]),
    (["AUTH CRAM-MD5"], [504]),
    (["AUTH"], [501]),
])
def test_auth_failures(steps, expected):
    d = Driver(SUBMISSION, REMOTE, tls=True).ehlo()
    got = []
    for s in steps:
        got += d.codes(s + "\r\n")
    assert got == expected
    assert d.session.identity is None
    assert d.codes("NOOP\r\n") == [250]  # back in command mode


def test_auth_failure_does_not_say_whether_the_account_exists():
    a = Driver(SUBMISSION, REMOTE, tls=True).ehlo().send(f"AUTH PLAIN {plain(password='x')}\r\n")
    b = Driver(SUBMISSION, REMOTE, tls=True).ehlo().send(f"AUTH PLAIN {plain(user='ghost@example.org')}\r\n")
    assert a == b == [codes.AUTH_INVALID]


def test_auth_refused_without_tls_from_remote_client():
    d = Driver(SUBMISSION, REMOTE).ehlo()
    assert d.send(f"AUTH PLAIN {plain()}\r\n") == [codes.ENCRYPTION_REQUIRED]
    assert d.events.count("CheckAuth") == 0


def test_auth_allowed_on_loopback_without_tls():
    assert Driver(SUBMISSION, LOOPBACK).ehlo().codes(f"AUTH PLAIN {plain()}\r\n") == [235]


def test_auth_twice_and_during_transaction_refused():
    d = Driver(SUBMISSION, LOOPBACK).ehlo()
    assert d.codes(f"AUTH PLAIN {plain()}\r\nAUTH PLAIN {plain()}\r\n") == [235, 503]
    d2 = Driver(SessionConfig(hostname="mx", offer_auth=True), LOOPBACK).ehlo()
    assert d2.codes(f"MAIL FROM:<a@example.net>\r\nAUTH PLAIN {plain()}\r\n") == [250, 503]


def test_auth_temporary_failure_reply_is_passed_on():
    d = Driver(SUBMISSION, LOOPBACK, auto=False).ehlo()
    d.send(f"AUTH PLAIN {plain()}\r\n")
    from mailserver.smtp.session import AuthResult
    d.resolve_next(AuthResult(None, codes.AUTH_TEMPFAIL))
    assert d.replies[-1] == codes.AUTH_TEMPFAIL


def test_auth_line_may_be_longer_than_command_limit():
    """RFC 4954 4: AUTH lines up to 12288 octets; other commands keep the configured limit."""
    cfg = SessionConfig(hostname="mx", offer_auth=True, require_auth=True, max_command_line=512)
    d = Driver(cfg, LOOPBACK, users={"u" * 300 + "@example.org": "p" * 400}).ehlo()
    assert d.codes(f"AUTH PLAIN {plain('u' * 300 + '@example.org', 'p' * 400)}\r\n") == [235]
    assert d.codes("NOOP " + "x" * 600 + "\r\n") == [500]


def test_submission_requires_auth_before_mail():
    d = Driver(SUBMISSION, REMOTE, tls=True).ehlo()
    assert d.send("MAIL FROM:<alice@example.org>\r\n") == [codes.AUTH_REQUIRED]


def test_trusted_network_may_send_without_auth():
    d = Driver(SUBMISSION, Peer("10.0.0.5", trusted=True)).ehlo()
    assert d.codes("MAIL FROM:<a@example.org>\r\n") == [250]


def test_auth_param_on_mail_accepted_on_submission():
    d = Driver(SUBMISSION, LOOPBACK).ehlo()
    assert d.codes(f"AUTH PLAIN {plain()}\r\nMAIL FROM:<alice@example.org> AUTH=<>\r\n") == [235, 250]


# ------------------------------------------------------------------------------------------ BDAT


def test_bdat_chunks_and_last():
    d = Driver().ehlo()
    d.send(transaction())
    assert d.send("BDAT 10\r\nSubject: x") == [codes.Reply(250, "2.0.0", "10 octets received")]
    assert d.codes("BDAT 8 LAST\r\n\r\n\r\nbody") == [250]
    assert d.messages == [b"Subject: x\r\n\r\nbody"]
    assert d.envelopes[0].body == "BDAT"


def test_bdat_zero_last_and_pipelined_in_one_packet():
    d = Driver().ehlo()
    assert d.codes(transaction() + "BDAT 6\r\nab\r\ncdBDAT 0 LAST\r\nNOOP\r\n") == [250, 250, 250, 250, 250]
    assert d.messages == [b"ab\r\ncd"]


def test_bdat_octets_are_never_read_as_commands():
    d = Driver().ehlo()
    assert d.codes(transaction() + "BDAT 14 LAST\r\nQUIT\r\nRSET\r\n\r\n") == [250, 250, 250]
    assert d.messages == [b"QUIT\r\nRSET\r\n\r\n"] and not d.closed


def test_bdat_without_mail_still_consumes_its_octets():
    d = Driver().ehlo()
    assert d.codes("BDAT 6 LAST\r\nQUIT\r\nNOOP\r\n") == [503, 250]
    assert not d.closed


def test_bdat_and_data_cannot_mix():
    d = Driver().ehlo()
    assert d.codes(transaction() + "BDAT 3\r\nabcDATA\r\n") == [250, 250, 250, 503]
    d = Driver().ehlo()
    assert d.codes(transaction() + "RCPT TO:<c@example.org>\r\nBDAT 1\r\naRCPT TO:<d@example.org>\r\n") == \
        [250, 250, 250, 250, 503]


def test_bdat_size_limit_fails_the_transaction_until_rset():
    d = Driver().ehlo()
    d.send(transaction())
    assert d.codes(b"BDAT 10001\r\n" + b"x" * 10001) == [552]
    assert "abort" in d.events
    assert d.codes("BDAT 1 LAST\r\nx") == [503]
    assert d.codes("RSET\r\n" + transaction() + "BDAT 1 LAST\r\nx") == [250, 250, 250, 250]


def test_bdat_bare_lf_rejected():
    d = Driver().ehlo()
    assert d.codes(transaction() + "BDAT 4 LAST\r\na\nb.") == [250, 250, 550]
    assert d.messages == []


def test_bdat_split_at_every_offset():
    wire = b"BDAT 5\r\nab\r\ncBDAT 3 LAST\r\nd\r\n"
    for cut in range(len(wire) + 1):
        d = Driver().ehlo()
        d.send(transaction())
        d.send(wire[:cut])
        d.send(wire[cut:])
        assert d.messages == [b"ab\r\ncd\r\n"], cut


# ------------------------------------------------------------------------------------------ limits


def test_recipient_limit_exact_and_one_past():
    d = Driver(SessionConfig(hostname="mx", max_recipients=3)).ehlo()
    rcpts = [f"<r{i}@example.org>" for i in range(4)]
    assert d.send(transaction(rcpts=rcpts))[1:] == [codes.RECIPIENT_OK] * 3 + [codes.TOO_MANY_RECIPIENTS]


def test_error_limit_exact_and_one_past():
    d = Driver(SessionConfig(hostname="mx", max_errors=3)).ehlo()
    assert d.codes("FOO\r\nFOO\r\nFOO\r\n") == [500, 500, 500] and not d.closed
    assert d.codes("FOO\r\nNOOP\r\n") == [500, 421]
    assert d.closed


def test_message_limit_per_session():
    d = Driver(SessionConfig(hostname="mx", max_messages=2)).ehlo()
    for _ in range(2):
        assert d.codes(transaction() + "DATA\r\nx\r\n.\r\n") == [250, 250, 354, 250]
    assert d.send(transaction()) == [codes.TOO_MANY_MESSAGES]
    assert d.closed


def test_command_line_limit_exact_and_one_past():
    d = Driver(SessionConfig(hostname="mx", max_command_line=512)).ehlo()
    assert d.codes("NOOP " + "x" * 505 + "\r\n") == [250]  # 512 octets with CRLF
    assert d.send("NOOP " + "x" * 506 + "\r\n") == [codes.LINE_TOO_LONG]


def test_text_line_limit_in_data():
    d = Driver(SessionConfig(hostname="mx", max_text_line=1000)).ehlo()
    d.send(transaction() + "DATA\r\n")
    assert d.codes(b"a" * 998 + b"\r\n.\r\n") == [250]
    d.send(transaction() + "DATA\r\n")
    assert d.send(b"a" * 999 + b"\r\n.\r\n") == [codes.TEXT_LINE_TOO_LONG]


def test_timeouts_follow_the_phase():
    cfg = SessionConfig(hostname="mx", timeout_command=300, timeout_data=180)
    d = Driver(cfg).ehlo()
    assert d.session.current_timeout() == 300
    d.send(transaction() + "DATA\r\n")
    assert d.session.current_timeout() == 180
    d.handle(d.session.timeout())
    assert d.replies[-1] == codes.TIMEOUT and d.closed and "abort" in d.events


def test_shutdown_says_421():
    d = Driver().ehlo()
    d.handle(d.session.shutdown())
    assert d.replies[-1].code == 421 and d.closed


def test_reply_text_never_breaks_framing():
    r = codes.SYNTAX.with_text("bad\r\nQUIT")
    assert r.encode() == b"501 5.5.2 bad  QUIT\r\n"


def _sent(actions) -> list:
    return [a.reply for a in actions if isinstance(a, Send)]


def test_command_budget_stops_a_burst_and_proceed_goes_on_in_order():
    """With max_commands=64 a burst of 200 NOOP/RSET lines is answered 64 per call: the session stops with the
    rest buffered (yielded) and proceed() answers the next ones, in order (a NOOP bomb cannot hold the reactor)."""
    s = SmtpSession(CFG, REMOTE, max_commands=64)
    s.start()
    replies = _sent(s.receive(b"NOOP\r\nRSET\r\n" * 100))
    assert len(replies) == 64 and s.yielded
    while s.yielded:
        more = _sent(s.proceed())
        assert 0 < len(more) <= 64
        replies += more
    assert replies == [codes.NOOP_OK, codes.RESET_OK] * 100


def test_command_budget_exactly_used_does_not_yield_one_past_does():
    s = SmtpSession(CFG, REMOTE, max_commands=64)
    s.start()
    assert len(_sent(s.receive(b"NOOP\r\n" * 64))) == 64 and not s.yielded
    assert len(_sent(s.receive(b"NOOP\r\n" * 65))) == 64 and s.yielded
    assert _sent(s.proceed()) == [codes.NOOP_OK] and not s.yielded
    assert _sent(s.proceed()) == []  # nothing left: a spare proceed does nothing


def test_command_budget_keeps_a_partial_line_for_the_next_read():
    s = SmtpSession(CFG, REMOTE, max_commands=2)
    s.start()
    assert len(_sent(s.receive(b"NOOP\r\nNOOP\r\nNO"))) == 2 and s.yielded
    assert _sent(s.proceed()) == [] and not s.yielded
    assert _sent(s.receive(b"OP\r\n")) == [codes.NOOP_OK]
