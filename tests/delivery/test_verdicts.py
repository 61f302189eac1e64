"""A check stage decides per recipient: of two local recipients of one SMTP message, one is refused and one gets it.

Today's partial-failure rule applies: the 250 after the data names the refused recipient, and the sender (local
here) was sent a failure report (RFC 5321 6.1) before that reply.
"""

from __future__ import annotations

import imaplib
import smtplib

from mailserver.delivery import envelope as ev
from mailserver.delivery.stages import FILTER, MAILBOX, QUOTA, ROUTING, STAGE_ORDER
from tests import harness
from tests.delivery.stages import Recorder, RefuseFor, plugged
from tests.harness import running_server

PW = "correct horse battery"
BODY = b"Subject: for two\r\nMessage-ID: <two@example.test>\r\n\r\nhello both\r\n"


def _imap_subjects(srv, address: str) -> list[bytes]:
    im = imaplib.IMAP4("127.0.0.1", srv.port("imap"))
    try:
        im.login(address, PW)
        im.select("INBOX", readonly=True)
        data = im.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")[1] if _count(im) else []
        im.logout()
    except BaseException:
        im.shutdown()
        raise
    return [part[1].strip() for part in data if isinstance(part, tuple)]


def _count(im) -> int:
    typ, data = im.status("INBOX", "(MESSAGES)")
    return int(data[0].split(b"MESSAGES ")[1].rstrip(b")"))


def test_one_recipient_refused_one_delivered(tmp_path):
    with running_server(tmp_path, listeners=("smtp", "imap")) as srv:
        for a in ("alice@example.test", "bob@example.test", "dave@example.test"):
            srv.add_user(a, PW)
        with plugged(srv.server, RefuseFor("bob@example.test", "Bob does not take this")):
            with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as c:
                c.ehlo("mx.remote.test")
                c.mail("dave@example.test")
                assert c.rcpt("alice@example.test")[0] == 250
                assert c.rcpt("bob@example.test")[0] == 250  # the verdict comes with the message, after DATA
                code, text = c.data(BODY)
        assert code == 250
        assert b"for 1 of 2 recipients" in text
        assert b"bob@example.test: 550 5.7.1 Bob does not take this" in text
        assert _imap_subjects(srv, "alice@example.test") == [b"Subject: for two"]
        assert _imap_subjects(srv, "bob@example.test") == []
        assert _imap_subjects(srv, "dave@example.test") == [b"Subject: Undelivered Mail Returned to Sender"]
        acct = srv.store.get_account("dave@example.test")
        (m,) = srv.store.get_messages(srv.store.get_mailbox(acct.id, "INBOX").id, [1])
        raw = srv.store.read_blob(m.blob_id)
        assert b"Final-Recipient: rfc822; bob@example.test" in raw and b"Status: 5.7.1" in raw


def test_refusing_every_recipient_refuses_the_message(tmp_path):
    """When the stage refuses the only recipient, the reply to the data is that refusal (nothing accepted)."""
    with running_server(tmp_path, listeners=("smtp", "imap")) as srv:
        srv.add_user("bob@example.test", PW)
        with plugged(srv.server, RefuseFor("bob@example.test")):
            with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as c:
                c.ehlo("mx.remote.test")
                c.mail("someone@remote.test")
                c.rcpt("bob@example.test")
                code, text = c.data(BODY)
        assert (code, text) == (550, b"5.7.1 Refused by the test stage")
        assert _imap_subjects(srv, "bob@example.test") == []


def test_every_recipient_runs_the_steps_in_the_documented_order(tmp_path):
    """routing -> checks -> filter -> quota -> mailbox, recorded on each outcome."""
    with running_server(tmp_path, listeners=()) as srv:
        acct = srv.add_user("alice@example.test", PW)
        rec = Recorder()
        with plugged(srv.server, rec) as pipeline:
            env = ev.Envelope(None, (ev.Recipient(ev.Mailbox("alice", "example.test")),))
            result = harness.call(pipeline.ingest, ev.Request(ev.LOCAL, envelope=env), BODY)
            placed = harness.call(pipeline.ingest, ev.Request(ev.LOCAL, placement=ev.Placement(acct.id)), BODY)
        assert STAGE_ORDER == (ROUTING, "checks", FILTER, QUOTA, MAILBOX)
        assert result.outcomes[0].stages == (ROUTING, rec.name, FILTER, QUOTA, MAILBOX)
        assert placed.outcomes[0].stages == (ROUTING, rec.name, QUOTA, MAILBOX)  # an exact mailbox: no filter
        assert [o.kind for o in result.outcomes + placed.outcomes] == [ev.DELIVERED, ev.DELIVERED]
        assert [o.uid for o in result.outcomes + placed.outcomes] == [1, 2]
