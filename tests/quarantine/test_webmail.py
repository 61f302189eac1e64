"""The quarantine end to end: a message the spam policy holds is invisible to IMAP (SELECT, SEARCH, FETCH) and
POP3; the webmail lists it with its reason, releases it into INBOX byte-exact (seen over IMAP) once, deletes it;
another account's id is the same 404 as a missing one; every action needs the CSRF token; a virus-held copy's
attachments are listed and never served (other copies' attachments download: tests/quarantine/test_roles.py)."""

from __future__ import annotations

import imaplib
import poplib
import re
import time

import pytest

from storage.quarantine import HoldSpec
from tests.harness import running_server
from tests.inbound.mail import message, send
from tests.inbound.test_policy import _plug_scorer
from tests.webmail.test_http import ALICE, BOB, PW, Client

SPAM = message("Cheap pills", body=b"Buy now, friend.\r\n", extra=b"X-Score: 9\r\n")


@pytest.fixture
def srv(tmp_path):
    with running_server(tmp_path, listeners=("smtp", "imap", "pop3", "https"),
                        antispam={"quarantine": 8.0, "refuse": 0.0}) as s:
        s.add_user(ALICE, PW)
        s.add_user(BOB, PW)
        _plug_scorer(s)
        yield s


def held(srv, address=ALICE):
    acct = srv.store.get_account(address)
    return srv.store.list_quarantined(account_ids=[acct.id])[1]


def imap(srv, user=ALICE):
    c = imaplib.IMAP4("127.0.0.1", srv.port("imap"))
    c.login(user, PW)
    return c


def test_a_held_message_is_invisible_to_imap_and_pop3(srv):
    code, _ = send(srv, SPAM, rcpts=(ALICE,))
    assert code == 250
    (item,) = held(srv)
    assert item.reason == "spam" and item.subject == "Cheap pills"
    c = imap(srv)
    try:
        for box in ("INBOX", "Junk"):
            typ, data = c.select(box)
            assert typ == "OK" and data == [b"0"]
            assert c.search(None, "ALL") == ("OK", [b""])
            assert c.uid("SEARCH", "SUBJECT", "pills") == ("OK", [b""])
            typ, data = c.uid("FETCH", "1:*", "(BODY.PEEK[])")
            assert typ == "OK" and data in ([None], [])
    finally:
        c.logout()
    p = poplib.POP3("127.0.0.1", srv.port("pop3"), timeout=30)
    try:
        p.user(ALICE)
        p.pass_(PW)
        assert p.stat() == (0, 0) and p.list()[1] == []
    finally:
        p.quit()


def test_the_list_shows_the_reason_and_release_puts_it_in_inbox_byte_exact_once(srv):
    send(srv, SPAM, rcpts=(ALICE,))
    (item,) = held(srv)
    exact = srv.store.read_blob(item.blob_id)
    c = Client(srv)
    c.login()
    r, page = c.get("/quarantine")
    assert r.status == 200 and b"Cheap pills" in page and b"It looks like spam." in page
    r, page = c.get(f"/quarantine/{item.id}")
    assert r.status == 200 and b"Why was this held?" in page and b"Spam score 9.00 (TEST_HEADER)" in page
    assert b"Buy now, friend." in page and b"X-Score: 9" in page  # the text preview and the headers
    token = c.csrf("/quarantine")
    r, _ = c.post("/quarantine/action", {"_csrf": token, "op": "release", "id": str(item.id)})
    assert r.status == 303 and r.headers["Location"] == "/quarantine?notice=released"
    assert held(srv) == []
    m = imap(srv)
    try:
        assert m.select("INBOX") == ("OK", [b"1"])
        typ, data = m.uid("FETCH", "1", "(BODY.PEEK[])")
        assert data[0][1] == exact
    finally:
        m.logout()
    r, _ = c.post("/quarantine/action", {"_csrf": token, "op": "release", "id": str(item.id)})
    assert r.status == 404  # released once: the id is gone
    assert srv.store.get_mailbox(srv.store.get_account(ALICE).id, "INBOX").message_count == 1


def test_search_finds_by_sender_and_subject(srv):
    send(srv, SPAM, rcpts=(ALICE,))
    send(srv, message("Other offer", extra=b"X-Score: 9\r\n"), rcpts=(ALICE,), sender="deals@elsewhere.test")
    c = Client(srv)
    c.login()
    _, page = c.get("/quarantine?q=elsewhere")
    assert b"Other offer" in page and b"Cheap pills" not in page
    _, page = c.get("/quarantine?q=PILLS")
    assert b"Cheap pills" in page and b"Other offer" not in page


def test_delete_and_bulk_delete_remove_them(srv):
    for _ in range(3):
        send(srv, SPAM, rcpts=(ALICE,))
    items = held(srv)
    c = Client(srv)
    c.login()
    token = c.csrf("/quarantine")
    r, _ = c.post("/quarantine/action", {"_csrf": token, "op": "delete", "id": [str(i.id) for i in items[:2]]})
    assert r.status == 303 and [i.id for i in held(srv)] == [items[2].id]
    r, _ = c.post("/quarantine/action", {"_csrf": token, "op": "block", "id": str(items[2].id)})
    assert r.status == 303 and held(srv) == []
    acct = srv.store.get_account(ALICE)
    assert srv.store.sender_rules(acct.id) == {"someone@remote.test": "block"}
    assert srv.store.get_mailbox(acct.id, "INBOX").message_count == 0


def test_release_and_allow_keeps_the_senders_next_message_out_of_the_quarantine(srv):
    send(srv, SPAM, rcpts=(ALICE,))
    (item,) = held(srv)
    c = Client(srv)
    c.login()
    r, _ = c.post("/quarantine/action", {"_csrf": c.csrf("/quarantine"), "op": "allow", "id": str(item.id)})
    assert r.status == 303
    assert send(srv, SPAM, rcpts=(ALICE,))[0] == 250
    assert held(srv) == []
    assert srv.store.get_mailbox(srv.store.get_account(ALICE).id, "INBOX").message_count == 2


def test_another_accounts_quarantine_id_is_the_same_404_as_a_missing_one(srv):
    send(srv, SPAM, rcpts=(BOB,))
    (bobs,) = held(srv, BOB)
    c = Client(srv)
    c.login()
    token = c.csrf("/quarantine")
    answers = [c.get(f"/quarantine/{bobs.id}"), c.get(f"/quarantine/{bobs.id + 1000}")]
    assert [r.status for r, _ in answers] == [404, 404] and answers[0][1] == answers[1][1]
    assert b"Cheap pills" not in answers[0][1]
    for op in ("release", "allow", "delete", "block"):
        r, body = c.post("/quarantine/action", {"_csrf": token, "op": op, "id": str(bobs.id)})
        assert r.status == 404 and body == answers[1][1], op
    _, page = c.get("/quarantine")
    assert b"Cheap pills" not in page
    assert [i.id for i in held(srv, BOB)] == [bobs.id]


@pytest.mark.parametrize("op", ["release", "allow", "delete", "block"])
def test_every_action_needs_the_csrf_token(srv, op):
    send(srv, SPAM, rcpts=(ALICE,))
    (item,) = held(srv)
    c = Client(srv)
    c.login()
    for fields in ({"op": op, "id": str(item.id)}, {"_csrf": "x" * 43, "op": op, "id": str(item.id)}):
        r, _ = c.post("/quarantine/action", fields)
        assert r.status == 403, fields
    assert [i.id for i in held(srv)] == [item.id]
    assert srv.store.get_mailbox(srv.store.get_account(ALICE).id, "INBOX").message_count == 0


def test_a_virus_held_copys_attachment_is_listed_and_cannot_be_downloaded(srv):
    raw = (b"From: x@remote.test\r\nTo: alice@example.test\r\nSubject: invoice\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
           b"--b\r\nContent-Type: application/zip\r\nContent-Disposition: attachment; filename=invoice.zip\r\n"
           b"Content-Transfer-Encoding: base64\r\n\r\nUEsDBA==\r\n--b--\r\n")
    from mailserver.mime import parse_message

    acct = srv.store.get_account(ALICE)
    now = time.time()
    (qid,) = srv.store.hold_quarantined([HoldSpec(
        acct.id, srv.store.blobs.put(raw), parse_message(raw).to_json(), ALICE, "x@remote.test", {}, {}, "virus",
        "A virus was found: Eicar-Test-Signature", [{"check": "virus-scan", "name": "virus",
                                                      "result": "Eicar-Test-Signature"}], "Q", now, now + 60)])
    c = Client(srv)
    c.login()
    r, page = c.get(f"/quarantine/{qid}")
    assert r.status == 200 and b"invoice.zip" in page and b"not downloadable" in page
    assert b"Eicar-Test-Signature" in page
    assert not re.search(rb'href="[^"]*(part|download|source)[^"]*"', page.split(b'id="quarantined-message"')[1])
    for path in (f"/quarantine/{qid}/part/1", f"/quarantine/{qid}/part/2", f"/quarantine/{qid}/source",
                 f"/quarantine/{qid}/download"):
        assert c.get(path)[0].status == 404, path
