"""Mailbox ids are never given twice (migration mailbox_ids_4c9e2b7d1a36): a change event of a deleted mailbox
still on its way to another worker or node must never land on a new mailbox that got its id."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from storage import migrate
from storage.blobs import FileBlobStore
from storage.db import make_engine
from storage.store import Store
from tests import harness


@pytest.fixture
def store(tmp_path, database_url):
    with harness.migrated_store(tmp_path, database_url) as s:
        yield s


def test_a_mailbox_made_anew_after_the_highest_was_deleted_gets_a_new_id(store):
    acct = store.add_account("a@example.test", "x")
    store.create_mailbox(acct.id, "imaptest")
    old = store.get_mailbox(acct.id, "imaptest").id
    store.delete_mailbox(acct.id, "imaptest")
    store.create_mailbox(acct.id, "imaptest")
    new = store.get_mailbox(acct.id, "imaptest").id
    assert new > old
    store.delete_mailbox(acct.id, "imaptest")
    store.remove_account("a@example.test")
    other = store.add_account("b@example.test", "x")
    assert min(m.id for m in store.list_mailboxes(other.id)) > new


def test_the_high_water_mark_starts_above_the_mailboxes_a_database_had_before_the_migration(tmp_path):
    """An existing SQLite database: the mark is the highest id there; one made by a store that lacks a row (a
    table emptied by hand) starts from the mailboxes' own highest id."""
    engine = make_engine(f"sqlite:///{tmp_path}/db.sqlite3")
    migrate.upgrade(engine)
    store = Store(engine, FileBlobStore(Path(tmp_path) / "blobs"))
    store.add_domain("example.test")
    try:
        acct = store.add_account("a@example.test", "x")
        highest = max(m.id for m in store.list_mailboxes(acct.id))
        with engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM id_high_water"))
        store.create_mailbox(acct.id, "later")
        assert store.get_mailbox(acct.id, "later").id == highest + 1
        with engine.begin() as conn:
            assert conn.execute(sa.text("SELECT value FROM id_high_water WHERE name = 'mailboxes'")).scalar() == \
                highest + 1
    finally:
        engine.dispose()
