"""The whole server in one process: submission with AUTH, local delivery seen over IMAP and POP3, outbound relay to a
foreign MX found in (test) DNS, DKIM-signed, and a bounce back into the sender's INBOX."""

from __future__ import annotations

import imaplib
import poplib
import smtplib
import ssl

import dkim

from tests.dnsserver import dns_server
from tests.harness import running_server
from tests.outbound.helpers import wait_for
from tests.outbound.receiver import receiver

ZONES = {"remote.test": {"": [("MX", 10, "mx.remote.test")], "mx": [("A", "127.0.0.1")]}}


def _tls():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def test_submit_local_and_remote_with_dkim_and_bounce(tmp_path):
    def rcpt(address):
        return "550 5.1.1 no such user" if address.startswith("nobody@") else "250 2.1.5 OK"

    with dns_server(ZONES) as dns, receiver(rcpt=rcpt) as rx:
        with running_server(tmp_path, listeners=("submission", "imap", "pop3"),
                            queue={"run": True}, dns={"nameservers": [dns.address], "timeout": 2.0},
                            queue_options={"port_map": {"mx.remote.test": rx.port}}) as srv:
            srv.add_user("alice@example.test", "alice-pw")
            srv.add_user("bob@example.test", "bob-pw")
            from mailserver.delivery.dkim import generate

            keys = {k.record_name.encode(): k.txt_record().encode()
                    for k in generate(srv.store, "example.test", "mail")}
            raw = (b"From: Alice <alice@example.test>\r\nTo: bob@example.test, carol@remote.test, "
                   b"nobody@remote.test\r\nSubject: end to end\r\n\r\nHello everyone.\r\n")
            with smtplib.SMTP("127.0.0.1", srv.port("submission"), timeout=30) as c:
                c.starttls(context=_tls())
                c.login("alice@example.test", "alice-pw")
                refused = c.sendmail("alice@example.test",
                                     ["bob@example.test", "carol@remote.test", "nobody@remote.test"], raw)
                assert refused == {}

            # Local recipient: over IMAP (STARTTLS) and POP3.
            im = imaplib.IMAP4("127.0.0.1", srv.port("imap"))
            im.starttls(_tls())
            im.login("bob@example.test", "bob-pw")
            im.select("INBOX")
            typ, data = im.fetch("1", "(BODY.PEEK[])")
            body = data[0][1]
            assert body.endswith(raw.split(b"\r\n\r\n", 1)[1]) and b"Subject: end to end" in body
            im.logout()
            pop = poplib.POP3("127.0.0.1", srv.port("pop3"))
            pop.user("bob@example.test")
            pop.pass_("bob-pw")
            assert pop.stat()[0] == 1
            pop.quit()

            # Remote recipient: delivered to the test MX, DKIM-signed.
            wait_for(lambda: [t for t in rx.transactions if "carol@remote.test" in t.rcpts], timeout=30)
            tx = [t for t in rx.transactions if "carol@remote.test" in t.rcpts][0]
            assert b"DKIM-Signature:" in tx.data

            def dnsfunc(name, timeout=5):
                return keys[name.rstrip(b".")]

            assert dkim.verify(tx.data, dnsfunc=dnsfunc)

            # The refused recipient comes back to Alice as a delivery status notification.
            def bounce():
                acct = srv.store.get_account("alice@example.test")
                mb = srv.store.get_mailbox(acct.id, "INBOX")
                return [m for m in srv.store.get_messages(mb.id, [x.uid for x in srv.store.list_messages(mb.id)])]

            msgs = wait_for(bounce, timeout=30)
            report = srv.store.read_blob(msgs[0].blob_id)
            assert b"multipart/report" in report and b"report-type=delivery-status" in report
            assert b"Final-Recipient: rfc822; nobody@remote.test" in report
            assert b"Status: 5.1.1" in report
