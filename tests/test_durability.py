"""Durability: SIGKILL while delivering; every delivery that returned success is there afterwards."""

from __future__ import annotations

import os
import signal
import sys
import textwrap
import time
from pathlib import Path

from storage.blobs import FileBlobStore
from storage.db import make_engine
from storage.store import Store
from tests.processes import popen

ROOT = Path(__file__).resolve().parents[1]

WRITER = textwrap.dedent("""
    import sys, threading
    from pathlib import Path
    from storage import migrate
    from storage.blobs import FileBlobStore
    from storage.db import make_engine
    from storage.store import Delivery, Store

    url, blob_dir = sys.argv[1], sys.argv[2]
    engine = make_engine(url)
    store = Store(engine, FileBlobStore(blob_dir))
    acct = store.get_account("a@example.test")
    lock = threading.Lock()

    def worker(k):
        n = 0
        while True:
            batch = []
            for i in range(8):
                n += 1
                raw = b"Subject: w%d-%d\\r\\n\\r\\n" % (k, n) + b"x" * (4000 + n % 997) + b"\\r\\n"
                batch.append(Delivery(acct.id, store.blobs.put(raw), {"subject": "w%d-%d" % (k, n)}))
            res = store.deliver_batch(batch)
            with lock:
                for r in res.value:
                    sys.stdout.write("OK %d %d\\n" % (r.mailbox_id, r.uid))
                sys.stdout.flush()

    for k in range(3):
        threading.Thread(target=worker, args=(k,), daemon=True).start()
    print("READY", flush=True)
    threading.Event().wait()
""")


def test_sigkill_during_delivery_loses_nothing_acknowledged(tmp_path, database_url):
    url = database_url or f"sqlite:///{tmp_path}/db.sqlite3"
    blob_dir = tmp_path / "blobs"
    engine = make_engine(url)
    from storage import migrate

    migrate.upgrade(engine)
    store = Store(engine, FileBlobStore(blob_dir))
    store.add_domain("example.test")
    store.add_account("a@example.test", "x")
    engine.dispose()

    out_path = tmp_path / "acks.txt"
    with open(out_path, "wb") as out:
        proc = popen([sys.executable, "-c", WRITER, url, str(blob_dir)], stdout=out, cwd=ROOT,
                     env={**os.environ, "PYTHONPATH": str(ROOT)})
        try:
            deadline = time.time() + 30
            while time.time() < deadline:
                text = out_path.read_text()
                if text.count("OK ") >= 200:
                    break
                assert proc.poll() is None, "writer died"
                time.sleep(0.05)
            time.sleep(0.3)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    acked = [tuple(map(int, line.split()[1:])) for line in out_path.read_text().splitlines()
             if line.startswith("OK ") and len(line.split()) == 3]
    assert len(acked) >= 200

    engine = make_engine(url)
    store = Store(engine, FileBlobStore(blob_dir))
    try:
        acct = store.get_account("a@example.test")
        inbox = store.get_mailbox(acct.id, "INBOX")
        present = {m.uid for m in store.list_messages(inbox.id)}
        missing = [uid for _, uid in acked if uid not in present]
        assert missing == []
        # Nothing points at a missing blob, and every acknowledged message reads back.
        assert store.integrity_problems() == []
        for m in store.get_messages(inbox.id, [uid for _, uid in acked[:50]]):
            data = store.read_blob(m.blob_id)
            assert len(data) == m.size and data.startswith(b"Subject: w")
        assert inbox.message_count == len(present)
    finally:
        engine.dispose()


FLAGGER = textwrap.dedent("""
    import sys
    from storage.blobs import FileBlobStore
    from storage.db import make_engine
    from storage.models import FLAG_DELETED, FLAG_FLAGGED
    from storage.store import Store

    url, blob_dir, mailbox_id, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    store = Store(make_engine(url), FileBlobStore(blob_dir))  # durable_flags False: the default "optimized"
    print("READY", flush=True)
    for uid in range(1, count + 1):
        store.set_flags(mailbox_id, [uid], "add", FLAG_FLAGGED if uid % 2 else FLAG_DELETED)
        if uid % 2 == 0:
            store.expunge(mailbox_id, [uid])
        sys.stdout.write("OK %d\\n" % uid)
        sys.stdout.flush()
""")


def _sync_levels(engine) -> list[str]:
    """Every ``PRAGMA synchronous=…`` the engine's connections run from now on (the level of the commits that
    follow), seen by SQLite itself (the driver's trace callback, set at each checkout): storage/db.py sends the
    switch straight to the driver, not through SQLAlchemy."""
    from sqlalchemy import event

    seen: list[str] = []

    def _record(statement: str) -> None:
        if statement.startswith("PRAGMA synchronous="):
            seen.append(statement.split("=", 1)[1])

    @event.listens_for(engine, "checkout")
    def _trace(dbapi_conn, _record_, _proxy):
        dbapi_conn.set_trace_callback(_record)

    return seen


def test_flag_changes_and_expunges_commit_without_the_flush_and_deliveries_with_it(tmp_path):
    """[store] fsync = "optimized" (the default): STORE and EXPUNGE commit with SQLite synchronous=NORMAL, a delivery
    right after them with FULL again; with durable_flags (fsync = "always") nothing but FULL is used."""
    from storage import migrate
    from storage.models import FLAG_DELETED, FLAG_SEEN
    from storage.store import Delivery

    engine = make_engine(f"sqlite:///{tmp_path}/db.sqlite3", pool_size=1)
    migrate.upgrade(engine)
    store = Store(engine, FileBlobStore(tmp_path / "blobs"))
    store.add_domain("example.test")
    acct = store.add_account("a@example.test", "x")
    inbox = store.get_mailbox(acct.id, "INBOX").id

    def deliver(n: int) -> None:
        store.deliver_batch([Delivery(acct.id, store.blobs.put(b"Subject: %d\r\n\r\nx\r\n" % n), {"subject": str(n)})])

    try:
        deliver(1)
        seen = _sync_levels(engine)
        store.set_flags(inbox, [1], "add", FLAG_SEEN | FLAG_DELETED)
        assert seen == ["NORMAL"]
        store.expunge(inbox)
        assert seen == ["NORMAL"]  # still the connection's level: no PRAGMA needed
        store.get_mailbox(acct.id, "INBOX")
        assert seen == ["NORMAL"]  # a read commits nothing: it leaves the level to the next write
        deliver(2)
        assert seen == ["NORMAL", "FULL"]
        store.durable_flags = True
        store.set_flags(inbox, [2], "add", FLAG_DELETED)
        store.expunge(inbox)
        assert seen == ["NORMAL", "FULL"]
    finally:
        engine.dispose()


def test_the_sqlite_engine_has_no_connection_event_listener(tmp_path):
    """BEGIN and the synchronous switch are the dialect's (storage/db.py), not a "begin" listener: any connection
    event makes SQLAlchemy dispatch events around every statement and transaction of the engine."""
    engine = make_engine(f"sqlite:///{tmp_path}/db.sqlite3")
    try:
        assert not engine._has_events
        with engine.connect() as conn:
            conn.info["sqlite_begin"] = "IMMEDIATE"
            with conn.begin():
                assert conn.connection.dbapi_connection.in_transaction
    finally:
        engine.dispose()


def test_sigkill_after_flag_changes_and_expunges_loses_none_acknowledged(tmp_path, database_url):
    """Flag changes and expunges that returned (committed without the flush) survive a SIGKILL of the process: the
    commit is atomic and in the WAL; only an OS crash could lose the last ones."""
    from storage import migrate
    from storage.models import FLAG_FLAGGED
    from storage.store import Delivery

    url = database_url or f"sqlite:///{tmp_path}/db.sqlite3"
    blob_dir = tmp_path / "blobs"
    engine = make_engine(url)
    migrate.upgrade(engine)
    store = Store(engine, FileBlobStore(blob_dir))
    store.add_domain("example.test")
    acct = store.add_account("a@example.test", "x")
    inbox = store.get_mailbox(acct.id, "INBOX").id
    count = 400
    store.deliver_batch([Delivery(acct.id, store.blobs.put(b"Subject: %d\r\n\r\nx\r\n" % n), {"subject": str(n)})
                         for n in range(count)])
    engine.dispose()

    out_path = tmp_path / "acks.txt"
    with open(out_path, "wb") as out:
        proc = popen([sys.executable, "-c", FLAGGER, url, str(blob_dir), str(inbox), str(count)],
                     stdout=out, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        try:
            deadline = time.time() + 60
            while out_path.read_text().count("OK ") < 100 and time.time() < deadline:
                assert proc.poll() is None, "flagger died"
                time.sleep(0.02)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    acked = [int(ln.split()[1]) for ln in out_path.read_text().splitlines()
             if ln.startswith("OK ") and len(ln.split()) == 2]
    assert len(acked) >= 100

    engine = make_engine(url)
    store = Store(engine, FileBlobStore(blob_dir))
    try:
        by_uid = {m.uid: m for m in store.list_messages(inbox)}
        for uid in acked:
            if uid % 2:
                assert by_uid[uid].flags & FLAG_FLAGGED, uid
            else:
                assert uid not in by_uid, uid
        assert store.integrity_problems() == []
    finally:
        engine.dispose()
