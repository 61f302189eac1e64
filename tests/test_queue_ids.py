"""Queue ids: random, fixed-length, unique, never reused after a delete; one id from SMTP reply to delivery log.

On SQLite and (with MAILSERVER_TEST_DATABASE_URL) PostgreSQL.
"""

from __future__ import annotations

import os
import re
import smtplib
import ssl
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from twisted.logger import formatEvent, globalLogPublisher

from mailserver.cli.main import main as cli_main
from storage import migrate
from storage.blobs import FileBlobStore
from storage.db import make_engine
from storage.queue import QueueStore
from storage.queueid import QUEUE_ID_LENGTH, QUEUE_ID_RE, new_queue_id, normalize_queue_id
from storage.store import QueueRecipientSpec, Store
from tests import harness
from tests.outbound.helpers import SENDER, message, outbound, wait_for
from tests.outbound.receiver import receiver

ZONES = {"remote.test": {"": [("MX", 10, "mx.remote.test")], "mx": [("A", "127.0.0.1")]}}


@pytest.fixture
def store(tmp_path, database_url):
    engine = make_engine(database_url or f"sqlite:///{tmp_path}/db.sqlite3")
    migrate.upgrade(engine)
    yield Store(engine, FileBlobStore(Path(tmp_path) / "blobs"))
    engine.dispose()


def _enqueue(store: Store, n: int = 0, recipients=("b@remote.test",)) -> str:
    ref = store.blobs.put(b"Subject: m%d\r\n\r\nbody\r\n" % n)
    return store.enqueue("a@example.test", ref, [QueueRecipientSpec(r) for r in recipients])


def _keys(store: Store, public_id: str) -> tuple[int, list[int]]:
    """The internal keys of a queued message: its queue row and its recipient rows."""
    e = QueueStore(store).get(public_id)
    return e.message.id, [r.id for r in e.recipients]


def test_queue_ids_are_unique_across_threads():
    """Ids drawn from one random read at a time: threads drawing at once never get the same one."""
    out: list[list[str]] = [[] for _ in range(4)]

    def draw(i: int) -> None:
        out[i].extend(new_queue_id() for _ in range(5_000))

    threads = [threading.Thread(target=draw, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = [i for part in out for i in part]
    assert len(set(ids)) == len(ids) == 20_000


def test_a_forked_child_draws_its_own_queue_ids():
    """A child process never hands out the ids its parent still has in hand from its last random read."""
    new_queue_id()  # the parent holds the rest of a draw
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.write(w, " ".join(new_queue_id() for _ in range(100)).encode())
        finally:
            os._exit(0)
    os.close(w)
    parent = {new_queue_id() for _ in range(100)}
    with os.fdopen(r, "rb") as f:
        child = set(f.read().decode().split())
    os.waitpid(pid, 0)
    assert len(child) == 100 and not parent & child


def test_queue_id_format():
    """16 characters of the base32 alphabet, 80 random bits; the CLI accepts any case."""
    ids = {new_queue_id() for _ in range(10_000)}
    assert len(ids) == 10_000
    assert all(len(i) == QUEUE_ID_LENGTH == 16 and QUEUE_ID_RE.fullmatch(i) for i in ids)
    qid = next(iter(ids))
    assert normalize_queue_id(f" {qid.lower()}\n") == qid
    for bad in ("", "42", qid[:-1], qid + "A", qid[:-1] + "1", qid[:-1] + "=", qid[:-1] + "é"):
        assert normalize_queue_id(bad) is None, bad


def test_ids_are_not_reused_after_a_delete(store):
    """Create, delete, create: the second message gets another public id, and other internal keys too (SQLite
    without AUTOINCREMENT handed the deleted highest rowid out again, to the queue row and its recipients)."""
    qs = QueueStore(store)
    first = _enqueue(store, 1, ("a@remote.test", "b@remote.test"))
    assert QUEUE_ID_RE.fullmatch(first)
    key1, rcpt_keys1 = _keys(store, first)
    assert qs.delete(first)
    assert qs.get(first) is None and not qs.delete(first)
    second = _enqueue(store, 2, ("c@remote.test", "d@remote.test"))
    assert second != first and QUEUE_ID_RE.fullmatch(second)
    key2, rcpt_keys2 = _keys(store, second)
    assert key2 > key1 and min(rcpt_keys2) > max(rcpt_keys1)
    # Also when a message finishes (every recipient done) rather than being deleted by hand.
    (item,) = qs.claim(now=1e12, lease=60, limit=10, per_item=10)
    from storage.queue import Outcome

    assert qs.record([Outcome(r.id, "delivered", "250 ok") for r in item.recipients]) == [key2]
    third = _enqueue(store, 3)
    key3, rcpt_keys3 = _keys(store, third)
    assert third not in (first, second) and key3 > key2 and min(rcpt_keys3) > max(rcpt_keys2)


def test_ids_are_unique(store):
    """Many messages, all different ids; the column refuses a duplicate."""
    ids = [_enqueue(store, i) for i in range(200)]
    assert len(set(ids)) == 200 and all(QUEUE_ID_RE.fullmatch(i) for i in ids)
    assert [e.message.public_id for e in QueueStore(store).list()] == ids
    ref = store.blobs.put(b"Subject: dup\r\n\r\nx\r\n")
    with pytest.raises(sa.exc.IntegrityError):
        store.enqueue("a@example.test", ref, [QueueRecipientSpec("x@remote.test")], queue_id=ids[0])
    assert len(QueueStore(store).list()) == 200  # the failed insert left nothing behind


def _alembic(engine, action, target: str) -> None:
    cfg = migrate._alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        action(cfg, target)


def _queue_rows(conn):
    return conn.execute(sa.text("SELECT id, sender FROM queue ORDER BY id")).all()


def _recipient_rows(conn):
    return conn.execute(sa.text("SELECT id, queue_id, recipient, status FROM queue_recipients ORDER BY id")).all()


def test_migration_keeps_queued_mail_and_gives_it_ids(tmp_path, database_url):
    """A queue written before revision 0006 keeps every message and recipient (the SQLite table rebuild must not
    cascade-delete recipients), each message gets a public id, and the internal keys are not reused afterwards.
    Downgrading and upgrading again keeps the rows too."""
    engine = make_engine(database_url or f"sqlite:///{tmp_path}/db.sqlite3")
    try:
        _alembic(engine, command.upgrade, "0001")
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO blobs (id, size, refcount, created) VALUES ('b1', 10, 3, 0)"))
            for qid, sender in ((1, "one@example.test"), (2, "two@example.test"), (3, "three@example.test")):
                conn.execute(sa.text(
                    "INSERT INTO queue (id, sender, blob_id, size, created, envid, ret, smtputf8, body_8bit, source)"
                    " VALUES (:id, :s, 'b1', 10, 0, '', '', false, false, 'submission')"), {"id": qid, "s": sender})
            for rid, qid, rcpt in ((1, 1, "a@remote.test"), (2, 1, "b@remote.test"), (3, 2, "c@remote.test"),
                                   (4, 3, "d@remote.test")):
                conn.execute(sa.text(
                    "INSERT INTO queue_recipients (id, queue_id, recipient, domain, orcpt, notify, status, attempts,"
                    " next_attempt, last_reply, remote_mta, route, delay_warned, claimed_until) VALUES"
                    " (:id, :q, :r, 'remote.test', '', '', 'deferred', 1, 0, '', '', '', false, 0)"),
                    {"id": rid, "q": qid, "r": rcpt})
            if database_url:  # rows written with explicit ids: move the sequences on as their inserts would have
                conn.execute(sa.text("SELECT setval(pg_get_serial_sequence('queue', 'id'), 3)"))
                conn.execute(sa.text("SELECT setval(pg_get_serial_sequence('queue_recipients', 'id'), 4)"))
            conn.execute(sa.text("DELETE FROM queue WHERE id = 3"))  # the highest id, deleted before the upgrade
            if not database_url:
                assert not conn.execute(sa.text("SELECT 1 FROM queue_recipients WHERE id = 4")).all()
            before = (_queue_rows(conn), _recipient_rows(conn))
        migrate.upgrade(engine)
        with engine.begin() as conn:
            assert (_queue_rows(conn), _recipient_rows(conn)) == before
            public = [r[0] for r in conn.execute(sa.text("SELECT public_id FROM queue ORDER BY id"))]
            assert len(set(public)) == 2 and all(QUEUE_ID_RE.fullmatch(p) for p in public)
            if not database_url:
                schema = dict(conn.execute(sa.text("SELECT name, sql FROM sqlite_master WHERE type = 'table'")).all())
                assert "AUTOINCREMENT" in schema["queue"] and "AUTOINCREMENT" in schema["queue_recipients"]
                assert "queue_new" not in " ".join(schema)
                assert re.search(r'REFERENCES\s+"?queue"?\s*\(id\)', schema["queue_recipients"]), \
                    schema["queue_recipients"]
                indexes = {r[0] for r in conn.execute(sa.text("SELECT name FROM sqlite_master WHERE type = 'index'"))}
                assert {"ix_queue_blob_id", "ix_queue_public_id", "ix_queue_recipients_due",
                        "ix_queue_recipients_queue_id"} <= indexes
        store = Store(engine, FileBlobStore(Path(tmp_path) / "blobs"))
        qs = QueueStore(store)
        assert [(e.message.public_id, [r.recipient for r in e.recipients]) for e in qs.list()] == [
            (public[0], ["a@remote.test", "b@remote.test"]), (public[1], ["c@remote.test"])]
        # The foreign key still cascades, and keys freed after the upgrade are not handed out again (on SQLite a key
        # freed before it may be: the old table kept no record of them, and they were never shown outside).
        assert qs.delete(public[1])
        new = _enqueue(store, 9)
        key, rcpt_keys = _keys(store, new)
        assert key > 2 and min(rcpt_keys) > 3
        # Down to 0001 on this branch and up again: the rows stay.
        with engine.connect() as conn:
            kept = (_queue_rows(conn), _recipient_rows(conn))
        _alembic(engine, command.downgrade, "0006_queue_public_id-1")
        with engine.connect() as conn:
            assert (_queue_rows(conn), _recipient_rows(conn)) == kept
            assert "public_id" not in {c["name"] for c in sa.inspect(conn).get_columns("queue")}
        migrate.upgrade(engine)
        with engine.connect() as conn:
            assert (_queue_rows(conn), _recipient_rows(conn)) == kept
    finally:
        engine.dispose()


def _tls() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def test_one_id_from_smtp_reply_to_delivery_log(tmp_path, database_url, capsys):
    """A submitted message is named by one queue id everywhere: the 250 reply, the smtp log line, the Received
    field, `mailserver queue list/show` and the queue runner's delivery log line."""
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        with receiver() as rx, outbound(tmp_path, ZONES, database_url=database_url, listeners=("submission",),
                                        start=False) as ob:
            ob.runner.port = rx.port
            with smtplib.SMTP("127.0.0.1", ob.srv.port("submission"), timeout=30) as c:
                c.starttls(context=_tls())
                c.login(SENDER, "pw")
                assert c.mail(SENDER)[0] == 250
                assert c.rcpt("bob@remote.test")[0] == 250
                code, text = c.data(message())
            assert code == 250
            m = re.fullmatch(rb"2\.0\.0 Message accepted as ([A-Z2-7]{16})", text)
            assert m, text
            qid = m.group(1).decode()
            (row,) = ob.queue_rows()
            assert row.message.public_id == qid
            # The CLI names it the same way, and finds it by it in any case.
            conf = tmp_path / "m.toml"
            db = f'database_url = "{database_url}"\n' if database_url else ""
            conf.write_text(f'hostname = "mail.example.test"\ndata_dir = "{tmp_path / "data"}"\n{db}'
                            f'[[domain]]\nname = "example.test"\n')
            capsys.readouterr()
            assert cli_main(["-c", str(conf), "queue", "list"]) == 0
            assert re.search(rf"^{qid}  ", capsys.readouterr().out, re.M)
            assert cli_main(["-c", str(conf), "queue", "show", qid.lower()]) == 0
            assert f"id:        {qid}\n" in capsys.readouterr().out
            assert cli_main(["-c", str(conf), "queue", "show", "1"]) == 1
            ob.advance(60)  # the runner's clock started before the message was queued (at the real time)
            harness.call(ob.runner.start)
            wait_for(lambda: rx.transactions and not ob.queue_rows())
            assert re.search(rb"\r\n\tby mail\.example\.test with ESMTPSA id " + qid.encode() + rb"\r\n",
                             rx.transactions[0].data)
            wait_for(lambda: any(e.get("log_format", "").startswith("queue {qid}") for e in events))
    finally:
        globalLogPublisher.removeObserver(events.append)
    smtp_lines = [e for e in events if formatEvent(e).startswith(f"smtp {e.get('qid')} from=")]
    queue_lines = [e for e in events if e.get("log_format", "").startswith("queue {qid} to=")]
    assert [e["qid"] for e in smtp_lines] == [qid]
    assert [(e["qid"], e["rcpt"], e["status"]) for e in queue_lines] == [(qid, "bob@remote.test", "delivered")]


def test_a_late_lease_renewal_does_not_reclaim_a_recorded_attempt(store):
    """The runner renews the claims it holds in memory; when an attempt's result was committed between that list
    being taken and the renewal, the row stays given back: due at its next attempt, not at the end of a new lease."""
    from storage.queue import Outcome

    queue = QueueStore(store)
    t = float(int(time.time()) + 10)
    public_id = _enqueue(store)
    [item] = queue.claim(t, 300.0, 10)
    [rid] = [r.id for r in item.recipients]
    assert queue.next_due() == t + 300  # claimed: due when the lease ends
    queue.record([Outcome(rid, "deferred", "451 4.7.1 try later", next_attempt=t + 300)])
    queue.renew([rid], t + 100 + 300)  # the renewal timer, with the runner's list taken before the record
    assert queue.next_due() == t + 300
    assert [r.id for it in queue.claim(t + 300, 300.0, 10) for r in it.recipients] == [rid]
    queue.renew([rid], t + 400 + 300)  # a claim still held is extended
    assert queue.next_due() == t + 700
    queue.release([rid])
    assert queue.next_due() == t + 300
    assert QueueStore(store).get(public_id).recipients[0].attempts == 1
