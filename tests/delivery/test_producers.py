"""Every producer of local mail goes through the one ingest pipeline: a check stage plugged into the running server's
pipeline sees each of them (SMTP, webmail send + Sent copy + draft, IMAP APPEND and MULTIAPPEND, reports, CLI import).
"""

from __future__ import annotations

import imaplib
import re
import smtplib

from mailserver.delivery.stages import CHECKS, MAILBOX, QUOTA, ROUTING
from storage.store import QueueRecipientSpec
from tests.delivery.stages import Recorder, plugged
from tests.harness import running_server
from tests.outbound.helpers import outbound, wait_for
from tests.outbound.receiver import receiver
from tests.webmail.test_http import Client

MSG = b"From: Dave <dave@remote.test>\r\nTo: alice@example.test\r\nSubject: hi\r\n\r\nhello\r\n"
PW = "correct horse battery"


def _inbox(srv, address, mailbox="INBOX"):
    acct = srv.store.get_account(address)
    mb = srv.store.get_mailbox(acct.id, mailbox)
    uids = [m.uid for m in srv.store.list_messages(mb.id)]
    return [srv.store.read_blob(m.blob_id) for m in srv.store.get_messages(mb.id, uids)]


def test_smtp_goes_through_the_pipeline(tmp_path):
    """A message over SMTP reaches the check stage once per final recipient, after routing."""
    with running_server(tmp_path, listeners=("smtp",)) as srv:
        srv.add_user("alice@example.test", PW)
        srv.add_user("bob@example.test", PW)
        rec = Recorder()
        with plugged(srv.server, rec):
            with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as c:
                c.sendmail("dave@remote.test", ["alice@example.test", "bob@example.test"], MSG)
        # "bayes": the built-in classifier, a check of every message from the MX (registered before the test's)
        assert sorted(rec.seen) == [("smtp", "alice@example.test", (ROUTING, "bayes", rec.name)),
                                    ("smtp", "bob@example.test", (ROUTING, "bayes", rec.name))]
        assert _inbox(srv, "alice@example.test")[0].startswith(b"Return-Path: <dave@remote.test>\r\nReceived: ")


def test_webmail_send_sent_copy_and_draft_go_through_the_pipeline(tmp_path):
    """Sending from the webmail, its copy in Sent and a saved draft are three requests to the same pipeline."""
    with running_server(tmp_path, listeners=("https",)) as srv:
        srv.add_user("alice@example.test", PW)
        srv.add_user("bob@example.test", PW)
        rec = Recorder()
        with plugged(srv.server, rec):
            c = Client(srv)
            c.login("alice@example.test", PW)
            token = c.csrf("/compose")
            form = {"_csrf": token, "action": "send", "from": "alice@example.test", "to": "bob@example.test",
                    "subject": "from the web", "body": "hello Bob"}
            r, _ = c.post("/compose", form)
            assert r.status == 303
            r, _ = c.post("/compose", dict(form, action="save", subject="unfinished"))
            assert r.status == 303
        assert rec.producers() == ["webmail", "webmail-sent", "webmail-draft"]
        assert rec.seen[0][1] == "bob@example.test"
        (received,) = _inbox(srv, "bob@example.test")
        assert received.startswith(b"Return-Path: <alice@example.test>\r\nDelivered-To: bob@example.test\r\n")
        assert b"Subject: from the web" in received
        assert b"Subject: from the web" in _inbox(srv, "alice@example.test", "Sent")[0]
        assert b"Subject: unfinished" in _inbox(srv, "alice@example.test", "Drafts")[0]


def test_imap_append_and_multiappend_go_through_the_pipeline(tmp_path):
    """APPEND (one message) and MULTIAPPEND (two, all or nothing) reach the stage as placements: no filter step."""
    with running_server(tmp_path, listeners=("imap",)) as srv:
        srv.add_user("alice@example.test", PW)
        rec = Recorder()
        with plugged(srv.server, rec):
            im = imaplib.IMAP4("127.0.0.1", srv.port("imap"))
            try:
                im.login("alice@example.test", PW)
                typ, data = im.append("INBOX", r"(\Seen)", None, MSG)
                assert typ == "OK" and b"APPENDUID" in data[0]
                m1, m2 = MSG.replace(b"hi", b"one"), MSG.replace(b"hi", b"two")
                tag = im._new_tag()
                im.send(tag + b" APPEND INBOX {%d+}\r\n" % len(m1) + m1 + b" {%d+}\r\n" % len(m2) + m2 + b"\r\n")
                while True:
                    line = im.readline()
                    if line.startswith(tag):
                        break
                assert re.match(rb"\S+ OK \[APPENDUID \d+ 2:3\]", line), line
                im.logout()
            except BaseException:
                im.shutdown()
                raise
        assert rec.producers() == ["imap-append"] * 3
        assert all(stages == (ROUTING, rec.name) for _, _, stages in rec.seen)
        assert [b.endswith(s) for b, s in zip(_inbox(srv, "alice@example.test"),
                                               (MSG, m1, m2), strict=True)] == [True] * 3


ZONES = {"remote.test": {"": [("MX", 10, "mx.remote.test")], "mx": [("A", "127.0.0.1")]}}


def test_delivery_status_report_goes_through_the_pipeline(tmp_path):
    """A failure report of the queue runner reaches the local sender's INBOX through the pipeline (producer
    "report"), after routing like any recipient."""
    with receiver(rcpt=lambda a: "550 5.1.1 no such user here") as rx, outbound(tmp_path, ZONES) as ob:
        rec = Recorder()
        with plugged(ob.srv.server, rec):
            ob.runner.port = rx.port
            raw = b"From: alice@example.test\r\nTo: nobody@remote.test\r\nSubject: lost\r\n\r\nbody\r\n"
            ob.enqueue(raw, [QueueRecipientSpec("nobody@remote.test")])
            wait_for(lambda: not ob.queue_rows() and ob.inbox())
        assert rec.seen == [("report", "alice@example.test", (ROUTING, rec.name))]
        assert b"report-type=delivery-status" in ob.inbox()[0]


def test_cli_import_goes_through_the_pipeline(tmp_path):
    """`mailserver mail import`'s code hands each message to a pipeline; routed imports run every step, imports
    into a named mailbox are placements."""
    from mailserver.cli.mail import cli_pipeline, import_messages, messages_of

    with running_server(tmp_path, listeners=()) as srv:
        srv.add_user("alice@example.test", PW)
        srv.store.add_alias("team@example.test", "alice@example.test")
        pipeline = cli_pipeline(srv.config, srv.store)  # the CLI's own: an inline runner, no reactor
        rec = Recorder()
        pipeline.register(rec)
        mbox = b"From a@b Mon Jan  1 00:00:00 2024\nSubject: one\n\n>From the start\n\nFrom c@d Tue Jan  2 00:00:00 2024\nSubject: two\n\nx\n"
        routed = import_messages(pipeline, srv.store, "team@example.test", messages_of("box", mbox))
        placed = import_messages(pipeline, srv.store, "alice@example.test", [("m.eml", MSG)], mailbox="Archive")
        assert [o.ok for _, o in routed + placed] == [True] * 3
        assert [label for label, _ in routed] == ["box#1", "box#2"]
        assert [p for p, _, _ in rec.seen] == ["cli-import"] * 3
        assert rec.seen[0][1:] == ("alice@example.test", (ROUTING, rec.name))
        assert [o.stages for _, o in routed] == [(ROUTING, rec.name, "filter", QUOTA, MAILBOX)] * 2
        assert placed[0][1].stages == (ROUTING, rec.name, QUOTA, MAILBOX)
        assert _inbox(srv, "alice@example.test") == [b"Subject: one\r\n\r\nFrom the start\r\n",
                                                     b"Subject: two\r\n\r\nx\r\n"]
        assert _inbox(srv, "alice@example.test", "Archive") == [MSG]
        assert CHECKS  # the recorder is one of the check stages


def test_cli_import_command(tmp_path):
    """The verb itself: files and mbox files, exit code 1 and a line per message that could not be imported."""
    from tests.test_cli import run

    conf = tmp_path / "m.toml"
    conf.write_text(f'hostname = "mail.example.test"\ndata_dir = "{tmp_path}/data"\n'
                    '[[domain]]\nname = "example.test"\n')
    (tmp_path / "a.eml").write_bytes(b"Subject: file\n\nbody\n")
    assert run(conf, "user", "add", "alice@example.test", "--password-stdin", input="pw\n").returncode == 0
    r = run(conf, "mail", "import", "alice@example.test", str(tmp_path / "a.eml"))
    assert r.returncode == 0 and "imported 1 message(s)" in r.stdout, r.stderr
    r = run(conf, "mail", "import", "alice@example.test", "--mailbox", "Old", str(tmp_path / "a.eml"))
    assert r.returncode == 0, r.stderr
    r = run(conf, "mail", "import", "nobody@example.test", str(tmp_path / "a.eml"))
    assert r.returncode == 1 and "nobody@example.test" in r.stderr and "imported 0" in r.stdout
    from mailserver import config as config_mod
    from mailserver.service import open_store

    store = open_store(config_mod.load(str(conf)))
    try:
        acct = store.get_account("alice@example.test")
        inbox, old = store.get_mailbox(acct.id, "INBOX"), store.get_mailbox(acct.id, "Old")
        assert [store.read_blob(m.blob_id) for m in store.get_messages(inbox.id, [1])] == [b"Subject: file\r\n\r\nbody\r\n"]
        assert old.message_count == 1
    finally:
        store.engine.dispose()
