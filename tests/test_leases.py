"""Cluster-wide leases (mailserver/leases.py), the SQLite maildrop lock rows (mailserver/clusterstate_sqlite.py), the
worker bus frames (mailserver/bus.py) and ``[server]`` validation, without processes: a store on a fresh SQLite file
(and on PostgreSQL when MAILSERVER_TEST_DATABASE_URL is set)."""

from __future__ import annotations

import pytest

from mailserver import leases
from mailserver.bus import decode_changes, encode_changes
from mailserver.config import MAX_WORKERS, ConfigError, load_dict
from storage.changes import EXISTS, FLAGS, Change
from tests import harness


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    from mailserver.service import open_store

    url = ""
    base = harness.test_database_url()
    if request.param == "postgresql":
        if not base:
            pytest.skip("MAILSERVER_TEST_DATABASE_URL not set")
        url = harness.fresh_pg_url(base)
    cfg = harness.make_config(tmp_path, (), database_url=url)
    s = open_store(cfg)
    try:
        yield s
    finally:
        s.engine.dispose()
        if url:
            harness.drop_pg_schema(base, url)


def test_one_holder_at_a_time_until_its_lease_expires(store):
    """A second holder is refused while the first one's lease runs, and gets it once it has expired."""
    assert leases.take_blocking(store, "job", "a:1", now=100.0, ttl=15.0)
    assert leases.take_blocking(store, "job", "a:1", now=105.0, ttl=15.0)  # renewal
    assert not leases.take_blocking(store, "job", "b:2", now=119.9, ttl=15.0)
    assert leases.holder_of(store, "job", 119.9) == "a:1"
    assert leases.take_blocking(store, "job", "b:2", now=120.0, ttl=15.0)  # a's lease ended at 120
    assert not leases.take_blocking(store, "job", "a:1", now=121.0, ttl=15.0)
    assert leases.take_blocking(store, "other", "a:1", now=121.0, ttl=15.0)  # leases are per name


def test_release_and_free_holder_let_the_next_holder_in_at_once(store):
    assert leases.take_blocking(store, "job", "a:1", now=100.0, ttl=15.0)
    leases.release_blocking(store, "job", "b:2")  # not b's: nothing happens
    assert not leases.take_blocking(store, "job", "b:2", now=101.0, ttl=15.0)
    leases.release_blocking(store, "job", "a:1")
    assert leases.take_blocking(store, "job", "b:2", now=101.0, ttl=15.0)
    assert leases.free_holder(store, "b:2") == 1
    assert leases.holder_of(store, "job", 101.0) is None


def test_sqlite_maildrop_lock_rows_refuse_a_second_holder_and_a_dead_holders_row_is_taken_over(tmp_path):
    """RFC 1939 section 4 across processes: a row held by a live process refuses the maildrop; a row whose pid is
    gone is stale and taken over; release deletes only the holder's own row."""
    import subprocess

    from sqlalchemy import text

    from mailserver.clusterstate_sqlite import SqliteMaildropLocks
    from mailserver.service import open_store

    store = open_store(harness.make_config(tmp_path, ()))
    try:
        class Clock:
            def seconds(self):
                return 1.0

        acct = store.add_account("a@example.test", "x")
        mine = SqliteMaildropLocks(Clock(), store, None, "w0:1")
        theirs = SqliteMaildropLocks(Clock(), store, None, "w1:2")
        assert mine._lock_blocking(acct.id)
        assert not theirs._lock_blocking(acct.id)  # this (live) process holds it
        mine._unlock_logged(acct.id)
        assert theirs._lock_blocking(acct.id)
        gone = subprocess.Popen(["true"])
        gone.wait()
        with store.transaction() as conn:
            conn.execute(text("UPDATE maildrop_locks SET holder_pid = :p"), {"p": gone.pid})
        assert mine._lock_blocking(acct.id)  # the holder's process is gone: a stale row
        theirs._unlock_logged(acct.id)  # not theirs any more: the row stays
        assert not SqliteMaildropLocks(Clock(), store, None, "w2:3")._lock_blocking(acct.id)
    finally:
        store.engine.dispose()


def test_bus_frames_carry_changes_exactly_and_split_large_batches():
    changes = [Change(EXISTS, 1, 2, uid=i, modseq=i, size=10) for i in range(1, 4500)]
    changes.append(Change(FLAGS, 1, 2, uid=7, modseq=9000, flags=3, keywords=("$Junk", "a")))
    frames = encode_changes("w0:1", changes)
    assert len(frames) == 3
    import json

    back = [c for f in frames for c in decode_changes(json.loads(f))]
    assert back == changes


@pytest.mark.parametrize("workers", [-1, MAX_WORKERS + 1])
def test_server_workers_out_of_range_is_a_config_error(workers):
    with pytest.raises(ConfigError, match="server.workers"):
        load_dict({"hostname": "x.test", "data_dir": "/tmp/x", "server": {"workers": workers}})


def test_server_workers_limits_and_lease_are_accepted_at_their_bounds():
    cfg = load_dict({"hostname": "x.test", "data_dir": "/tmp/x", "server": {"workers": MAX_WORKERS, "lease": 3.0}})
    assert cfg.server.worker_count() == MAX_WORKERS
    assert load_dict({"hostname": "x.test", "data_dir": "/tmp/x"}).server.worker_count() >= 1
    with pytest.raises(ConfigError, match="server.lease"):
        load_dict({"hostname": "x.test", "data_dir": "/tmp/x", "server": {"lease": 2.9}})
    with pytest.raises(ConfigError, match="server.group"):
        load_dict({"hostname": "x.test", "data_dir": "/tmp/x", "server": {"group": "mail"}})
