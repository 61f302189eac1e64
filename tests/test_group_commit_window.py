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
        _run_call(on_result, f, args, kwargs)


def _run_call(on_result, f, args, kwargs) -> None:
    """Run a pool call and hand its outcome to ``on_result`` as a thread pool does."""
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
    gc.expect()  # B's message has begun (an SMTP session in DATA)
    a = deliver()
    clock.advance(0)
    assert not a.called  # the window is open
    clock.advance(COLLECT_WINDOW / 4)
    b = deliver()
    clock.advance(0)
    assert not a.called  # B is in, but still counted as on its way: the window stays open
    gc.arrived()
    clock.advance(0)
    assert a.called and b.called and a.result.ok and b.result.ok  # nothing else on its way: no more waiting
    assert gc.batches == 2 and gc.delivered == 4
    for _ in range(COLLECT_KEEP):
        d = deliver()
        clock.advance(COLLECT_WINDOW)
        assert d.called
    d = deliver()
    clock.advance(0)
    assert d.called  # closed: no wait


class QueuedPool:
    """A thread pool whose calls wait until the test runs them (``run_one``), so a stage can be kept busy."""

    def __init__(self):
        self.calls = []

    def callInThreadWithCallback(self, on_result, f, *args, **kwargs):
        self.calls.append((on_result, f, args, kwargs))

    def run_one(self):
        _run_call(*self.calls.pop(0))


def test_a_delivery_submitted_while_another_commits_waits_for_company(tmp_path):
    """Two sessions taking turns (each delivery submitted while the other's is being committed) never make a commit
    of more than one by themselves; the second opens the window, so the first session's next delivery, arriving
    within it, shares its commit.  A lone client (nothing in flight when it submits) still never waits."""
    engine = make_engine(f"sqlite:///{tmp_path}/db.sqlite3")
    migrate.upgrade(engine)
    try:
        store = Store(engine, FileBlobStore(Path(tmp_path) / "blobs"))
        store.add_domain("example.test")
        account = store.add_account("a@example.test", "x")
        clock = Clock()

        class Queued:
            blob = db_read = InlinePool()
            db_write = QueuedPool()

        pools = Queued()
        astore = AsyncStore(clock, store, pools, ChangeHub())
        gc = astore.committer

        def deliver(n):
            return astore.deliver(Delivery(account.id, store.blobs.put(b"Subject: m%d\r\n\r\nbody\r\n" % n), PARSED))

        a1 = deliver(1)
        clock.advance(0)  # flushed, its commit waits in the writer pool
        assert len(pools.db_write.calls) == 1 and not a1.called
        gc.expect()  # A's next message will have begun by the time B's is submitted
        b1 = deliver(2)  # session B, while A's delivery commits
        clock.advance(0)
        assert gc._pending, "the window is open: B's delivery waits for company"
        pools.db_write.run_one()  # A's commit
        assert a1.called and a1.result.ok
        gc.arrived()
        a2 = deliver(3)  # A's next message, within the window
        clock.advance(COLLECT_WINDOW)
        pools.db_write.run_one()
        assert b1.called and a2.called and b1.result.ok and a2.result.ok
        assert gc.batches == 2 and gc.delivered == 3
        for i in range(COLLECT_KEEP):  # one at a time, nothing in flight: the window closes after COLLECT_KEEP
            d = deliver(10 + i)
            clock.advance(COLLECT_WINDOW)
            pools.db_write.run_one()
            assert d.called
        d = deliver(99)
        clock.advance(0)
        assert len(pools.db_write.calls) == 1  # no wait: straight to the commit
        pools.db_write.run_one()
        assert d.called and d.result.ok
    finally:
        engine.dispose()


def test_the_window_waits_only_for_a_message_on_its_way(committer):
    """With deliveries arriving together, a batch waits while a begun message may still join it: it goes as soon
    as that message ended without a copy (refused, say), and after COLLECT_WINDOW at most when it never comes (a
    slow client in DATA); with nothing on its way it goes in the next reactor turn."""
    clock, gc, deliver = committer
    together = [deliver(), deliver()]
    clock.advance(0)
    assert all(d.called for d in together)
    gc.expect()
    a = deliver()
    clock.advance(COLLECT_WINDOW / 3)
    assert not a.called
    gc.arrived()  # it was refused: no copy will come
    clock.advance(0)
    assert a.called and a.result.ok and gc.expecting == 0
    gc.expect()  # a slow client
    b = deliver()
    clock.advance(COLLECT_WINDOW * 0.9)
    assert not b.called
    clock.advance(COLLECT_WINDOW * 0.1)
    assert b.called and b.result.ok  # the window's end, as before
    c = deliver()  # the slow client is still expected: c waits the window too
    clock.advance(0)
    assert not c.called
    gc.arrived()
    clock.advance(0)
    assert c.called
    d = deliver()  # nobody on its way
    clock.advance(0)
    assert d.called
