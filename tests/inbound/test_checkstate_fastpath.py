"""Store.check_state's SQLite fast path (the versions alone, one plain statement outside a transaction) against the
general read (storage/checkstate.py ``read`` in a read transaction): the same states and token counts."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from sqlalchemy import event

from storage import checkstate
from storage.blobs import FileBlobStore
from storage.db import make_engine
from storage.migrate import upgrade
from storage.store import Store

SENDERS = ["a@remote.test", "b@remote.test", "c@other.test", "D@Remote.test", ""]


@pytest.fixture
def store(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path}/db.sqlite3")
    upgrade(engine)
    s = Store(engine, FileBlobStore(Path(tmp_path) / "blobs"))
    s.add_domain("example.test")
    yield s
    engine.dispose()


def _general(store, *args):
    with store.transaction(write=False) as conn:
        return checkstate.read(conn, *args)


def _begins(store):
    count = [0]
    event.listen(store.engine, "begin", lambda conn: count.__setitem__(0, count[0] + 1))
    return count


def test_current_copies_are_answered_without_a_transaction(store):
    """An account that never changed, and one whose copy is current, cost no transaction; a change does."""
    a, b = store.add_account("alice@example.test", "x"), store.add_account("bob@example.test", "x")
    store.set_sender_rule(b.id, "@remote.test", "block")
    store.bayes_note_senders(b.id, ["a@remote.test"])
    first, _ = store.check_state([a.id, b.id], {}, ["a@remote.test"], ["a@remote.test"])
    begins = _begins(store)
    again, tokens = store.check_state([a.id, b.id], first, ["a@remote.test"], ["a@remote.test"])
    assert begins[0] == 0 and again == first and tokens == {}
    assert again[b.id].rules == {"@remote.test": "block"} and again[b.id].known == {"a@remote.test": True}
    store.set_sender_rule(b.id, "x@remote.test", "allow")
    begins[0] = 0
    changed, _ = store.check_state([a.id, b.id], first, ["a@remote.test"], ["a@remote.test"])
    assert begins[0] == 1 and changed[b.id].rules == {"@remote.test": "block", "x@remote.test": "allow"}


def test_a_voting_account_gets_its_token_counts_read(store):
    a = store.add_account("alice@example.test", "x")
    store.bayes_learn(a.id, "s", "spam", [1, 2, 3])
    store.bayes_learn(a.id, "h", "ham", [2, 3, 4])
    first, _ = store.check_state([a.id], {}, [], [], None)
    begins = _begins(store)
    states, tokens = store.check_state([a.id], first, [], [], [1, 4, 9])
    assert begins[0] == 1 and tokens == {a.id: {1: (1, 0), 4: (0, 1)}}
    assert (states, tokens) == _general(store, [a.id], first, [], [], [1, 4, 9], 1, 1)


def test_the_fast_path_answers_as_the_general_read(store):
    """Random changes, copies (current, stale, made up) and questions: the two reads agree every time."""
    rng = random.Random(13)
    accounts = [store.add_account(f"u{i}@example.test", "x").id for i in range(4)]
    held: dict[int, checkstate.AccountState] = {}
    fast_only = 0
    begins = _begins(store)
    for step in range(400):
        op = rng.random()
        a = rng.choice(accounts)
        if op < 0.1:
            store.set_sender_rule(a, rng.choice(["@remote.test", "a@remote.test", "c@other.test"]),
                                  rng.choice(["block", "allow", None]))
        elif op < 0.17:
            store.bayes_note_senders(a, [rng.choice(SENDERS[:4]).lower()])
        elif op < 0.22:
            store.bayes_learn(a, f"k{step}", rng.choice(["spam", "ham"]), [rng.randrange(20) for _ in range(3)])
        ids = rng.sample(accounts, rng.randint(1, len(accounts)))
        senders = rng.sample(SENDERS, rng.randint(0, 3))
        rules_for = rng.sample(SENDERS, rng.randint(0, 2))
        token_ids = rng.choice([None, [], [rng.randrange(20) for _ in range(4)]])
        min_spam, min_ham = rng.choice([(1, 1), (2, 1), (1, 3)])
        use = {k: v for k, v in held.items() if rng.random() < 0.8}
        if use and rng.random() < 0.1:  # a copy made up at a version that is not the store's
            k = rng.choice(list(use))
            v = use[k].versions
            use[k] = checkstate.AccountState(checkstate.Versions(v.rules + 1, v.senders, v.training + 1))
        begins[0] = 0
        got = store.check_state(ids, use, senders, rules_for, token_ids, min_spam, min_ham)
        fast_only += begins[0] == 0
        want = _general(store, ids, use, senders, rules_for, token_ids, min_spam, min_ham)
        assert got == want, (step, ids, senders, rules_for, token_ids)
        held.update(got[0])
    assert fast_only > 60  # the comparison covers the fast path, not only the fallback
