"""Delegation from the webmail settings over real HTTPS: a user shares a folder of their own read-only or read-write
(CSRF-protected POST, written by the store's ACL functions), sees the current shares and removes one; a folder of
someone else is the 404 of a missing one and writes nothing; a read-only share lets the other user read the folder
over IMAP but not delete from it."""

from __future__ import annotations

import imaplib
import re

import pytest

from tests.harness import running_server
from tests.webmail.test_http import ALICE, BOB, PW, Client


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("webmail-delegation"), listeners=("https", "imap")) as srv:
        for u in (ALICE, BOB):
            srv.add_user(u, PW)
        alice = srv.store.get_account(ALICE)
        srv.store.create_mailbox(alice.id, "Projects")
        box = srv.store.get_mailbox(alice.id, "Projects")
        srv.deliver(ALICE, b"From: c@example.org\r\nTo: alice@example.test\r\nSubject: plan\r\n\r\nplan\r\n",
                    mailbox="Projects")
        yield srv, box


def _share(c: Client, token: str, mb: int, who: str, level: str = "read", op: str = "share"):
    return c.post("/settings", {"_csrf": token, "op": op, "mb": str(mb), "who": who, "level": level})


def test_share_read_only_then_remove(site):
    srv, box = site
    c = Client(srv)
    c.login(ALICE)
    token = c.csrf()
    r, _ = c.post("/settings", {"op": "share", "mb": str(box.id), "who": BOB, "level": "read"})
    assert r.status == 403 and srv.store.get_acl(box.id) == []
    r, _ = _share(c, token, box.id, BOB.upper())
    assert r.status == 303, r.status
    assert srv.store.get_acl(box.id) == [(BOB, "lrs")]
    r, page = c.get("/settings")
    listed = re.search(rb'<table class="shares">.*?</table>', page, re.S).group(0)
    assert b"Projects" in listed and BOB.encode() in listed and b"read-only" in listed
    r, _ = _share(c, token, box.id, BOB, "write")
    assert r.status == 303 and srv.store.get_acl(box.id) == [(BOB, "lrswipkxte")]
    r, _ = _share(c, token, box.id, BOB, "all")
    assert r.status == 400 and srv.store.get_acl(box.id) == [(BOB, "lrswipkxte")]
    for who in ("anyone", "$staff", "", "x" * 400):
        r, _ = _share(c, token, box.id, who)
        assert r.status == 400, who
    r, _ = _share(c, token, box.id, BOB, op="unshare")
    assert r.status == 303 and srv.store.get_acl(box.id) == []


def test_someone_elses_folder_is_refused(site):
    srv, _box = site
    bob_inbox = srv.store.get_mailbox(srv.store.get_account(BOB).id, "INBOX")
    c = Client(srv)
    c.login(ALICE)
    token = c.csrf()
    r, page = _share(c, token, bob_inbox.id, ALICE, "write")
    missing, missing_page = _share(c, token, bob_inbox.id + 100000, ALICE, "write")
    assert r.status == missing.status == 404 and page == missing_page
    assert srv.store.get_acl(bob_inbox.id) == []
    # Read access to a folder (lrs) is not the "a" right: it cannot be passed on either.
    srv.store.set_acl(bob_inbox.id, ALICE, "lrs")
    try:
        r, _ = _share(c, token, bob_inbox.id, "carol@example.test")
        assert r.status == 404 and srv.store.get_acl(bob_inbox.id) == [(ALICE, "lrs")]
    finally:
        srv.store.delete_acl(bob_inbox.id, ALICE)


def test_read_only_share_reads_but_does_not_delete_over_imap(site):
    srv, box = site
    c = Client(srv)
    c.login(ALICE)
    token = c.csrf()
    r, _ = _share(c, token, box.id, BOB, "read")
    assert r.status == 303
    imap = imaplib.IMAP4("127.0.0.1", srv.port("imap"))
    try:
        imap.login(BOB, PW)
        typ, data = imap.select(f'"Other Users/{ALICE}/Projects"')
        assert typ == "OK" and data == [b"1"]
        typ, data = imap.uid("FETCH", "1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert typ == "OK" and b"Subject: plan" in data[0][1]
        typ, _ = imap.uid("STORE", "1:*", "+FLAGS", r"(\Deleted)")
        assert typ == "NO"
        typ, _ = imap.expunge()
        assert typ == "NO"
        typ, data = imap.select(f'"Other Users/{ALICE}/Projects"')
        assert typ == "OK" and data == [b"1"]
        imap.logout()
    finally:
        if imap.state != "LOGOUT":
            imap.shutdown()
        _share(c, token, box.id, BOB, op="unshare")
