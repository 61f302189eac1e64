"""The webmail over real HTTPS with a shared mailbox: it is in the member's folder tree under its shared name, its
page lists the message, reading it marks it \\Seen for that member only, a stranger gets the 404 of a missing id."""

from __future__ import annotations

import pytest

from tests.harness import running_server
from tests.webmail.test_http import ALICE, BOB, PW, Client

CAROL = "carol@example.test"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("webmail-shared"), listeners=("https",)) as srv:
        for u in (ALICE, BOB, CAROL):
            srv.add_user(u, PW)
        acct = srv.store.create_shared_mailbox("sales@example.test")
        box = srv.store.get_mailbox(acct.id, "INBOX")
        for u in (ALICE, BOB):
            srv.store.set_acl(box.id, u, "lrsw")
        srv.deliver("sales@example.test", b"From: c@example.org\r\nTo: sales@example.test\r\n"
                    b"Subject: shared order\r\n\r\nplease ship\r\n")
        yield srv, box


def test_shared_mailbox_in_the_webmail(site):
    srv, box = site
    alice = Client(srv)
    alice.login(ALICE)
    r, page = alice.get(f"/m/{box.id}")
    assert r.status == 200 and b"shared order" in page and b"Shared/sales" in page
    r, page = alice.get(f"/m/{box.id}/1", headers={"Sec-Fetch-Site": "same-origin"})
    assert r.status == 200 and b"please ship" in page
    assert srv.store.seen_uids(box.id, srv.store.get_account(ALICE).id) == {1}
    assert srv.store.seen_uids(box.id, srv.store.get_account(BOB).id) == set()
    carol = Client(srv)
    carol.login(CAROL)
    r, page = carol.get(f"/m/{box.id}")
    missing, missing_page = carol.get(f"/m/{box.id + 100000}")
    assert r.status == missing.status == 404 and page == missing_page
