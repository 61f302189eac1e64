"""The group committer's collection window: opened by deliveries that arrive together, never for a lone client.

A real store on SQLite; the reactor is a ``task.Clock`` and the pools run their work at once, so the test
controls time and needs no threads.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.internet import task
from twisted.python.failure import Failure

from mailserver.asyncstore import COLLECT_KEEP, COLLECT_WINDOW, AsyncStore
from storage import migrate
from storage.blobs import FileBlobStore
from storage.changes import ChangeHub
from storage.db import make_engine
from storage.store import Delivery, Store

PARSED = {"subject": "hi", "from_addr": "a@b", "header_size": 10}


class InlinePool:
    """A thread pool that runs each call at once in the caller (what deferToThreadPool needs of one)."""

    def callInThreadWithCallback(self, on_result, f, *args, **kwargs):
        try:
            result = f(*args, **kwargs)
        except BaseException:
            on_result(False, Failure())
        else:
            on_result(True, result)


class Pools:
    blob = db_write = db_read = InlinePool()


class Clock(task.Clock):
    def callFromThread(self, f, *args, **kwargs):
        f(*args, **kwargs)


@pytest.fixture
def committer(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path}/db.sqlite3")
    migrate.upgrade(engine)
    store = Store(engine, FileBlobStore(Path(tmp_path) / "blobs"))
    store.add_domain("example.test")
    account = store.add_account("a@example.test", "x")
    clock = Clock()
    astore = AsyncStore(clock, store, Pools(), ChangeHub())
    n = [0]

    def deliver():
        n[0] += 1
        blob = store.blobs.put(b"Subject: m%d\r\n\r\nbody\r\n" % n[0])
        return astore.deliver(Delivery(account.id, blob, PARSED))

    yield clock, astore.committer, deliver
    engine.dispose()


def test_lone_client_never_waits(committer):
    """One delivery at a time: every batch starts in the next reactor turn, with no window."""
    clock, gc, deliver = committer
    for i in range(COLLECT_KEEP + 2):
        d = deliver()
        clock.advance(0)
        assert d.called and d.result.ok, i
    assert gc.batches == COLLECT_KEEP + 2


def test_deliveries_together_open_the_window_and_share_a_commit(committer):
    """After a commit of two, a delivery waits COLLECT_WINDOW for others; one arriving meanwhile shares its
    commit.  COLLECT_KEEP commits of one each close the window again."""
    clock, gc, deliver = committer
    first = [deliver(), deliver()]
    clock.advance(0)
    assert all(d.called for d in first) and gc.batches == 1
    a = deliver()
    clock.advance(0)
    assert not a.called  # the window is open
    clock.advance(COLLECT_WINDOW / 2)
    b = deliver()
    clock.advance(COLLECT_WINDOW / 2)
    assert a.called and b.called and a.result.ok and b.result.ok
    assert gc.batches == 2 and gc.delivered == 4
    for _ in range(COLLECT_KEEP):
        d = deliver()
        clock.advance(COLLECT_WINDOW)
        assert d.called
    d = deliver()
    clock.advance(0)
    assert d.called  # closed: no wait
