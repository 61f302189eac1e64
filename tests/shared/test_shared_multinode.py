"""Two server processes' worth of MailServer on one PostgreSQL: members of a shared mailbox on different nodes get
each other's deliveries and flag changes (events are keyed by mailbox, so every reader's node hears them), and
\\Seen stays each reader's own."""

from __future__ import annotations

import pytest

from tests import harness
from tests.harness import running_server
from tests.imap.imap_client import PASSWORD, Raw
from tests.shared.test_shared_flow import done, idle, smtp_deliver, wait_for


@pytest.mark.postgres
def test_shared_mailbox_across_two_nodes(tmp_path):
    base = harness.test_database_url()
    if not base:
        pytest.skip("MAILSERVER_TEST_DATABASE_URL not set")
    url = harness.fresh_pg_url(base)
    try:
        with running_server(tmp_path / "a", listeners=("imap", "smtp"), database_url=url) as node_a, \
                running_server(tmp_path / "b", listeners=("imap",), database_url=url) as node_b:
            assert node_a.server.pg_bridge.ready.wait(10) and node_b.server.pg_bridge.ready.wait(10)
            for u in ("m1", "m2"):
                node_a.add_user(f"{u}@example.test", PASSWORD)
            store = node_a.store
            store.add_group("sales-team")
            store.set_group_member("sales-team", "m1@example.test")
            store.set_group_member("sales-team", "m2@example.test")
            acct = store.create_shared_mailbox("sales@example.test")
            store.set_acl(store.get_mailbox(acct.id, "INBOX").id, "$sales-team", "lrswite")
            a, b = Raw(node_a.port("imap")), Raw(node_b.port("imap"))
            for raw, user in ((a, "m1"), (b, "m2")):
                raw.login(f"{user}@example.test")
                assert b" OK " in raw.cmd("S", 'SELECT "Shared/sales"')[-1]
                idle(raw)
            smtp_deliver(node_a, "sales@example.test", "across nodes")
            assert wait_for(a, b"EXISTS") == b"* 1 EXISTS\r\n"
            assert wait_for(b, b"EXISTS") == b"* 1 EXISTS\r\n"  # node b heard node a's delivery
            done(a)
            assert b" OK " in a.cmd("s", "STORE 1 +FLAGS (\\Answered \\Seen)")[-1]
            line = wait_for(b, b"FETCH")
            assert b"\\Answered" in line and b"\\Seen" not in line
            done(b)
            assert b"\\Seen" not in b"".join(b.cmd("f", "FETCH 1 FLAGS"))
            assert b"* STATUS \"Shared/sales\" (UNSEEN 1)\r\n" in b.cmd("t", 'STATUS "Shared/sales" (UNSEEN)')
            assert b"* STATUS \"Shared/sales\" (UNSEEN 0)\r\n" in a.cmd("t", 'STATUS "Shared/sales" (UNSEEN)')
            a.close()
            b.close()
    finally:
        harness.drop_pg_schema(base, url)
