"""Domain admins, attachment downloads, users' allow/block lists and the "Why is this junk?" panel in the webmail:
an admin sees and acts on its domain's held copies (with their recipient), never another domain's (404); a held
copy's attachment downloads unless a virus was found; rules for addresses and whole domains steer the spam policy;
the Junk reader shows the stored verdict and "Not junk" / "Junk" move the message and set the keywords."""

from __future__ import annotations

import re
import time

import pytest

from mailserver.mime import parse_message
from storage.quarantine import HoldSpec
from tests.harness import running_server
from tests.inbound.mail import message, send
from tests.inbound.test_policy import _plug_scorer
from tests.test_cli import conf, run  # noqa: F401 (the fixture)
from tests.webmail.test_http import ALICE, BOB, PW, Client

CAROL = "carol@other.test"
SPAM = message("Cheap pills", body=b"Buy now, friend.\r\n", extra=b"X-Score: 9\r\n")
JUNKY = message("Junky", body=b"meh\r\n", extra=b"X-Score: 6\r\n")
ATTACHED = (b"From: x@remote.test\r\nTo: alice@example.test\r\nSubject: invoice\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
            b"--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=invoice.pdf\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--b--\r\n")


@pytest.fixture
def srv(tmp_path):
    with running_server(tmp_path, listeners=("smtp", "imap", "https"), domains=("example.test", "other.test"),
                        antispam={"junk": 5.0, "quarantine": 8.0, "refuse": 0.0}) as s:
        for a in (ALICE, BOB, CAROL):
            s.add_user(a, PW)
        _plug_scorer(s)
        yield s


def hold(srv, address, raw, reason="spam", facts=()):
    acct = srv.store.get_account(address)
    now = time.time()
    (qid,) = srv.store.hold_quarantined([HoldSpec(
        acct.id, srv.store.blobs.put(raw), parse_message(raw).to_json(), address, "x@remote.test", {}, {}, reason,
        "held", list(facts), "Q", now, now + 600)])
    return qid


def test_a_domain_admin_sees_and_acts_on_its_domains_quarantine_only(srv):
    bobs = hold(srv, BOB, SPAM)
    carols = hold(srv, CAROL, SPAM)
    alice = srv.store.get_account(ALICE)
    c = Client(srv)
    c.login()
    assert c.get(f"/quarantine/{bobs}")[0].status == 404  # not an admin yet
    srv.store.set_domain_admin(alice.id, srv.store.get_domain("example.test").id, True)
    r, page = c.get("/quarantine")
    assert r.status == 200 and b"(your domain)" in page and b"<th>For</th>" in page
    assert BOB.encode() in page and CAROL.encode() not in page
    assert c.get(f"/quarantine/{bobs}")[0].status == 200
    missing = c.get("/quarantine/999999")
    other = c.get(f"/quarantine/{carols}")
    assert other[0].status == 404 and other[1] == missing[1]
    token = c.csrf("/quarantine")
    r, _ = c.post("/quarantine/action", {"_csrf": token, "op": "release", "id": str(carols)})
    assert r.status == 404 and srv.store.quarantined(carols) is not None
    r, _ = c.post("/quarantine/action", {"_csrf": token, "op": "release", "id": str(bobs)})
    assert r.status == 303 and srv.store.quarantined(bobs) is None
    bob = srv.store.get_account(BOB)
    assert srv.store.get_mailbox(bob.id, "INBOX").message_count == 1


def test_user_admin_grant_revoke_list_on_the_cli(conf):  # noqa: F811
    assert run(conf, "domain", "add", "example.test").returncode == 0
    assert run(conf, "user", "add", ALICE, "--password-stdin", input="pw12345678\n").returncode == 0
    r = run(conf, "user", "admin", "grant", ALICE, "example.test")
    assert r.returncode == 0 and "is an admin of example.test" in r.stdout
    assert f"{ALICE}\texample.test" in run(conf, "user", "admin", "list").stdout
    assert run(conf, "user", "admin", "grant", "nobody@example.test", "example.test").returncode == 1
    assert run(conf, "user", "admin", "grant", ALICE, "nowhere.test").returncode == 1
    assert run(conf, "user", "admin", "revoke", ALICE, "example.test").returncode == 0
    assert run(conf, "user", "admin", "list", "--domain", "example.test").stdout.strip() == ""


def test_a_held_copys_attachment_downloads_unless_a_virus_was_found(srv):
    qid = hold(srv, ALICE, ATTACHED)
    virus = hold(srv, ALICE, ATTACHED, "virus", [{"check": "clamd", "name": "virus", "result": "Eicar"}])
    spam_with_virus = hold(srv, ALICE, ATTACHED, "spam", [{"check": "clamd", "name": "virus", "result": "Eicar"}])
    c = Client(srv)
    c.login()
    r, page = c.get(f"/quarantine/{qid}")
    (href,) = re.findall(rb'href="(/quarantine/\d+/part/\d+)"', page)
    r, body = c.get(href.decode())
    assert r.status == 200 and body == b"%PDF-1.4\n"
    assert r.headers["Content-Disposition"].startswith("attachment;") and "invoice.pdf" in r.headers[
        "Content-Disposition"]
    assert c.get(f"/quarantine/{qid}/part/0")[0].status == 404  # not an attachment
    for held in (virus, spam_with_virus):
        r, page = c.get(f"/quarantine/{held}")
        assert b"invoice.pdf" in page and b"not downloadable" in page and b"/part/" not in page
        assert c.get(f"/quarantine/{held}/part/{href.decode().rsplit('/', 1)[1]}")[0].status == 404
    bobs = hold(srv, BOB, ATTACHED)
    assert c.get(f"/quarantine/{bobs}/part/2")[0].status == 404


def test_allow_and_block_lists_for_addresses_and_domains_in_the_settings(srv):
    c = Client(srv)
    c.login()
    token = c.csrf("/settings")
    for pattern, rule in (("@remote.test", "block"), ("Someone@Remote.test", "allow")):
        r, _ = c.post("/settings", {"_csrf": token, "op": "rule_add", "pattern": pattern, "rule": rule})
        assert r.status == 303
    r, _ = c.post("/settings", {"_csrf": token, "op": "rule_add", "pattern": "not an address", "rule": "block"})
    assert r.status == 400
    assert c.post("/settings", {"op": "rule_add", "pattern": "@x.test", "rule": "block"})[0].status == 403
    _, page = c.get("/settings")
    assert b"@remote.test" in page and b"someone@remote.test" in page
    alice = srv.store.get_account(ALICE)
    assert srv.store.sender_rules(alice.id) == {"@remote.test": "block", "someone@remote.test": "allow"}
    # The address's own rule (allow) wins: a spam score that would quarantine only tags it.
    assert send(srv, SPAM, rcpts=(ALICE,))[0] == 250
    assert srv.store.get_mailbox(alice.id, "INBOX").message_count == 1
    # Another sender of the blocked domain goes to Junk even with a low score.
    other = message("Hi", extra=b"X-Score: 1\r\n").replace(b"someone@remote.test", b"other@remote.test")
    assert send(srv, other, rcpts=(ALICE,), sender="other@remote.test")[0] == 250
    assert srv.store.get_mailbox(alice.id, "Junk").message_count == 1
    r, _ = c.post("/settings", {"_csrf": token, "op": "rule_remove", "pattern": "@remote.test"})
    assert r.status == 303 and srv.store.sender_rules(alice.id) == {"someone@remote.test": "allow"}


def test_why_is_this_junk_shows_the_stored_verdict_and_not_junk_moves_it_back(srv):
    assert send(srv, JUNKY, rcpts=(ALICE,))[0] == 250
    alice = srv.store.get_account(ALICE)
    junk = srv.store.get_mailbox(alice.id, "Junk")
    (m,) = srv.store.list_messages(junk.id)
    c = Client(srv)
    c.login()
    r, page = c.get(f"/m/{junk.id}/{m.uid}")
    assert r.status == 200 and b"Why is this junk?" in page
    assert re.search(rb'id="junk-score">Our spam checks scored it <strong>6.00', page)
    assert b"TEST_HEADER" in page
    token = re.search(rb'name="_csrf" value="([^"]+)"', page).group(1).decode()
    assert c.post(f"/m/{junk.id}/action", {"action": "notjunk", "uid": str(m.uid)})[0].status == 403
    r, _ = c.post(f"/m/{junk.id}/action", {"_csrf": token, "action": "notjunk", "uid": str(m.uid)})
    assert r.status == 303
    inbox = srv.store.get_mailbox(alice.id, "INBOX")
    (moved,) = srv.store.get_messages(inbox.id, [x.uid for x in srv.store.list_messages(inbox.id)])
    assert "$NotJunk" in moved.keywords and "$Junk" not in moved.keywords
    r, page = c.get(f"/m/{inbox.id}/{moved.uid}")
    assert b"Why is this junk?" not in page and b'id="junk"' in page
    r, _ = c.post(f"/m/{inbox.id}/action", {"_csrf": token, "action": "junk", "uid": str(moved.uid)})
    (back,) = srv.store.get_messages(junk.id, [x.uid for x in srv.store.list_messages(junk.id)])
    assert "$Junk" in back.keywords and "$NotJunk" not in back.keywords


def test_the_panel_names_our_authentication_results_only():
    from webmail.verdict import explain

    head = (b"Authentication-Results: mail.example.test; spf=fail smtp.mailfrom=a@b.test;\r\n dkim=none;"
            b" dmarc=fail header.from=b.test\r\nAuthentication-Results: evil.test; spf=pass\r\n"
            b"X-Spam-Score: 7.50\r\nX-Spam-Symbols: A(5.00) B(2.50)\r\nX-Spam-Score: 0\r\n\r\nbody")
    ex = explain(head, "MAIL.example.test")
    assert ex.score == "7.50" and ex.symbols == ["A(5.00)", "B(2.50)"]
    assert [(c, r) for c, r, _ in ex.checks] == [("SPF", "fail"), ("DKIM", "none"), ("DMARC", "fail")]
    assert "may not send" in ex.checks[0][2]
    assert explain(b"Subject: x\r\n\r\n", "mail.example.test").empty


def test_an_admin_of_another_domain_still_sees_its_own_held_copies(srv):
    own = hold(srv, ALICE, SPAM)
    bobs = hold(srv, BOB, SPAM)
    carols = hold(srv, CAROL, SPAM)
    alice = srv.store.get_account(ALICE)
    srv.store.set_domain_admin(alice.id, srv.store.get_domain("other.test").id, True)
    c = Client(srv)
    c.login()
    _, page = c.get("/quarantine")
    ids = {int(i) for i in re.findall(rb'<tr data-id="(\d+)"', page)}
    assert ids == {own, carols}
    assert c.get(f"/quarantine/{bobs}")[0].status == 404


@pytest.mark.parametrize("fields", [
    {"op": "rule_add", "pattern": "@x.test", "rule": "block"},
    {"op": "rule_remove", "pattern": "@x.test"},
    {"op": "digest", "enabled": "off", "hour": "3"},
])
def test_every_settings_action_needs_the_csrf_token(srv, fields):
    alice = srv.store.get_account(ALICE)
    srv.store.set_sender_rule(alice.id, "@x.test", "allow")
    c = Client(srv)
    c.login()
    for extra in ({}, {"_csrf": "x" * 43}):
        assert c.post("/settings", dict(fields, **extra))[0].status == 403
    assert srv.store.sender_rules(alice.id) == {"@x.test": "allow"}
    assert srv.store.digest_settings([alice.id])[alice.id].enabled is None


def test_the_digest_setting_in_the_settings_page(srv):
    alice = srv.store.get_account(ALICE)
    c = Client(srv)
    c.login()
    token = c.csrf("/settings")
    r, _ = c.post("/settings", {"_csrf": token, "op": "digest", "enabled": "off", "hour": "6"})
    assert r.status == 303
    s = srv.store.digest_settings([alice.id])[alice.id]
    assert (s.enabled, s.hour) == (False, 6)
    _, page = c.get("/settings")
    assert b'<option value="off" selected>' in page and b'<option value="6" selected>' in page
    for bad in ({"enabled": "maybe", "hour": ""}, {"enabled": "", "hour": "24"}, {"enabled": "", "hour": "x"}):
        assert c.post("/settings", dict(bad, _csrf=token, op="digest"))[0].status == 400
    r, _ = c.post("/settings", {"_csrf": token, "op": "digest", "enabled": "", "hour": ""})
    s = srv.store.digest_settings([alice.id])[alice.id]
    assert r.status == 303 and (s.enabled, s.hour) == (None, None)
