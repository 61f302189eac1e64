"""Replying inside a shared mailbox in the webmail over real HTTPS: the compose form's From is the shared address
when the user has a send grant on it, the message goes out from it, and the Sent copy is filed in the shared
mailbox's Sent (when it has one the user may insert into), else in the user's own."""

from __future__ import annotations

import re

import pytest

from storage.sendgrants import SEND_AS
from tests.harness import running_server
from tests.webmail.test_http import ALICE, BOB, PW, Client

DAVE, SALES, SUPPORT = "dave@example.test", "sales@example.test", "support@example.test"


@pytest.fixture
def site(tmp_path):
    with running_server(tmp_path, listeners=("https",)) as srv:
        for user in (ALICE, BOB, DAVE):
            srv.add_user(user, PW)
        boxes = {}
        for address, sent in ((SALES, True), (SUPPORT, False)):
            acct = srv.store.create_shared_mailbox(address)
            box = srv.store.get_mailbox(acct.id, "INBOX")
            srv.store.set_acl(box.id, BOB, "lrswi")
            if sent:
                srv.store.create_mailbox(acct.id, "Sent", "\\Sent")  # takes INBOX's ACL
            srv.store.grant_send(BOB, address, SEND_AS)
            srv.deliver(address, f"From: {DAVE}\r\nTo: {address}\r\nSubject: order\r\n"
                        "Message-ID: <o1@example.test>\r\n\r\nplease ship\r\n".encode())
            boxes[address] = (acct, box)
        yield srv, boxes


def _subjects(srv, account_id, mailbox) -> list[bytes]:
    mb = srv.store.get_mailbox(account_id, mailbox)
    if mb is None:
        return []
    uids = [m.uid for m in srv.store.list_messages(mb.id)]
    return [srv.store.read_blob(m.blob_id) for m in srv.store.get_messages(mb.id, uids)]


def _reply(c: Client, box) -> tuple[str, dict]:
    r, page = c.get(f"/compose?reply={box.id}:1&mode=reply")
    assert r.status == 200
    chosen = re.search(rb'<option value="([^"]+)" selected', page.split(b'id="from"', 1)[1]).group(1).decode()
    fields = {k.decode(): v.decode() for k, v in re.findall(rb'<input type="hidden" name="(\w+)" value="([^"]*)"',
                                                            page)}
    return chosen, fields


@pytest.mark.parametrize("address", [SALES, SUPPORT])
def test_reply_in_shared_mailbox_is_from_it(site, address):
    srv, boxes = site
    acct, box = boxes[address]
    c = Client(srv)
    c.login(BOB, PW)
    chosen, fields = _reply(c, box)
    assert chosen == address
    r, _ = c.post("/compose", {"_csrf": fields["_csrf"], "action": "send", "from": chosen, "to": DAVE,
                               "subject": "Re: order", "body": "shipped", "reply_ref": fields.get("reply_ref", ""),
                               "in_reply_to": "<o1@example.test>"})
    assert r.status == 303, r.status
    (got,) = _subjects(srv, srv.store.get_account(DAVE).id, "INBOX")
    assert f"From: {address}".encode() in got.split(b"\r\n\r\n", 1)[0]
    bob = srv.store.get_account(BOB)
    shared_sent, own_sent = _subjects(srv, acct.id, "Sent"), _subjects(srv, bob.id, "Sent")
    if address == SALES:  # has a Sent: the copy is there
        assert len(shared_sent) == 1 and b"shipped" in shared_sent[0] and own_sent == []
    else:
        assert shared_sent == [] and len(own_sent) == 1 and b"shipped" in own_sent[0]


def test_reply_in_own_inbox_keeps_own_address(site):
    srv, _boxes = site
    srv.deliver(BOB, f"From: {DAVE}\r\nTo: {BOB}\r\nSubject: hi\r\n\r\nhi\r\n".encode())
    inbox = srv.store.get_mailbox(srv.store.get_account(BOB).id, "INBOX")
    c = Client(srv)
    c.login(BOB, PW)
    chosen, _ = _reply(c, inbox)
    assert chosen == BOB
