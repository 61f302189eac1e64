"""The quarantine store on SQLite and (with MAILSERVER_TEST_DATABASE_URL) PostgreSQL: one blob for every recipient,
invisible to mailbox reads and quota, the cap, release exactly once (also from two nodes at a time), expiry."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from storage import migrate
from storage.blobs import FileBlobStore
from storage.db import make_engine
from storage.models import Blob
from storage.quarantine import HoldSpec
from storage.store import NotFound, QuotaExceeded, Store
from tests import harness

PARSED = {"subject": "Cheap pills", "from_addr": "Spammer <s@spam.test>", "header_size": 30}
RAW = b"Subject: Cheap pills\r\nFrom: s@spam.test\r\n\r\nbuy now\r\n"


@pytest.fixture
def store(tmp_path, database_url):
    with harness.migrated_store(tmp_path, database_url) as s:
        yield s


def spec(store, account, *, raw=RAW, arrived=None, expires=None, sender="s@spam.test", subject=None):
    now = time.time() if arrived is None else arrived
    parsed = dict(PARSED, subject=subject) if subject else PARSED
    return HoldSpec(account.id, store.blobs.put(raw), parsed, account.address, sender, {"sender": sender},
                    {"ip": "192.0.2.7"}, "spam", "Spam score 9.00 (TEST)", [{"name": "score", "score": 9.0}], "Q1",
                    now, now + 3600 if expires is None else expires)


def refcount(store, blob_id):
    with store.transaction(write=False) as conn:
        return conn.execute(select(Blob.__table__.c.refcount).where(Blob.__table__.c.id == blob_id)).scalar()


def test_recipients_of_one_message_share_one_blob(store):
    a, b = store.add_account("a@example.test", "x"), store.add_account("b@example.test", "x")
    ids = store.hold_quarantined([spec(store, a), spec(store, b)])
    items = [store.quarantined(i) for i in ids]
    assert items[0].blob_id == items[1].blob_id and refcount(store, items[0].blob_id) == 2
    assert items[0].envelope == {"sender": "s@spam.test"} and items[0].client == {"ip": "192.0.2.7"}
    assert items[0].facts == ({"name": "score", "score": 9.0},) and items[0].account == "a@example.test"


def test_held_copies_count_against_no_mailbox_and_no_quota(store):
    a = store.add_account("a@example.test", "x", quota_bytes=10)
    store.hold_quarantined([spec(store, a)])
    assert store.quota(a.id)[0] == 0
    assert all(m.message_count == 0 for m in store.list_mailboxes(a.id))


def test_the_cap_counts_per_account_one_past_it_is_none(store):
    a, b = store.add_account("a@example.test", "x"), store.add_account("b@example.test", "x")
    assert None not in store.hold_quarantined([spec(store, a), spec(store, a)], cap=2)
    assert store.hold_quarantined([spec(store, a), spec(store, b)], cap=2)[0] is None
    assert store.count_quarantined(a.id) == 2 and store.count_quarantined(b.id) == 1


def test_listing_is_newest_first_paginated_and_searchable(store):
    a, b = store.add_account("a@example.test", "x"), store.add_account("b@example.test", "x")
    for n in range(5):
        store.hold_quarantined([spec(store, a, raw=RAW + b"%d" % n, arrived=1000.0 + n, subject=f"offer {n}",
                                     sender=f"s{n}@spam.test")])
    store.hold_quarantined([spec(store, b)])
    total, page = store.list_quarantined(account_ids=[a.id], offset=1, limit=2)
    assert total == 5 and [i.subject for i in page] == ["offer 3", "offer 2"]
    assert [i.subject for i in store.list_quarantined(account_ids=[a.id], text="S4@SPAM")[1]] == ["offer 4"]
    assert store.list_quarantined(account_ids=[a.id], text="100%")[0] == 0  # LIKE wildcards are literal
    assert store.list_quarantined(text="offer")[0] == 5


def test_release_delivers_byte_exact_once_and_keeps_the_blob_count(store):
    a = store.add_account("a@example.test", "x")
    (qid,) = store.hold_quarantined([spec(store, a)])
    item, result = store.release_quarantined(qid).value
    assert result.ok and refcount(store, item.blob_id) == 1
    inbox = store.get_mailbox(a.id, "INBOX")
    (m,) = store.get_messages(inbox.id, [result.uid])
    assert store.read_blob(m.blob_id) == RAW
    with pytest.raises(NotFound):
        store.release_quarantined(qid)
    assert store.quarantined(qid) is None


def test_release_into_a_full_mailbox_keeps_it_held(store):
    a = store.add_account("a@example.test", "x", quota_bytes=5)
    (qid,) = store.hold_quarantined([spec(store, a)])
    with pytest.raises(QuotaExceeded):
        store.release_quarantined(qid)
    assert store.quarantined(qid) is not None


def test_delete_and_expiry_drop_the_reference_and_the_collector_removes_the_body(store):
    a = store.add_account("a@example.test", "x")
    now = time.time()
    keep, old, gone = store.hold_quarantined([spec(store, a, raw=RAW + b"1", expires=now + 100),
                                              spec(store, a, raw=RAW + b"2", expires=now - 1),
                                              spec(store, a, raw=RAW + b"3")])
    blob_old = store.quarantined(old).blob_id
    assert [i.id for i in store.delete_quarantined([gone, 999999])] == [gone]
    assert [i.id for i in store.expire_quarantined(now)] == [old]
    assert refcount(store, blob_old) == 0
    assert store.collect_blobs(grace=-1) == 2 and not store.blobs.exists(blob_old)
    assert [i.id for i in store.list_quarantined()[1]] == [keep]


def test_removing_the_account_removes_its_held_copies(store):
    a = store.add_account("a@example.test", "x")
    (qid,) = store.hold_quarantined([spec(store, a)])
    blob = store.quarantined(qid).blob_id
    store.remove_account("a@example.test")
    assert store.list_quarantined()[0] == 0 and refcount(store, blob) == 0


def test_a_digest_link_acts_once(store):
    assert store.use_quarantine_token("t1", time.time() + 60) is True
    assert store.use_quarantine_token("t1", time.time() + 60) is False


def test_sender_rules_and_domain_admins(store):
    a = store.add_account("a@example.test", "x")
    store.set_sender_rule(a.id, "Friend@Example.ORG", "allow")
    store.set_sender_rule(a.id, "bad@spam.test", "block")
    assert store.sender_rules(a.id, ["friend@example.org", "x@y"]) == {"friend@example.org": "allow"}
    store.set_sender_rule(a.id, "bad@spam.test", None)
    assert store.sender_rules(a.id) == {"friend@example.org": "allow"}
    domain = store.get_domain("example.test")
    store.set_domain_admin(a.id, domain.id)
    assert store.admin_domains(a.id) == [domain.id]


def test_two_nodes_releasing_at_once_deliver_once(tmp_path, database_url):
    """Two Store objects (two nodes' engines) on one database race to release: one delivers, one gets NotFound."""
    url = database_url or f"sqlite:///{tmp_path}/db.sqlite3"
    engines = [make_engine(url), make_engine(url)]
    migrate.upgrade(engines[0])
    blobs = FileBlobStore(Path(tmp_path) / "blobs")
    nodes = [Store(e, blobs) for e in engines]
    nodes[0].add_domain("example.test")
    a = nodes[0].add_account("a@example.test", "x")
    try:
        for _ in range(5):
            (qid,) = nodes[0].hold_quarantined([spec(nodes[0], a)])
            results, start = [], threading.Barrier(2)

            def release(node, qid=qid, results=results, start=start):
                start.wait()
                try:
                    results.append(node.release_quarantined(qid).value[1].ok)
                except NotFound:
                    results.append("gone")

            threads = [threading.Thread(target=release, args=(n,)) for n in nodes]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            assert sorted(results, key=str) == [True, "gone"]
        assert nodes[1].get_mailbox(a.id, "INBOX").message_count == 5
    finally:
        for e in engines:
            e.dispose()


def test_domain_rules_apply_to_every_address_of_the_domain_and_the_address_rule_wins(store):
    from storage.errors import Invalid
    from storage.quarantine import rule_for

    a = store.add_account("a@example.test", "x")
    store.set_sender_rule(a.id, "@Spam.test", "block")
    store.set_sender_rule(a.id, "friend@spam.test", "allow")
    found = store.sender_rules(a.id, ["friend@spam.test", "other@spam.test", "x@elsewhere.test"])
    assert found == {"@spam.test": "block", "friend@spam.test": "allow"}
    assert [rule_for(found, x) for x in ("Friend@spam.test", "other@spam.test", "x@elsewhere.test")] == [
        "allow", "block", None]
    for bad in ("", "nobody", "@", "@nodot", "a b@x.test", "a@b@c.test", "<a@x.test>", "a@" + "x" * 320 + ".test"):
        with pytest.raises(Invalid):
            store.set_sender_rule(a.id, bad, "block")


def test_digest_settings_and_one_claim_per_slot(store):
    a = store.add_account("a@example.test", "x")
    assert store.digest_settings([a.id])[a.id].enabled is None
    store.set_digest_setting(a.id, False, 7)
    s = store.digest_settings([a.id])[a.id]
    assert (s.enabled, s.hour, s.last_sent) == (False, 7, 0.0)
    ids = store.hold_quarantined([spec(store, a), spec(store, a)])
    assert sorted(i.id for i in store.quarantine_digest_pending()[a.id]) == sorted(ids)
    assert store.claim_quarantine_digest(a.id, ids[:1], 1000.0, 900.0) is True
    assert store.claim_quarantine_digest(a.id, ids[1:], 1001.0, 900.0) is False  # this slot's digest is out
    assert [i.id for i in store.quarantine_digest_pending()[a.id]] == ids[1:]
    assert store.claim_quarantine_digest(a.id, ids[1:], 2000.0, 1900.0) is True  # the next slot
    assert store.quarantine_digest_pending() == {}
    b = store.add_account("b@example.test", "x")  # no row yet: the claim makes it
    assert store.claim_quarantine_digest(b.id, [], 5.0, 1.0) is True
    assert store.claim_quarantine_digest(b.id, [], 6.0, 1.0) is False
    from storage.errors import Invalid

    with pytest.raises(Invalid):
        store.set_digest_setting(a.id, True, 24)


def test_the_server_secret_is_made_once_for_every_node(tmp_path, database_url):
    url = database_url or f"sqlite:///{tmp_path}/db.sqlite3"
    engines = [make_engine(url), make_engine(url)]
    migrate.upgrade(engines[0])
    blobs = FileBlobStore(Path(tmp_path) / "blobs")
    try:
        first, second = (Store(e, blobs).server_key("quarantine-links") for e in engines)
        assert first == second and len(first) == 32
    finally:
        for e in engines:
            e.dispose()


def test_two_nodes_claiming_one_digest_at_once_claim_it_once(tmp_path, database_url):
    url = database_url or f"sqlite:///{tmp_path}/db.sqlite3"
    engines = [make_engine(url), make_engine(url)]
    migrate.upgrade(engines[0])
    blobs = FileBlobStore(Path(tmp_path) / "blobs")
    nodes = [Store(e, blobs) for e in engines]
    nodes[0].add_domain("example.test")
    try:
        for n in range(5):
            a = nodes[0].add_account(f"a{n}@example.test", "x")
            ids = nodes[0].hold_quarantined([spec(nodes[0], a)])
            results, start = [], threading.Barrier(2)

            def claim(node, a=a, ids=ids, results=results, start=start):
                start.wait()
                results.append(node.claim_quarantine_digest(a.id, ids, 100.0, 50.0))

            threads = [threading.Thread(target=claim, args=(node,)) for node in nodes]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            assert sorted(results) == [False, True]
    finally:
        for e in engines:
            e.dispose()
