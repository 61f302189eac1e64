"""Writers of one mailbox at once (several db_write threads on PostgreSQL; imaptest stress found it): STORE, EXPUNGE
and MOVE in parallel threads never deadlock, never give two changes one modseq, never lose a keyword, and the
mailbox's counters stay what its rows say."""

from __future__ import annotations

import threading

import pytest

from storage.models import FLAG_DELETED, FLAG_SEEN
from storage.store import Delivery
from tests import harness

PARSED = {"subject": "s", "from_addr": "a@example.test", "header_size": 20}
THREADS = 4
ROUNDS = 25


@pytest.fixture
def store(tmp_path, database_url):
    with harness.migrated_store(tmp_path, database_url) as s:
        yield s


def test_stores_expunges_and_moves_at_once_keep_the_mailbox_consistent(store):
    acct = store.add_account("a@example.test", "x")
    inbox = store.get_mailbox(acct.id, "INBOX")
    store.create_mailbox(acct.id, "Elsewhere")
    other = store.get_mailbox(acct.id, "Elsewhere")
    store.deliver_batch([Delivery(acct.id, store.blobs.put(b"Subject: m%d\r\n\r\nb\r\n" % n), PARSED)
                         for n in range(THREADS * ROUNDS * 2)])
    modseqs: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def work(k: int) -> None:
        try:
            for i in range(ROUNDS):
                uid = 1 + k * ROUNDS * 2 + i * 2  # each thread its own messages, one mailbox row for all
                changed = store.set_flags(inbox.id, [uid, uid + 1], "add", FLAG_SEEN, [f"$K{k}x{i}"])
                got = {c.modseq for c in changed.changes}
                if i % 3 == 0:
                    store.set_flags(inbox.id, [uid], "add", FLAG_DELETED)
                    got |= {c.modseq for c in store.expunge(inbox.id, [uid]).changes}
                elif i % 3 == 1:
                    got |= {c.modseq for c in store.copy(inbox.id, [uid], other.id, move=True).changes
                            if c.mailbox_id == inbox.id}
                with lock:
                    modseqs.extend(got)
        except BaseException as e:  # noqa: BLE001 - reported below, the thread must end
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert len(modseqs) == len(set(modseqs)), "two changes of one mailbox got the same modseq"
    after = store.get_mailbox(acct.id, "INBOX")
    rows = store.list_messages(inbox.id)
    assert after.message_count == len(rows)
    assert after.unseen_count == sum(1 for m in rows if not m.flags & FLAG_SEEN)
    assert after.highest_modseq == max(modseqs)
    assert {f"$K{k}x{i}" for k in range(THREADS) for i in range(ROUNDS)} <= {k for k in after.keywords}
