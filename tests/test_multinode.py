"""Two server processes' worth of MailServer on one PostgreSQL: change events cross via LISTEN/NOTIFY."""

from __future__ import annotations

import time

import pytest

from storage.changes import EXISTS, Change
from storage.pgnotify import decode, encode_batches
from tests import harness
from tests.harness import running_server


def test_payloads_split_under_the_postgres_limit():
    changes = [Change(EXISTS, 1, 2, uid=i, modseq=i, keywords=("$Label1",) * 5) for i in range(1, 400)]
    payloads = encode_batches(changes, "me")
    assert len(payloads) > 1 and all(len(p) <= 8000 for p in payloads)
    back = [c for p in payloads for c in decode(p)[1]]
    assert back == changes


@pytest.mark.postgres
def test_delivery_on_one_node_reaches_sessions_on_the_other(tmp_path):
    base = harness.test_database_url()
    if not base:
        pytest.skip("MAILSERVER_TEST_DATABASE_URL not set")
    url = harness.fresh_pg_url(base)
    try:
        with running_server(tmp_path / "a", listeners=(), database_url=url) as node_a, \
                running_server(tmp_path / "b", listeners=(), database_url=url) as node_b:
            acct = node_a.add_user("alice@example.test", "pw")
            seen: list[Change] = []
            harness.call(node_b.server.hub.subscribe, acct.id, seen.extend)
            assert node_b.server.pg_bridge.ready.wait(10)
            assert node_a.server.pg_bridge.ready.wait(10)
            res = node_a.deliver("alice@example.test", b"Subject: hi\r\n\r\nfrom node a\r\n")
            assert res.ok
            deadline = time.time() + 10
            while not seen and time.time() < deadline:
                time.sleep(0.02)
            assert [(c.kind, c.uid) for c in seen] == [(EXISTS, res.uid)]
            # Node a does not hear its own changes twice.
            mine: list[Change] = []
            harness.call(node_a.server.hub.subscribe, acct.id, mine.extend)
            node_b.deliver("alice@example.test", b"Subject: hi\r\n\r\nfrom node b\r\n")
            deadline = time.time() + 10
            while not mine and time.time() < deadline:
                time.sleep(0.02)
            time.sleep(0.2)
            assert len(mine) == 1 and len(seen) == 2
    finally:
        harness.drop_pg_schema(base, url)
