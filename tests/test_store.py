"""Store invariants on SQLite and (with MAILSERVER_TEST_DATABASE_URL) PostgreSQL."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from storage import migrate
from storage.blobs import FileBlobStore
from storage.changes import EXISTS, EXPUNGE, FLAGS, MAILBOX_CREATE, MAILBOX_DELETE, MAILBOX_RENAME
from storage.db import make_engine
from storage.models import FLAG_DELETED, FLAG_FLAGGED, FLAG_SEEN
from storage.store import AlreadyExists, Delivery, HasChildren, Invalid, NotFound, QuotaExceeded, Store

PARSED = {"subject": "hi", "from_addr": "a@b", "header_size": 10}


@pytest.fixture(params=["files", "database"])
def store(request, tmp_path, database_url):
    """A store on SQLite or PostgreSQL, with message bodies in files or in the database."""
    url = database_url or f"sqlite:///{tmp_path}/db.sqlite3"
    engine = make_engine(url)
    migrate.upgrade(engine)
    if request.param == "files":
        blobs = FileBlobStore(Path(tmp_path) / "blobs")
    else:
        from storage.blobs import DatabaseBlobStore

        blobs = DatabaseBlobStore(engine)
    s = Store(engine, blobs)
    s.add_domain("example.test")
    yield s
    engine.dispose()


def msg(store, n=0, body=b""):
    return store.blobs.put(b"Subject: m%d\r\n\r\nbody %d\r\n" % (n, n) + body)


def deliver(store, account_id, n=0, **kw):
    res = store.deliver_batch([Delivery(account_id, msg(store, n), PARSED, **kw)])
    return res


def test_new_account_gets_default_mailboxes(store):
    """New accounts get INBOX, Drafts, Sent, Trash, Junk and Archive with their special-use attributes."""
    a = store.add_account("Alice@Example.test", "x")
    assert a.address == "alice@example.test"
    boxes = {m.name: m.special_use for m in store.list_mailboxes(a.id)}
    assert boxes == {"INBOX": "", "Drafts": "\\Drafts", "Sent": "\\Sent", "Trash": "\\Trash", "Junk": "\\Junk",
                     "Archive": "\\Archive"}
    uvs = [m.uid_validity for m in store.list_mailboxes(a.id)]
    assert len(set(uvs)) == len(uvs)


def test_account_errors(store):
    store.add_account("a@example.test", "x")
    with pytest.raises(AlreadyExists):
        store.add_account("A@example.test", "x")
    with pytest.raises(NotFound):
        store.add_account("a@unknown.test", "x")
    with pytest.raises(Invalid):
        store.add_account("not an address", "x")


def test_uids_ascending_never_reused(store):
    """UIDs are strictly ascending and never reused, even after expunging the highest one."""
    a = store.add_account("a@example.test", "x")
    uids = [deliver(store, a.id, i).value[0].uid for i in range(5)]
    assert uids == [1, 2, 3, 4, 5]
    inbox = store.get_mailbox(a.id, "INBOX")
    store.set_flags(inbox.id, [5], "add", FLAG_DELETED)
    assert store.expunge(inbox.id).value == [5]
    assert deliver(store, a.id, 9).value[0].uid == 6
    assert [m.uid for m in store.list_messages(inbox.id)] == [1, 2, 3, 4, 6]


def test_uid_validity_changes_only_on_recreate(store):
    a = store.add_account("a@example.test", "x")
    mb = store.create_mailbox(a.id, "Lists").value
    store.rename_mailbox(a.id, "Lists", "Lists2")
    renamed = store.get_mailbox(a.id, "Lists2")
    assert renamed.uid_validity == mb.uid_validity
    store.delete_mailbox(a.id, "Lists2")
    again = store.create_mailbox(a.id, "Lists2").value
    assert again.uid_validity != mb.uid_validity


def test_modseq_rises_on_every_change(store):
    a = store.add_account("a@example.test", "x")
    inbox = store.get_mailbox(a.id, "INBOX")
    seen = [inbox.highest_modseq]
    deliver(store, a.id, 1)
    seen.append(store.get_mailbox(a.id, "INBOX").highest_modseq)
    r = store.set_flags(inbox.id, [1], "add", FLAG_SEEN)
    seen.append(store.get_mailbox(a.id, "INBOX").highest_modseq)
    assert r.value.updated[0].modseq == seen[-1]
    store.set_flags(inbox.id, [1], "add", FLAG_DELETED)
    seen.append(store.get_mailbox(a.id, "INBOX").highest_modseq)
    store.expunge(inbox.id)
    seen.append(store.get_mailbox(a.id, "INBOX").highest_modseq)
    assert seen == sorted(set(seen)), seen
    changed, vanished = store.changes_since(inbox.id, seen[1])
    assert vanished == [1] and changed == []


def test_flags_and_keywords(store):
    a = store.add_account("a@example.test", "x")
    deliver(store, a.id, 1)
    inbox = store.get_mailbox(a.id, "INBOX")
    assert inbox.unseen_count == 1
    r = store.set_flags(inbox.id, [1], "add", FLAG_SEEN | FLAG_FLAGGED, ["$Label1", "Work"])
    u = r.value.updated[0]
    assert u.flags == FLAG_SEEN | FLAG_FLAGGED and u.keywords == ("$Label1", "Work")
    assert store.get_mailbox(a.id, "INBOX").unseen_count == 0
    assert set(store.get_mailbox(a.id, "INBOX").keywords) == {"$Label1", "Work"}
    r = store.set_flags(inbox.id, [1], "remove", FLAG_FLAGGED, ["work"])
    assert r.value.updated[0].flags == FLAG_SEEN and r.value.updated[0].keywords == ("$Label1",)
    r = store.set_flags(inbox.id, [1], "replace", 0, [])
    assert r.value.updated[0].flags == 0 and r.value.updated[0].keywords == ()
    # UNCHANGEDSINCE (RFC 7162): a message changed after the given modseq is reported, not changed
    cur = store.list_messages(inbox.id)[0].modseq
    r = store.set_flags(inbox.id, [1], "add", FLAG_SEEN, unchanged_since=cur - 1)
    assert r.value.modified == [1] and r.changes == []


def test_rename_with_children(store):
    a = store.add_account("a@example.test", "x")
    store.create_mailbox(a.id, "Projects/2024/Q1")
    changed = store.rename_mailbox(a.id, "Projects", "Archive/Projects")
    names = {m.name for m in store.list_mailboxes(a.id)}
    assert {"Archive/Projects", "Archive/Projects/2024", "Archive/Projects/2024/Q1"} <= names
    assert not any(n.startswith("Projects") for n in names)
    assert {c.kind for c in changed.changes} == {MAILBOX_RENAME}
    with pytest.raises(HasChildren):
        store.delete_mailbox(a.id, "Archive/Projects")


def test_rename_inbox_moves_messages(store):
    """RFC 9051 6.3.6: renaming INBOX moves its messages and leaves an empty INBOX."""
    a = store.add_account("a@example.test", "x")
    deliver(store, a.id, 1)
    deliver(store, a.id, 2)
    store.rename_mailbox(a.id, "INBOX", "Old")
    assert store.get_mailbox(a.id, "INBOX").message_count == 0
    old = store.get_mailbox(a.id, "Old")
    assert [m.uid for m in store.list_messages(old.id)] == [1, 2]
    assert deliver(store, a.id, 3).value[0].uid == 3  # INBOX's UIDs are not reused


def test_copy_move_and_quota(store):
    a = store.add_account("a@example.test", "x", quota_bytes=10_000)
    deliver(store, a.id, 1)
    inbox = store.get_mailbox(a.id, "INBOX")
    archive = store.get_mailbox(a.id, "Archive")
    res = store.copy(inbox.id, [1], archive.id)
    assert res.value.pairs == [(1, 1)] and res.value.uid_validity == archive.uid_validity
    res = store.copy(inbox.id, [1], archive.id, move=True)
    assert res.value.pairs == [(1, 2)]
    kinds = [c.kind for c in res.changes]
    assert EXPUNGE in kinds and EXISTS in kinds
    assert store.get_mailbox(a.id, "INBOX").message_count == 0
    assert store.get_mailbox(a.id, "Archive").message_count == 2
    used, limit = store.quota(a.id)
    assert limit == 10_000 and used == 2 * msg(store, 1).size
    big = store.blobs.put(b"x" * 20_000)
    r = store.deliver_batch([Delivery(a.id, big, PARSED)])
    assert r.value[0].ok is False and r.value[0].error == "overquota"
    with pytest.raises(QuotaExceeded):
        store.append(a.id, inbox.id, big, PARSED)


def test_every_change_emits_its_event(store):
    a = store.add_account("a@example.test", "x")
    assert [c.kind for c in store.create_mailbox(a.id, "X").changes] == [MAILBOX_CREATE]
    r = deliver(store, a.id, 1, mailbox="X")
    assert [c.kind for c in r.changes] == [EXISTS]
    x = store.get_mailbox(a.id, "X")
    assert [c.kind for c in store.append(a.id, x.id, msg(store, 2), PARSED).changes] == [EXISTS]
    assert [c.kind for c in store.set_flags(x.id, [1, 2], "add", FLAG_DELETED).changes] == [FLAGS, FLAGS]
    assert [c.kind for c in store.expunge(x.id, [1]).changes] == [EXPUNGE]
    assert [c.kind for c in store.copy(x.id, [2], store.get_mailbox(a.id, "INBOX").id).changes] == [EXISTS]
    assert [c.kind for c in store.rename_mailbox(a.id, "X", "Y").changes] == [MAILBOX_RENAME]
    assert [c.kind for c in store.delete_mailbox(a.id, "Y").changes] == [MAILBOX_DELETE]


def test_concurrent_deliveries_no_duplicate_uids(store):
    """Deliveries into one mailbox from several threads never share a UID."""
    a = store.add_account("a@example.test", "x")
    errors = []

    def worker(k):
        try:
            for i in range(15):
                r = deliver(store, a.id, k * 100 + i)
                assert r.value[0].ok
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    inbox = store.get_mailbox(a.id, "INBOX")
    uids = [m.uid for m in store.list_messages(inbox.id)]
    assert uids == list(range(1, 91))
    assert inbox.message_count == 90 and inbox.uid_next == 91


def test_same_content_stored_once_and_collected(store):
    a = store.add_account("a@example.test", "x")
    ref1 = msg(store, 1)
    ref2 = msg(store, 1)
    assert ref1 == ref2
    store.deliver_batch([Delivery(a.id, ref1, PARSED), Delivery(a.id, ref2, PARSED)])
    inbox = store.get_mailbox(a.id, "INBOX")
    store.set_flags(inbox.id, [1, 2], "add", FLAG_DELETED)
    store.expunge(inbox.id)
    assert store.collect_blobs(grace=0) == 1
    assert not store.blobs.exists(ref1.id)
    assert store.integrity_problems() == []


def test_aliases_and_identities(store):
    a = store.add_account("a@example.test", "x")
    store.add_alias("sales@example.test", "a@example.test")
    store.add_alias("@example.test", "a@example.test")
    assert store.alias_targets("Sales@example.test") == ["a@example.test"]
    assert store.alias_targets("@example.test") == ["a@example.test"]
    assert store.addresses_of(a.id) == ["a@example.test", "sales@example.test"]
    with pytest.raises(NotFound):
        store.add_alias("x@nowhere.test", "a@example.test")


def test_an_alias_with_several_targets_is_nobody_s_identity(store):
    """team@ -> a, b is a list: neither member may send as it without a grant (storage/sendgrants.py)."""
    a = store.add_account("a@example.test", "x")
    b = store.add_account("b@example.test", "x")
    store.add_alias("team@example.test", "a@example.test")
    store.add_alias("team@example.test", "b@example.test")
    store.add_alias("ann@example.test", "a@example.test")
    assert store.addresses_of(a.id) == ["a@example.test", "ann@example.test"]
    assert store.addresses_of(b.id) == ["b@example.test"]
    store.remove_alias("team@example.test", "b@example.test")
    assert store.addresses_of(a.id) == ["a@example.test", "ann@example.test", "team@example.test"]


def test_enqueue_keeps_blob(store):
    ref = msg(store, 1)
    from storage.store import QueueRecipientSpec

    qid = store.enqueue("a@example.test", ref, [QueueRecipientSpec("b@remote.test", notify="FAILURE")])
    assert len(qid) == 16
    assert store.collect_blobs(grace=0) == 0


def test_subscriptions_outlive_deletion_and_follow_renames(store):
    a = store.add_account("a@example.test", "x")
    store.create_mailbox(a.id, "Lists/One", subscribed=False)
    store.set_subscribed(a.id, "Lists/One", True)
    store.set_subscribed(a.id, "Never/Created", True)
    store.rename_mailbox(a.id, "Lists", "Groups")
    subs = store.list_subscriptions(a.id)
    assert "Groups/One" in subs and "Lists/One" not in subs and "Never/Created" in subs
    store.delete_mailbox(a.id, "Groups/One")
    assert "Groups/One" in store.list_subscriptions(a.id)  # RFC 9051 6.3.7
    again = store.create_mailbox(a.id, "Groups/One", subscribed=False).value
    assert again.subscribed
    store.set_subscribed(a.id, "Groups/One", False)
    assert "Groups/One" not in store.list_subscriptions(a.id)
    assert not store.get_mailbox(a.id, "Groups/One").subscribed


def test_delivery_to_an_exact_mailbox(store):
    """Delivery(mailbox_id=...) (IMAP APPEND through group commit): that mailbox or nothing, with its UIDVALIDITY."""
    a = store.add_account("a@example.test", "x")
    b = store.add_account("b@example.test", "x")
    archive = store.get_mailbox(a.id, "Archive")
    other = store.get_mailbox(b.id, "INBOX")
    ok, foreign = store.deliver_batch([Delivery(a.id, msg(store, 1), PARSED, mailbox_id=archive.id),
                                       Delivery(a.id, msg(store, 2), PARSED, mailbox_id=other.id)]).value
    assert ok.ok and ok.mailbox_id == archive.id and ok.uid == 1 and ok.uid_validity == archive.uid_validity
    assert not foreign.ok and foreign.error == "nonexistent"
    assert store.get_mailbox(b.id, "INBOX").message_count == 0


def test_blob_ranges_read_the_same_from_files_and_from_the_database(store):
    """read(start, end) gives exactly data[start:end] for every kind of range, byte-exact (NUL, high bytes), on
    both backends: the database backend cuts the range in SQL (a scan reading a large message piece by piece)."""
    data = bytes(range(256)) * 40 + b"\x00tail\xff"
    ref = store.blobs.put(data)
    n = len(data)
    for start, end in [(0, None), (0, n), (0, 1), (1, 2), (5, 300), (255, 257), (n - 1, None), (n - 1, n),
                       (n, None), (n, n + 10), (100, 100), (n + 5, None), (3000, 9000), (10, 5)]:
        assert store.blobs.read(ref.id, start, end) == data[start:end], (start, end)
    with pytest.raises(FileNotFoundError):
        store.blobs.read("0" * 64, 0, 10)


def test_read_whole_gives_bodies_in_order_up_to_the_first_missing_or_of_another_size(store):
    """POP3's read-ahead (``BlobStore.read_whole``): the same answers from files and from the database (there in
    one statement): every body that is there at its listed size, in the order asked, ending before the first that
    is missing or is not that size; a body asked twice comes twice."""
    bodies = [b"Subject: %d\r\n\r\n" % i + bytes(range(256)) * (i + 1) + b"\x00" for i in range(4)]
    refs = [store.blobs.put(b) for b in bodies]
    pairs = [(r.id, len(b)) for r, b in zip(refs, bodies, strict=True)]
    assert store.blobs.read_whole(pairs) == bodies
    assert store.blobs.read_whole([pairs[2], pairs[0], pairs[2]]) == [bodies[2], bodies[0], bodies[2]]
    assert store.blobs.read_whole([pairs[0], ("0" * 64, 10), pairs[1]]) == [bodies[0]]
    assert store.blobs.read_whole([pairs[0], (refs[1].id, len(bodies[1]) - 1), pairs[2]]) == [bodies[0]]
    assert store.blobs.read_whole([pairs[0], (refs[1].id, len(bodies[1]) + 1)]) == [bodies[0]]
    assert store.blobs.read_whole([]) == []


def test_database_blob_stored_twice_and_over_a_row_without_data(store):
    """The database backend stores a body once however often it is put, and fills in a row that a reference made
    before its data (refcount kept); the same on SQLite and PostgreSQL (one upsert there)."""
    import hashlib

    from sqlalchemy import select

    from storage import blobrefs
    from storage.blobs import BlobRef, DatabaseBlobStore
    from storage.models import Blob

    # The file-backed fixture's database holds the blob table too: exercise the database backend over it.
    blobs = store.blobs if isinstance(store.blobs, DatabaseBlobStore) else DatabaseBlobStore(store.engine)
    data = b"Subject: twice\r\n\r\nsame body\r\n"
    first, second = blobs.put(data), blobs.put(data)
    assert first.id == second.id and blobs.read(first.id) == data
    other = b"Subject: late\r\n\r\nreferenced first\r\n"
    ref = BlobRef(hashlib.sha256(other).hexdigest(), len(other))
    with store.transaction() as conn:
        blobrefs.ref(conn, ref)
    assert not blobs.exists(ref.id)
    blobs.put(other)
    assert blobs.exists(ref.id) and blobs.read(ref.id) == other
    with store.engine.connect() as conn:
        rows = conn.execute(select(Blob.id, Blob.refcount).where(Blob.id.in_([first.id, ref.id]))).all()
    assert sorted(rows) == sorted([(first.id, 0), (ref.id, 1)])
