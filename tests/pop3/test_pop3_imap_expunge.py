"""A POP3 session's deletions (at QUIT) reach an IMAP session that has the INBOX selected."""

from __future__ import annotations

import imaplib
import poplib
import time

from tests.harness import running_server


def test_pop3_quit_expunge_is_seen_by_imap(tmp_path):
    with running_server(tmp_path, listeners=("pop3", "imap")) as srv:
        srv.add_user("alice@example.test", "pw")
        for i in range(3):
            srv.deliver("alice@example.test", b"Subject: m%d\r\n\r\nbody %d\r\n" % (i, i))
        im = imaplib.IMAP4("127.0.0.1", srv.port("imap"))
        im.login("alice@example.test", "pw")
        typ, data = im.select("INBOX")
        assert data == [b"3"]
        pop = poplib.POP3("127.0.0.1", srv.port("pop3"))
        pop.user("alice@example.test")
        pop.pass_("pw")
        pop.dele(2)
        # Until QUIT nothing changes for IMAP (RFC 1939 6: deletion happens in the UPDATE state).
        im.noop()
        assert im.untagged_responses.get("EXPUNGE") is None
        pop.quit()
        deadline = time.time() + 5
        expunged = None
        while time.time() < deadline and not expunged:
            im.noop()
            expunged = im.untagged_responses.pop("EXPUNGE", None)
            time.sleep(0.05)
        assert expunged == [b"2"]
        typ, data = im.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        subjects = [d[1].strip() for d in data if isinstance(d, tuple)]
        assert subjects == [b"Subject: m0", b"Subject: m2"]
        im.logout()
