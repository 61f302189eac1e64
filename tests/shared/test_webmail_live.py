"""The webmail's folder tree and event stream with a shared mailbox over real HTTPS: each member's own unread count
(per-reader \\Seen), a delivery to the shared mailbox is pushed on a member's stream, and once the share is taken
away its deliveries are not."""

from __future__ import annotations

import http.client
import json

import pytest

from tests.harness import running_server
from tests.webmail.test_http import ALICE, BOB, PW, Client, _ctx

SALES = "sales@example.test"


def _msg(subject: str) -> bytes:
    return f"From: c@example.org\r\nTo: {SALES}\r\nSubject: {subject}\r\n\r\nbody\r\n".encode()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("webmail-live"), listeners=("https",)) as srv:
        for u in (ALICE, BOB):
            srv.add_user(u, PW)
        acct = srv.store.create_shared_mailbox(SALES)
        box = srv.store.get_mailbox(acct.id, "INBOX")
        for u in (ALICE, BOB):
            srv.store.set_acl(box.id, u, "lrsw")
        srv.deliver(SALES, _msg("first order"))
        yield srv, box


def _unseen(c: Client, mailbox_id: int) -> int:
    r, body = c.get("/api/folders")
    assert r.status == 200
    return next(f["unseen"] for f in json.loads(body) if f["id"] == mailbox_id)


def test_unread_counts_are_each_readers_own(site):
    srv, box = site
    alice, bob = Client(srv), Client(srv)
    alice.login(ALICE)
    bob.login(BOB)
    assert _unseen(alice, box.id) == _unseen(bob, box.id) == 1
    r, page = bob.get("/settings")  # any page has the folder tree
    assert b"Shared/sales" in page and f'data-mailbox="{box.id}"'.encode() in page
    r, _ = alice.get(f"/m/{box.id}/1", headers={"Sec-Fetch-Site": "same-origin"})
    assert r.status == 200
    assert _unseen(alice, box.id) == 0 and _unseen(bob, box.id) == 1


def _events(resp, wanted: int) -> list[list[dict]]:
    """Read ``wanted`` change events (each a batch) from the stream."""
    out = []
    while len(out) < wanted:
        line = resp.readline()
        assert line, "stream closed"
        if line.startswith(b"data: "):
            out.append(json.loads(line[6:]))
    return out


def test_stream_carries_shared_deliveries_until_the_share_is_removed(site):
    srv, box = site
    bob = Client(srv)
    bob.login(BOB)
    bob_inbox = srv.store.get_mailbox(srv.store.get_account(BOB).id, "INBOX")
    conn = http.client.HTTPSConnection("127.0.0.1", srv.port("https"), context=_ctx(), timeout=30)
    try:
        conn.request("GET", "/events", headers={"Cookie": "; ".join(f"{k}={v}" for k, v in bob.cookies.items()),
                                                "Host": f"127.0.0.1:{srv.port('https')}"})
        resp = conn.getresponse()
        assert resp.status == 200
        srv.deliver(SALES, _msg("live order"))
        (batch,) = _events(resp, 1)
        assert {c["mailbox"] for c in batch} == {box.id}
        srv.store.delete_acl(box.id, BOB)
        srv.deliver(SALES, _msg("after removal"))
        srv.deliver(BOB, _msg("own 1"))
        srv.deliver(BOB, _msg("own 2"))
        batches = _events(resp, 2)
        assert {c["mailbox"] for b in batches for c in b} == {bob_inbox.id}
    finally:
        conn.close()
        srv.store.set_acl(box.id, BOB, "lrsw")
