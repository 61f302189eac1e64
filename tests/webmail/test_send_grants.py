"""Webmail sending with a granted From: the compose page offers the granted addresses, send-as sends as the address,
send-on-behalf names the account in Sender: (and keeps its own envelope sender); others may not pick them."""

from __future__ import annotations

import re

import pytest

from storage.sendgrants import SEND_AS, SEND_ON_BEHALF
from tests.harness import running_server
from tests.webmail.test_http import ALICE, BOB, PW, Client

CAROL, DAVE, SALES = "carol@example.test", "dave@example.test", "sales@example.test"


@pytest.fixture
def site(tmp_path):
    with running_server(tmp_path, listeners=("https",)) as srv:
        for user in (ALICE, BOB, CAROL, DAVE):
            srv.add_user(user, PW)
        srv.store.update_account(srv.store.get_account(ALICE).id, display_name="Alice A")
        srv.store.grant_send(ALICE, SALES, SEND_AS)
        srv.store.grant_send(ALICE, BOB, SEND_ON_BEHALF)
        yield srv


def _messages(srv, user, mailbox="INBOX") -> list[bytes]:
    mb = srv.store.get_mailbox(srv.store.get_account(user).id, mailbox)
    uids = [m.uid for m in srv.store.list_messages(mb.id)]
    return [srv.store.read_blob(m.blob_id) for m in srv.store.get_messages(mb.id, uids)]


def _head(raw: bytes) -> str:
    return raw.split(b"\r\n\r\n", 1)[0].decode()


def _send(c, from_addr, subject):
    token = c.csrf("/compose")
    return c.post("/compose", {"_csrf": token, "action": "send", "from": from_addr, "to": DAVE, "subject": subject,
                               "body": "hello"})


def _from_select(page: bytes) -> bytes:
    return page.split(b'id="from"', 1)[1].split(b"</select>", 1)[0]


def test_compose_offers_the_granted_addresses(site):
    c = Client(site)
    c.login(ALICE, PW)
    _, page = c.get("/compose")
    options = re.findall(rb'<option value="([^"]+)"[^>]*>([^<]*)</option>', _from_select(page))
    values = [v.decode() for v, _ in options]
    assert values[0] == ALICE and SALES in values and BOB in values
    labels = dict((v.decode(), t.decode()) for v, t in options)
    assert "(on behalf)" in labels[BOB] and "(on behalf)" not in labels[SALES]
    c2 = Client(site)
    c2.login(CAROL, PW)
    _, page = c2.get("/compose")
    assert re.findall(rb'<option value="([^"]+)"', _from_select(page)) == [CAROL.encode()]


def test_send_as_from_the_webmail(site):
    c = Client(site)
    c.login(ALICE, PW)
    r, _ = _send(c, SALES, "as sales")
    assert r.status == 303, r.status
    (raw,) = _messages(site, DAVE)
    head = _head(raw)
    assert "Return-Path: <sales@example.test>" in head
    assert re.search(r"(?m)^From: sales@example\.test\r?$", head)
    assert not re.search(r"(?im)^Sender:", head)


def test_send_on_behalf_from_the_webmail_names_the_account(site):
    c = Client(site)
    c.login(ALICE, PW)
    r, _ = _send(c, BOB, "for bob")
    assert r.status == 303, r.status
    (raw,) = _messages(site, DAVE)
    head = _head(raw)
    assert "Return-Path: <alice@example.test>" in head
    assert re.search(r"(?m)^From: bob@example\.test\r?$", head)
    assert len(re.findall(r"(?im)^Sender:", head)) == 1
    assert re.search(r"(?m)^Sender: Alice A <alice@example\.test>\r?$", head)
    (sent,) = _messages(site, ALICE, "Sent")  # the Sent copy says the same
    assert re.search(r"(?m)^Sender: Alice A <alice@example\.test>\r?$", _head(sent))


def test_ungranted_and_revoked_addresses_are_refused(site):
    c = Client(site)
    c.login(CAROL, PW)
    for addr in (SALES, BOB):
        r, page = _send(c, addr, "not mine")
        assert r.status == 400 and b"may not send as" in page
    c = Client(site)
    c.login(ALICE, PW)
    site.store.revoke_send(ALICE, SALES)
    r, page = _send(c, SALES, "revoked")
    assert r.status == 400 and b"may not send as" in page
    assert _messages(site, DAVE) == []


def test_a_reply_to_mail_sent_to_a_granted_address_is_from_that_address(site):
    site.deliver(ALICE, b"From: Carol <carol@example.test>\r\nTo: sales@example.test\r\nSubject: offer\r\n"
                        b"Message-ID: <offer-1@example.test>\r\n\r\nPlease send an offer.\r\n")
    inbox = site.store.get_mailbox(site.store.get_account(ALICE).id, "INBOX")
    c = Client(site)
    c.login(ALICE, PW)
    _, page = c.get(f"/compose?reply={inbox.id}:1&mode=reply")
    selected = re.findall(rb'<option value="([^"]+)" selected', _from_select(page))
    assert selected == [SALES.encode()]
