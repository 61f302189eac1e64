"""Queue delivery end to end: real DNS on 127.0.0.1, real SMTP receivers answering per recipient, injected time."""

from __future__ import annotations

from email import message_from_bytes, policy

from storage.store import QueueRecipientSpec
from tests import harness
from tests.outbound.helpers import SENDER, message, outbound, wait_for
from tests.outbound.receiver import make_cert, receiver, server_tls

ZONES = {
    "remote.test": {"": [("MX", 10, "mx.remote.test")], "mx": [("A", "127.0.0.1")]},
    "other.test": {"": [("MX", 10, "mx.other.test")], "mx": [("A", "127.0.0.1")]},
    "smarthost.test": {"": [("A", "127.0.0.1")]},
}
QUEUE = {"retry_first": 300.0, "retry_max": 3600.0, "give_up_after": 86400.0, "delay_warning_after": 1000.0}


def _blocks(raw: bytes):
    msg = message_from_bytes(raw, policy=policy.default)
    parts = list(msg.iter_parts())
    return msg, parts, [dict(h.items()) for h in parts[1].get_payload()]


def _rows(ob):
    return [r for q in ob.queue_rows() for r in q.recipients]


def test_temporary_failure_then_success_on_retry(tmp_path):
    """451 on the first attempt; after the backoff (injected time) the retry is delivered; no report."""
    answers = ["451 4.7.1 greylisted, come back later"]
    with receiver(rcpt=lambda a: answers.pop() if answers else "250 2.1.5 OK") as rx, \
            outbound(tmp_path, ZONES, queue=QUEUE) as ob:
        ob.runner.port = rx.port
        ob.enqueue(message(), ["bob@remote.test"])
        row = wait_for(lambda: [r for r in _rows(ob) if r.attempts == 1])[0]
        assert row.status == "deferred" and row.last_reply.startswith("451 4.7.1")
        # first retry after retry_first with +/-10% jitter
        assert 270 <= row.next_attempt - ob.clock.seconds() <= 330
        assert rx.transactions == []
        ob.advance(200)
        assert harness.call(lambda: None) is None and rx.transactions == []
        ob.advance(200)
        wait_for(lambda: rx.transactions and not ob.queue_rows())
        assert rx.transactions[0].rcpts == ["bob@remote.test"]
        assert ob.inbox() == []


def test_permanent_failure_puts_a_report_in_the_local_senders_inbox(tmp_path):
    """550 from the MX: an RFC 3464 report with the remote reply reaches the local sender's INBOX."""
    with receiver(rcpt=lambda a: "550 5.1.1 no such user here") as rx, outbound(tmp_path, ZONES) as ob:
        ob.runner.port = rx.port
        ob.enqueue(message(subject="lost"), [QueueRecipientSpec("nobody@remote.test", orcpt="rfc822;nobody@remote.test")],
                   envid="ENV+2B1")
        wait_for(lambda: not ob.queue_rows() and ob.inbox())
        raw = ob.inbox()[0]
        msg, parts, blocks = _blocks(raw)
        assert msg.get_content_type() == "multipart/report"
        assert msg.get_param("report-type") == "delivery-status"
        assert msg["To"].addresses[0].addr_spec == SENDER and msg["Auto-Submitted"] == "auto-replied"
        assert blocks[0]["Reporting-MTA"] == "dns; mail.example.test"
        assert blocks[0]["Original-Envelope-Id"] == "ENV+1"
        r = blocks[1]
        assert r["Final-Recipient"] == "rfc822; nobody@remote.test"
        assert r["Original-Recipient"] == "rfc822; nobody@remote.test"
        assert r["Action"] == "failed" and r["Status"] == "5.1.1"
        assert r["Remote-MTA"] == "dns; mx.remote.test"
        assert r["Diagnostic-Code"] == "smtp; 550 5.1.1 no such user here"
        # no RET: the whole original comes back (it is small)
        assert parts[2].get_content_type() == "message/rfc822"
        assert b"Subject: lost" in raw and b"Hello there." in raw


def test_no_report_for_null_sender_and_notify_never(tmp_path):
    """RFC 3461: NOTIFY=NEVER and the null reverse-path get no report."""
    with receiver(rcpt=lambda a: "550 5.1.1 no") as rx, outbound(tmp_path, ZONES) as ob:
        ob.runner.port = rx.port
        ob.enqueue(message(), [QueueRecipientSpec("a@remote.test", notify="NEVER")])
        ob.enqueue(message(), ["b@remote.test"], sender="")
        wait_for(lambda: not ob.queue_rows() and ob.runner.stats["failed"] == 2)
        assert ob.inbox() == []


def test_ret_hdrs_returns_only_the_header(tmp_path):
    with receiver(rcpt=lambda a: "550 5.1.1 no") as rx, outbound(tmp_path, ZONES) as ob:
        ob.runner.port = rx.port
        ob.enqueue(message(body=b"secret body\r\n"), ["a@remote.test"], ret="HDRS")
        wait_for(lambda: ob.inbox())
        raw = ob.inbox()[0]
        _, parts, _ = _blocks(raw)
        assert parts[2].get_content_type() == "text/rfc822-headers"
        assert b"secret body" not in raw and b"Subject: hello" in raw


def test_delay_warning_is_sent_once(tmp_path):
    """Still deferred after delay_warning_after: one "delayed" report; later deferrals send no second one."""
    with receiver(rcpt=lambda a: "452 4.2.2 mailbox full") as rx, outbound(tmp_path, ZONES, queue=QUEUE) as ob:
        ob.runner.port = rx.port
        ob.enqueue(message(), ["full@remote.test"])
        wait_for(lambda: [r for r in _rows(ob) if r.attempts == 1])
        assert ob.inbox() == []
        for n in (2, 3, 4):
            ob.advance(3700)
            wait_for(lambda n=n: [r for r in _rows(ob) if r.attempts == n])
        reports = wait_for(lambda: ob.inbox())
        assert len(reports) == 1
        msg, _, blocks = _blocks(reports[0])
        assert blocks[1]["Action"] == "delayed" and blocks[1]["Status"] == "4.2.2"
        assert "Will-Retry-Until" in blocks[1]
        assert [r.delay_warned for r in _rows(ob)] == [True]


def test_give_up_after_lifetime_fails_with_report(tmp_path):
    with receiver(rcpt=lambda a: "451 4.3.0 try later") as rx, \
            outbound(tmp_path, ZONES, queue=dict(QUEUE, give_up_after=5000.0, delay_warning_after=100000.0)) as ob:
        ob.runner.port = rx.port
        ob.enqueue(message(), ["late@remote.test"])
        wait_for(lambda: [r for r in _rows(ob) if r.attempts == 1])
        ob.advance(3700)
        wait_for(lambda: [r for r in _rows(ob) if r.attempts == 2])
        ob.advance(3700)
        wait_for(lambda: not ob.queue_rows() and ob.inbox())
        _, _, blocks = _blocks(ob.inbox()[0])
        assert blocks[1]["Action"] == "failed" and blocks[1]["Status"] == "5.4.7"


def test_mixed_per_recipient_results_in_one_transaction(tmp_path):
    """One transaction for three recipients of a domain: 250, 451, 550 each get their own outcome."""
    answers = {"ok@remote.test": "250 2.1.5 OK", "later@remote.test": "451 4.2.0 later",
               "bad@remote.test": "550 5.1.1 unknown"}
    with receiver(rcpt=lambda a: answers[a]) as rx, outbound(tmp_path, ZONES, queue=QUEUE) as ob:
        ob.runner.port = rx.port
        ob.enqueue(message(), list(answers))
        wait_for(lambda: ob.runner.stats["delivered"] + ob.runner.stats["failed"] + ob.runner.stats["deferred"] == 3)
        assert len(rx.transactions) == 1 and rx.transactions[0].rcpts == ["ok@remote.test"]
        rows = {r.recipient: r.status for r in _rows(ob)}
        assert rows == {"ok@remote.test": "delivered", "later@remote.test": "deferred", "bad@remote.test": "failed"}
        wait_for(lambda: ob.inbox())
        _, _, blocks = _blocks(ob.inbox()[0])
        assert [b.get("Final-Recipient") for b in blocks[1:]] == ["rfc822; bad@remote.test"]


def test_end_of_data_reply_applies_to_every_accepted_recipient(tmp_path):
    with receiver(data_reply=lambda tx: "554 5.7.1 content rejected") as rx, outbound(tmp_path, ZONES) as ob:
        ob.runner.port = rx.port
        ob.enqueue(message(), ["a@remote.test", "b@remote.test"])
        wait_for(lambda: not ob.queue_rows() and ob.inbox())
        _, _, blocks = _blocks(ob.inbox()[0])
        assert sorted(b["Final-Recipient"] for b in blocks[1:]) == ["rfc822; a@remote.test", "rfc822; b@remote.test"]
        assert {b["Status"] for b in blocks[1:]} == {"5.7.1"}


def test_two_domains_two_transactions_and_dsn_parameters(tmp_path):
    """Recipients are grouped per domain; DSN parameters go on to a receiver that offers DSN."""
    with receiver() as rx, outbound(tmp_path, ZONES) as ob:
        ob.runner.port = rx.port
        ob.enqueue(message(), [QueueRecipientSpec("a@remote.test", notify="SUCCESS,FAILURE",
                                                  orcpt="rfc822;a@remote.test"),
                               "b@remote.test", "c@other.test"], envid="xyz", ret="HDRS")
        wait_for(lambda: not ob.queue_rows())
        by_rcpts = sorted(tuple(tx.rcpts) for tx in rx.transactions)
        assert by_rcpts == [("a@remote.test", "b@remote.test"), ("c@other.test",)]
        tx = [t for t in rx.transactions if "a@remote.test" in t.rcpts][0]
        assert "RET=HDRS" in tx.mail_line and "ENVID=xyz" in tx.mail_line and "SIZE=" in tx.mail_line
        assert tx.rcpt_lines[0] == "RCPT TO:<a@remote.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a@remote.test"
        assert ob.inbox() == []  # the receiver took the DSN request over: no success report from us


def test_success_report_when_the_receiver_lacks_dsn(tmp_path):
    """RFC 3461 6.2.3.1: NOTIFY=SUCCESS to a server without DSN: we report "relayed"."""
    with receiver(extensions=("PIPELINING", "8BITMIME", "SIZE 1000000")) as rx, outbound(tmp_path, ZONES) as ob:
        ob.runner.port = rx.port
        ob.enqueue(message(), [QueueRecipientSpec("a@remote.test", notify="SUCCESS")])
        wait_for(lambda: ob.inbox())
        _, _, blocks = _blocks(ob.inbox()[0])
        assert blocks[1]["Action"] == "relayed" and blocks[1]["Status"] == "2.0.0"
        assert "NOTIFY" not in rx.transactions[0].rcpt_lines[0]


def test_helo_fallback_and_smtputf8_bounce(tmp_path):
    """A server that rejects EHLO gets HELO; a message needing SMTPUTF8 is bounced when the server lacks it."""
    with receiver(ehlo=False) as rx, outbound(tmp_path, ZONES) as ob:
        ob.runner.port = rx.port
        ob.enqueue(message(), ["a@remote.test"])
        wait_for(lambda: rx.transactions and not ob.queue_rows())
        assert rx.transactions[0].helo == "mail.example.test" and "SIZE" not in rx.transactions[0].mail_line
        ob.enqueue(message(), ["b@remote.test"], smtputf8=True)
        wait_for(lambda: ob.inbox())
        _, _, blocks = _blocks(ob.inbox()[0])
        assert blocks[1]["Status"] == "5.6.7"


def test_dots_at_every_buffer_boundary_arrive_byte_exact(tmp_path):
    """Lines starting with "." placed across every 64 KiB read boundary (and the first byte) arrive unchanged."""
    from mailserver.delivery.connection import BODY_CHUNK

    head = message(subject="dots", body=b"")
    body = bytearray()
    # a line of dots at offsets so that each of "\r", "\n", "." falls on a chunk boundary at least once
    line_no = 0
    while len(head) + len(body) < 5 * BODY_CHUNK:
        boundary = (len(head) + len(body)) // BODY_CHUNK * BODY_CHUNK + BODY_CHUNK
        fill = boundary - (len(head) + len(body)) - 2 + (line_no % 3) - 1
        body += b"x" * max(0, fill) + b"\r\n"
        body += b"." * (1 + line_no % 3) + b" dotted line\r\n"
        line_no += 1
    body += b".\r\n..\r\n.end\r\n"
    raw = head + bytes(body)
    with receiver() as rx, outbound(tmp_path, ZONES) as ob:
        ob.runner.port = rx.port
        ob.enqueue(raw, ["a@remote.test"])
        wait_for(lambda: rx.transactions and not ob.queue_rows())
        assert rx.transactions[0].data == raw


def test_restart_in_the_middle_of_the_queue(tmp_path, database_url):
    """Stop the runner while messages are being delivered, start a new one: every message arrives exactly once."""
    from mailserver.delivery.queue import QueueRunner

    n = 30
    with receiver() as rx, outbound(tmp_path, ZONES, database_url=database_url,
                                    queue={"max_connections": 3, "max_connections_per_domain": 3}) as ob:
        ob.runner.port = rx.port
        for i in range(n):
            ob.enqueue(message(subject=f"m{i}"), [f"u{i}@remote.test"])
        wait_for(lambda: len(rx.transactions) >= 3, timeout=20)
        harness.call(ob.runner.stop)
        first = len(rx.transactions)
        assert first < n, "the first runner should not have finished everything"
        # a crashed process leaves leases behind: simulate it on one open recipient
        from storage.queue import QueueStore

        qs = QueueStore(ob.store)
        claimed = qs.claim(ob.clock.seconds(), 3600, 1)
        assert claimed
        if database_url:  # PostgreSQL: another process's lease is respected until it expires
            ob.advance(3700)
        runner2 = harness.call(lambda: QueueRunner(ob.srv.services, clock=ob.clock, port=rx.port))
        ob.runner = runner2
        harness.call(runner2.start)
        wait_for(lambda: not ob.queue_rows(), timeout=30)
        got = sorted(r for tx in rx.transactions for r in tx.rcpts)
        assert got == sorted(f"u{i}@remote.test" for i in range(n))


def test_smarthost_with_auth_over_starttls(tmp_path):
    """Everything goes to the smarthost: STARTTLS with a verified certificate, then AUTH, then the message."""
    cert, key = make_cert(tmp_path, "smarthost.test")
    with receiver(tls_options=server_tls(cert, key), auth=("relayuser", "s3cret"), require_auth=True) as rx:
        cfg = {"queue": {"smarthost": {"host": "smarthost.test", "port": rx.port, "tls": "starttls",
                                       "username": "relayuser", "password": "s3cret"}}}
        with outbound(tmp_path, ZONES, runner_kwargs={"smarthost_ca_file": cert}, **cfg) as ob:
            ob.enqueue(message(), ["a@anywhere.test", "b@remote.test"])
            wait_for(lambda: not ob.queue_rows())
            assert all(tx.tls and tx.auth_user == "relayuser" for tx in rx.transactions)
            assert sorted(r for tx in rx.transactions for r in tx.rcpts) == ["a@anywhere.test", "b@remote.test"]


def test_smarthost_implicit_tls_and_unverifiable_certificate(tmp_path):
    """Implicit TLS (RFC 8314) works with the right trust root; with the wrong one nothing is sent (deferred)."""
    cert, key = make_cert(tmp_path, "smarthost.test")
    other_cert, _ = make_cert(tmp_path / "other", "smarthost.test")
    with receiver(tls_options=server_tls(cert, key), implicit_tls=True, auth=("u", "p")) as rx:
        cfg = {"queue": {"smarthost": {"host": "smarthost.test", "port": rx.port, "tls": "implicit",
                                       "username": "u", "password": "p"}}}
        with outbound(tmp_path, ZONES, runner_kwargs={"smarthost_ca_file": other_cert}, **cfg) as ob:
            ob.enqueue(message(), ["a@remote.test"])
            row = wait_for(lambda: [r for r in _rows(ob) if r.attempts == 1])[0]
            assert row.status == "deferred" and rx.transactions == []
            ob.runner.smarthost_ca_file = cert
            harness.call(ob.runner.queue.retry)
            harness.call(ob.runner.kick)
            wait_for(lambda: not ob.queue_rows())
            assert rx.transactions[0].tls and rx.transactions[0].auth_user == "u"


def test_opportunistic_starttls_to_mx_without_verification(tmp_path):
    """An MX offering STARTTLS with a self-signed certificate for another name still gets the mail encrypted."""
    cert, key = make_cert(tmp_path, "whatever.invalid")
    with receiver(tls_options=server_tls(cert, key)) as rx, outbound(tmp_path, ZONES) as ob:
        ob.runner.port = rx.port
        ob.enqueue(message(), ["a@remote.test"])
        wait_for(lambda: rx.transactions and not ob.queue_rows())
        assert rx.transactions[0].tls


def test_per_domain_concurrency_limit(tmp_path):
    """At most max_connections_per_domain connections to one domain at a time."""
    peak = []
    with receiver(data_reply=lambda tx: (peak.append(rx.connections), "250 2.0.0 ok")[1]) as rx, \
            outbound(tmp_path, ZONES, queue={"max_connections_per_domain": 2, "max_connections": 10}) as ob:
        ob.runner.port = rx.port
        for i in range(12):
            ob.enqueue(message(subject=f"m{i}"), [f"u{i}@remote.test"])
        wait_for(lambda: not ob.queue_rows(), timeout=30)
        assert len(rx.transactions) == 12 and max(peak) <= 2
