"""The store's part of forwarding and gateway mode, on SQLite and PostgreSQL: the cluster's SRS secret (made once,
the same for every process) and the callout cache (answers until they expire)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from mailserver.delivery import srs
from storage import migrate
from storage.blobs import FileBlobStore
from storage.db import make_engine
from storage.store import Store


@pytest.fixture
def stores(tmp_path, database_url):
    """Two stores on one database (two processes / nodes)."""
    url = database_url or f"sqlite:///{tmp_path}/db.sqlite3"
    engines = [make_engine(url), make_engine(url)]
    migrate.upgrade(engines[0])
    yield [Store(e, FileBlobStore(Path(tmp_path) / "blobs")) for e in engines]
    for e in engines:
        e.dispose()


def test_secret_is_made_once_and_shared(stores):
    a, b = stores
    made = []

    def make():
        made.append(1)
        return srs.new_secret()

    results = []
    threads = [threading.Thread(target=lambda s=s: results.append(s.server_secret("srs", make)))
               for s in (a, b, a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1 and len(results[0]) == 64
    assert b.server_secret("srs", make) == results[0]
    assert a.server_secret("other", lambda: "x" * 20) == "x" * 20 != results[0]


def test_callout_answers_expire(stores):
    a, b = stores
    assert a.callout_cached("known@relay.test", 100.0) is None
    a.remember_callout("Known@relay.test", True, 200.0, 100.0)
    b.remember_callout("gone@relay.test", False, 150.0, 100.0)
    assert b.callout_cached("KNOWN@relay.test", 199.0) is True
    assert a.callout_cached("gone@relay.test", 149.0) is False
    assert a.callout_cached("gone@relay.test", 150.0) is None
    # a new answer replaces the old one; remembering drops expired rows
    a.remember_callout("known@relay.test", False, 300.0, 160.0)
    assert b.callout_cached("known@relay.test", 161.0) is False
