"""SMTP deliveries follow the recipient's Sieve script (checked over IMAP); vacation replies once per sender per
period and never to lists or automatic mail; redirects go out through the pipeline and loops stop."""

from __future__ import annotations

import email
import imaplib
import smtplib

from twisted.internet import task

from tests import harness
from tests.harness import running_server

PW = "correct horse battery"

SCRIPT = r'''require ["fileinto", "mailbox", "imap4flags", "editheader", "reject", "variables"];
if header :contains "subject" "report" { fileinto "Work"; stop; }
if header :contains "subject" "spam" { discard; stop; }
if header :matches "list-id" "*<*.lists.example.test>" { fileinto :create "Lists/${2}"; stop; }
if header :contains "subject" "urgent" { addflag "\\Flagged"; addheader "X-Urgent" "yes"; keep; stop; }
if header :contains "subject" "reject me" { reject "Not wanted here"; stop; }
if header :contains "subject" "both" { fileinto "Work"; keep; }
'''


def _send(srv, sender, rcpts, raw):
    with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as c:
        c.ehlo("mx.remote.test")
        try:
            c.sendmail(sender, rcpts, raw)
        except smtplib.SMTPResponseException as e:
            return e.smtp_code, e.smtp_error
        except smtplib.SMTPRecipientsRefused as e:
            return list(e.recipients.values())[0]
    return 250, b""


def _msg(subject, extra=b"", frm=b"someone@remote.test"):
    return b"From: " + frm + b"\r\nTo: bob@example.test\r\nSubject: " + subject + b"\r\nMessage-ID: <" + \
        subject.replace(b" ", b".") + b"@remote.test>\r\n" + extra + b"\r\nHello\r\n"


def _imap(srv, address):
    im = imaplib.IMAP4("127.0.0.1", srv.port("imap"))
    im.login(address, PW)
    return im


def _folder(im, name):
    typ, data = im.select(f'"{name}"', readonly=True)
    assert typ == "OK", (name, data)
    n = int(data[0])
    if not n:
        return []
    typ, data = im.fetch("1:*", "(FLAGS BODY.PEEK[HEADER])")
    out = []
    for part in data:
        if isinstance(part, tuple):
            out.append((part[0], email.message_from_bytes(part[1])))
    return out


def _activate(srv, address, script, name="main"):
    acct = srv.store.get_account(address)
    srv.store.put_sieve_script(acct.id, name, script)
    srv.store.activate_sieve_script(acct.id, name)
    harness.call(srv.services.pipeline.filter.invalidate)


def test_smtp_deliveries_follow_the_script(tmp_path):
    with running_server(tmp_path, listeners=("smtp", "imap")) as srv:
        acct = srv.add_user("bob@example.test", PW)
        srv.store.create_mailbox(acct.id, "Work")
        _activate(srv, "bob@example.test", SCRIPT)
        assert _send(srv, "a@remote.test", ["bob@example.test"], _msg(b"monthly report"))[0] == 250
        assert _send(srv, "a@remote.test", ["bob@example.test"], _msg(b"cheap spam"))[0] == 250
        assert _send(srv, "a@remote.test", ["bob@example.test"],
                     _msg(b"release", b"List-Id: Dev <dev.lists.example.test>\r\n"))[0] == 250
        assert _send(srv, "a@remote.test", ["bob@example.test"], _msg(b"urgent call"))[0] == 250
        assert _send(srv, "a@remote.test", ["bob@example.test"], _msg(b"plain hello"))[0] == 250
        assert _send(srv, "a@remote.test", ["bob@example.test"], _msg(b"both places"))[0] == 250
        # RFC 5429 2.1: the only recipient, so refused at SMTP time
        code, text = _send(srv, "a@remote.test", ["bob@example.test"], _msg(b"reject me please"))
        assert (code, text) == (550, b"5.7.1 Not wanted here")
        im = _imap(srv, "bob@example.test")
        try:
            assert [m["Subject"] for _, m in _folder(im, "Work")] == ["monthly report", "both places"]
            assert [m["Subject"] for _, m in _folder(im, "Lists/dev")] == ["release"]
            inbox = _folder(im, "INBOX")
            assert [m["Subject"] for _, m in inbox] == ["urgent call", "plain hello", "both places"]
            flags, urgent = inbox[0]
            assert b"\\Flagged" in flags and urgent["X-Urgent"] == "yes"
            assert inbox[1][1]["X-Urgent"] is None  # the edit is that copy's only
        finally:
            im.logout()


def test_a_script_change_takes_effect_and_a_broken_script_keeps_mail(tmp_path):
    with running_server(tmp_path, listeners=("smtp", "imap")) as srv:
        acct = srv.add_user("bob@example.test", PW)
        srv.store.create_mailbox(acct.id, "Work")
        _activate(srv, "bob@example.test", 'require "fileinto"; fileinto "Work";')
        _send(srv, "a@remote.test", ["bob@example.test"], _msg(b"one"))
        # A runtime failure (too many redirects): implicit keep, nothing redirected.
        srv.store.put_sieve_script(acct.id, "main", "".join(f'redirect "r{i}@remote.test";' for i in range(5)))
        harness.call(srv.services.pipeline.filter.invalidate)
        _send(srv, "a@remote.test", ["bob@example.test"], _msg(b"two"))
        im = _imap(srv, "bob@example.test")
        try:
            assert [m["Subject"] for _, m in _folder(im, "Work")] == ["one"]
            assert [m["Subject"] for _, m in _folder(im, "INBOX")] == ["two"]
        finally:
            im.logout()


def test_vacation_once_per_sender_per_period_and_never_to_lists(tmp_path):
    with running_server(tmp_path, listeners=("smtp", "imap")) as srv:
        srv.add_user("bob@example.test", PW)
        srv.add_user("carol@example.test", PW)
        srv.store.add_alias("robert@example.test", "bob@example.test")
        _activate(srv, "bob@example.test", 'require "vacation"; vacation :days 2 :from "robert@example.test" '
                                           ':subject "Away" "I am away until Monday.";')
        clock = task.Clock()
        clock.advance(1_700_000_000)
        srv.services.pipeline.filter.clock = clock

        def to_bob(subject, extra=b""):
            raw = b"From: carol@example.test\r\nTo: bob@example.test\r\nSubject: " + subject + \
                b"\r\nMessage-ID: <" + subject.replace(b" ", b"-") + b"@example.test>\r\n" + extra + b"\r\nhi\r\n"
            assert _send(srv, "carol@example.test", ["bob@example.test"], raw)[0] == 250

        to_bob(b"first")
        to_bob(b"second")  # within the period: no second reply
        to_bob(b"list", b"List-Id: <x.lists.example.test>\r\n")
        to_bob(b"auto", b"Auto-Submitted: auto-generated\r\n")
        to_bob(b"bulk", b"Precedence: bulk\r\n")
        clock.advance(2 * 86400 + 1)
        to_bob(b"third")  # a new period: a new reply
        im = _imap(srv, "carol@example.test")
        try:
            replies = [m for _, m in _folder(im, "INBOX")]
        finally:
            im.logout()
        assert [m["In-Reply-To"] for m in replies] == ["<first@example.test>", "<third@example.test>"]
        r = replies[0]
        assert r["Subject"] == "Away" and r["Auto-Submitted"].startswith("auto-replied")
        assert r["From"] == "<robert@example.test>" and r["To"] == "<carol@example.test>"
        assert r["References"] == "<first@example.test>"
        im = _imap(srv, "bob@example.test")
        try:
            assert len(_folder(im, "INBOX")) == 6  # the vacation action keeps every message
        finally:
            im.logout()


def test_vacation_from_an_address_not_theirs_uses_the_recipients_own(tmp_path):
    with running_server(tmp_path, listeners=("smtp", "imap")) as srv:
        srv.add_user("bob@example.test", PW)
        srv.add_user("carol@example.test", PW)
        _activate(srv, "bob@example.test", 'require "vacation"; vacation :from "ceo@example.test" "Away.";')
        _send(srv, "carol@example.test", ["bob@example.test"], b"From: carol@example.test\r\n"
              b"To: bob@example.test\r\nSubject: hi\r\n\r\nhi\r\n")
        im = _imap(srv, "carol@example.test")
        try:
            (reply,) = [m for _, m in _folder(im, "INBOX")]
        finally:
            im.logout()
        assert reply["From"] == "<bob@example.test>" and reply["Subject"] == "Auto: hi"


def test_redirect_delivers_and_a_redirect_loop_stops(tmp_path):
    with running_server(tmp_path, listeners=("smtp", "imap")) as srv:
        for a in ("bob@example.test", "dave@example.test", "erin@example.test"):
            srv.add_user(a, PW)
        _activate(srv, "erin@example.test", 'redirect "dave@example.test";')
        _send(srv, "a@remote.test", ["erin@example.test"], _msg(b"to erin"))
        # bob -> dave -> bob: the second hop finds bob's own trace field and keeps it
        _activate(srv, "bob@example.test", 'redirect "dave@example.test";')
        _activate(srv, "dave@example.test", 'redirect "bob@example.test";')
        _send(srv, "a@remote.test", ["bob@example.test"], _msg(b"loop"))
        im = _imap(srv, "dave@example.test")
        try:
            assert [m["Subject"] for _, m in _folder(im, "INBOX")] == ["to erin"]
        finally:
            im.logout()
        im = _imap(srv, "bob@example.test")
        try:
            (kept,) = [m for _, m in _folder(im, "INBOX")]
        finally:
            im.logout()
        assert kept["Subject"] == "loop"
        assert kept.get_all("X-Sieve-Redirected-By") == ["<dave@example.test>", "<bob@example.test>"]
        assert kept.get_all("Return-Path") == ["<a@remote.test>"]


def _queue(srv):
    from storage.queue import QueueStore

    q = QueueStore(srv.store)
    return [(s.message.sender, [r.recipient for r in s.recipients], q.read_blob(s.message.blob_id))
            for s in q.list()]


def test_a_remote_redirect_and_vacation_reply_go_to_the_queue(tmp_path):
    with running_server(tmp_path, listeners=("smtp", "imap")) as srv:
        srv.add_user("bob@example.test", PW)
        _activate(srv, "bob@example.test", 'require ["vacation", "copy"]; redirect :copy "bob@elsewhere.test";'
                                           'vacation "Away.";')
        raw = b"From: x@remote.test\r\nTo: bob@example.test\r\nSubject: s\r\nMessage-ID: <q1@remote.test>\r\n\r\nb\r\n"
        assert _send(srv, "x@remote.test", ["bob@example.test"], raw)[0] == 250
        queued = sorted(_queue(srv), key=lambda q: q[1])
        assert [(sender, rcpts) for sender, rcpts, _ in queued] == [
            ("x@remote.test", ["bob@elsewhere.test"]),  # the envelope sender is kept (SRS: a hook)
            ("", ["x@remote.test"]),  # RFC 3834 / RFC 5230: the reply has the null sender
        ]
        redirected, reply = queued[0][2], queued[1][2]
        assert redirected.startswith(b"Received: from ")  # a new transaction: our trace field first
        assert b"X-Sieve-Redirected-By: <bob@example.test>\r\n" in redirected
        assert b"Return-Path:" not in redirected
        assert b"Auto-Submitted: auto-replied" in reply and b"In-Reply-To: <q1@remote.test>" in reply
        im = _imap(srv, "bob@example.test")
        try:
            assert len(_folder(im, "INBOX")) == 1  # :copy keeps
        finally:
            im.logout()


def test_reject_with_two_recipients_accepts_the_other_and_reports_to_the_sender(tmp_path):
    with running_server(tmp_path, listeners=("smtp", "imap")) as srv:
        srv.add_user("bob@example.test", PW)
        srv.add_user("dave@example.test", PW)
        srv.add_user("carol@example.test", PW)
        _activate(srv, "bob@example.test", 'require "reject"; reject "Bob is not here";')
        raw = b"From: carol@example.test\r\nTo: bob@example.test, dave@example.test\r\nSubject: two\r\n\r\nb\r\n"
        with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as c:
            c.ehlo("mx.remote.test")
            c.mail("carol@example.test")
            c.rcpt("bob@example.test")
            c.rcpt("dave@example.test")
            code, text = c.data(raw)
        assert code == 250 and b"bob@example.test: 550 5.7.1 Bob is not here" in text
        for who, subjects in (("dave@example.test", ["two"]), ("bob@example.test", []),
                              ("carol@example.test", ["Undelivered Mail Returned to Sender"])):
            im = _imap(srv, who)
            try:
                assert [m["Subject"] for _, m in _folder(im, "INBOX")] == subjects, who
            finally:
                im.logout()


def test_the_domains_before_and_after_scripts_run_around_the_users(tmp_path):
    with running_server(tmp_path, listeners=("smtp", "imap")) as srv:
        acct = srv.add_user("bob@example.test", PW)
        for box in ("Mine", "After"):  # Junk is a default mailbox
            srv.store.create_mailbox(acct.id, box)
        d = srv.store.get_domain("example.test")
        srv.store.put_sieve_script(d.id, "before", 'require "fileinto"; if header :is "x-spam-flag" "YES" '
                                   '{ fileinto "Junk"; stop; }', scope="domain")
        srv.store.put_sieve_script(d.id, "after", 'require ["fileinto", "copy"]; fileinto :copy "After";',
                                   scope="domain")
        _activate(srv, "bob@example.test", 'require "fileinto"; fileinto "Mine";')
        _send(srv, "a@remote.test", ["bob@example.test"], _msg(b"spammy", b"X-Spam-Flag: YES\r\n"))
        _send(srv, "a@remote.test", ["bob@example.test"], _msg(b"normal"))
        im = _imap(srv, "bob@example.test")
        try:
            assert [m["Subject"] for _, m in _folder(im, "Junk")] == ["spammy"]  # stop: nothing else ran
            assert [m["Subject"] for _, m in _folder(im, "Mine")] == ["normal"]
            assert [m["Subject"] for _, m in _folder(im, "After")] == ["normal"]
            assert _folder(im, "INBOX") == []
        finally:
            im.logout()


def test_a_changed_script_is_compiled_again_once_its_version_changes(tmp_path):
    """The cache holds a compiled script until the store's version of the account's scripts changes (checked every
    cache_check_interval; 0 here): a put from another process (the CLI) takes effect without a restart."""
    with running_server(tmp_path, listeners=("smtp", "imap"), sieve={"cache_check_interval": 0.0}) as srv:
        acct = srv.add_user("bob@example.test", PW)
        srv.store.create_mailbox(acct.id, "A")
        srv.store.create_mailbox(acct.id, "B")
        srv.store.put_sieve_script(acct.id, "main", 'require "fileinto"; fileinto "A";')
        srv.store.activate_sieve_script(acct.id, "main")
        _send(srv, "a@remote.test", ["bob@example.test"], _msg(b"first"))
        srv.store.put_sieve_script(acct.id, "main", 'require "fileinto"; fileinto "B";')
        _send(srv, "a@remote.test", ["bob@example.test"], _msg(b"second"))
        srv.store.activate_sieve_script(acct.id, None)
        _send(srv, "a@remote.test", ["bob@example.test"], _msg(b"third"))
        im = _imap(srv, "bob@example.test")
        try:
            assert [m["Subject"] for _, m in _folder(im, "A")] == ["first"]
            assert [m["Subject"] for _, m in _folder(im, "B")] == ["second"]
            assert [m["Subject"] for _, m in _folder(im, "INBOX")] == ["third"]
        finally:
            im.logout()
