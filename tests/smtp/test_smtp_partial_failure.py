"""A message accepted for several recipients where some cannot take it at delivery: the 250 names them and the
sender gets a failure report (RFC 5321 6.1) stored before the reply."""

from __future__ import annotations

import smtplib

from tests.harness import running_server


def _inbox(srv, address):
    acct = srv.store.get_account(address)
    mb = srv.store.get_mailbox(acct.id, "INBOX")
    return [srv.store.read_blob(m.blob_id) for m in srv.store.get_messages(mb.id, [x.uid for x in
                                                                                 srv.store.list_messages(mb.id)])]


def test_partial_failure_is_reported_to_the_sender(tmp_path):
    with running_server(tmp_path, listeners=("smtp",)) as srv:
        srv.add_user("alice@example.test", "pw")
        srv.add_user("bob@example.test", "pw", quota_bytes=100)  # passes RCPT (no SIZE), fails at delivery
        srv.add_user("dave@example.test", "pw")
        body = b"Subject: to two\r\nMessage-ID: <partial@remote.test>\r\n\r\n" + b"x" * 400 + b"\r\n"
        with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as c:
            c.ehlo("mx.remote.test")
            c.mail("dave@example.test")
            assert c.rcpt("alice@example.test")[0] == 250
            assert c.rcpt("bob@example.test")[0] == 250
            code, text = c.data(body)
        assert code == 250 and b"bob@example.test" in text and b"for 1 of 2 recipients" in text
        assert len(_inbox(srv, "alice@example.test")) == 1
        assert _inbox(srv, "bob@example.test") == []
        reports = _inbox(srv, "dave@example.test")
        assert len(reports) == 1
        report = reports[0]
        assert b"report-type=delivery-status" in report
        assert b"Final-Recipient: rfc822; bob@example.test" in report and b"Action: failed" in report
        assert b"Status: 4.2.2" in report or b"Status: 5.2.2" in report
        assert b"Message-ID: <partial@remote.test>" in report  # the original header is attached


def test_postmaster_of_every_domain_is_accepted(tmp_path):
    """RFC 5321 4.5.1: postmaster (any case) is accepted for each protected domain, and <postmaster> alone."""
    with running_server(tmp_path, listeners=("smtp",), domains=("example.test", "other.test"),
                        smtp={"postmaster": "admin@example.test"}) as srv:
        srv.add_user("admin@example.test", "pw")
        with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as c:
            c.ehlo("mx.remote.test")
            c.mail("someone@remote.test")
            assert c.rcpt("PostMaster@other.test")[0] == 250
            assert c.rcpt("postmaster@example.test")[0] == 250
            assert c.rcpt("<postmaster>")[0] == 250
            assert c.rcpt("nobody@other.test")[0] == 550
            assert c.data(b"Subject: abuse report\r\n\r\nhello\r\n")[0] == 250
        assert len(_inbox(srv, "admin@example.test")) == 1
