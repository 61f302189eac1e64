"""Every Store method says how it may be called (storage/access.py), and AsyncStore obeys and enforces it."""

from __future__ import annotations

import inspect
import threading
from pathlib import Path

import pytest

from mailserver.asyncstore import AsyncStore
from mailserver.threads import Pools
from storage import migrate
from storage.access import access_of, reads, writes, writes_changes
from storage.blobs import FileBlobStore
from storage.changes import EXISTS, MAILBOX_CREATE, Change, ChangeHub
from storage.db import make_engine
from storage.queue import QueueStore
from storage.store import Changed, Store
from tests import harness


def _public_methods(cls) -> dict:
    return {name: member for name, member in inspect.getmembers(cls, callable) if not name.startswith("_")}


def test_every_public_store_method_is_declared():
    """A public Store method without @reads, @writes, @writes_changes or @blocking_only fails here, not in production."""
    undeclared = sorted(name for name, m in _public_methods(Store).items() if access_of(m) is None)
    assert undeclared == []


def test_declarations_match_what_the_methods_return():
    """@writes_changes methods return Changed (their changes are published); the others never do."""
    for name, m in _public_methods(Store).items():
        access = access_of(m)
        if access.kind == "blocking":
            continue
        returns = inspect.signature(m).return_annotation
        assert (returns == "Changed") == access.publishes, name


def test_methods_that_write_are_declared_as_writes():
    """Every method that opens a write transaction is declared to run in the writer pool (checked on the source)."""
    for name, m in _public_methods(Store).items():
        access = access_of(m)
        if access.kind == "blocking":
            continue
        src = inspect.getsource(m)
        if "self.transaction()" in src:
            assert access.writes, f"Store.{name} writes but is not declared @writes/@writes_changes"
        if "self.transaction(write=False)" in src:
            assert access.kind == "read", f"Store.{name} only reads but is not declared @reads"


def test_methods_with_changes_register_them_with_their_transaction():
    """A @writes_changes method hands its Changed to Store.announce (sent with pg_notify before the commit), or
    returns the result of another @writes_changes method that does (Store.append -> Store.append_many)."""
    methods = _public_methods(Store)
    publishing = {name for name, m in methods.items() if access_of(m).publishes}
    for name in publishing:
        src = inspect.getsource(methods[name])
        assert "self.announce(conn, " in src or any(f"self.{other}(" in src for other in publishing - {name}), name


class _Probe(Store):
    """A Store with extra methods that report the thread they ran on."""

    @reads
    def probe_read(self) -> str:
        return threading.current_thread().name

    @writes
    def probe_write(self) -> str:
        return threading.current_thread().name

    @writes_changes
    def probe_changes(self, account_id: int) -> Changed:
        return Changed(threading.current_thread().name, [Change(EXISTS, account_id, 7, uid=1)])

    @writes_changes
    def probe_wrong(self) -> Changed:
        return "not a Changed"  # type: ignore[return-value]

    def probe_undeclared(self) -> str:
        return "must not run"


@pytest.fixture
def astore(tmp_path: Path):
    harness.ensure_reactor()
    engine = make_engine(f"sqlite:///{tmp_path}/db.sqlite3")
    migrate.upgrade(engine)
    store = _Probe(engine, FileBlobStore(tmp_path / "blobs"))
    store.add_domain("example.test")
    pools = Pools.create()
    pools.start()
    from twisted.internet import reactor

    hub = ChangeHub()
    yield AsyncStore(reactor, store, pools, hub)
    pools.stop()
    engine.dispose()


def test_reads_run_in_the_read_pool_and_writes_in_the_writer(astore):
    assert "-db-read-" in harness.call(astore.probe_read)
    assert "-db-write-" in harness.call(astore.probe_write)


def test_declared_changes_are_published_after_the_call(astore):
    seen: list[Change] = []
    harness.call(astore.hub.subscribe, 5, seen.extend)
    changed = harness.call(astore.probe_changes, 5)
    assert "-db-write-" in changed.value
    assert seen == [Change(EXISTS, 5, 7, uid=1)]


def test_real_mutations_publish_their_changes(astore):
    acct = harness.call(astore.add_account, "alice@example.test", "x")
    seen: list[Change] = []
    harness.call(astore.hub.subscribe, acct.id, seen.extend)
    changed = harness.call(astore.create_mailbox, acct.id, "Projects/2026")
    assert [c.kind for c in seen] == [MAILBOX_CREATE, MAILBOX_CREATE] and seen == changed.changes


def test_a_changes_method_that_returns_no_changed_fails_loudly(astore):
    with pytest.raises(TypeError, match="probe_wrong"):
        harness.call(astore.probe_wrong)


@pytest.mark.parametrize("name", ["probe_undeclared", "transaction", "announce", "_tx", "engine", "blobs", "nope"])
def test_undeclared_or_non_work_attributes_are_refused(astore, name):
    """Nothing falls through to a default pool: undeclared methods, the blocking transaction, attributes."""
    with pytest.raises(AttributeError):
        getattr(astore, name)


def test_queue_store_uses_the_public_transaction(tmp_path: Path):
    """storage/queue.py reaches the database only through Store.transaction (no private member of Store)."""
    src = inspect.getsource(QueueStore)
    assert "store._" not in src
    assert "self.store.transaction()" in src
