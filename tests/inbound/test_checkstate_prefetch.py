"""The account versions read in the message's store-and-parse trip (``Stage.prefetch``, ``Store.check_versions``):
with the held copies at those versions the checks' account read makes no ``db_read`` trip; a change made by
anyone before the message's data ended is still in its verdict; a message that needs no read is not prefetched
for; a failed prefetch costs only the shortcut.  SQLite only (PostgreSQL reads in a transaction, as before)."""

from __future__ import annotations

import pytest
from twisted.internet import defer

from tests import harness
from tests.inbound.mail import PW, message, send
from tests.inbound.test_checkstate import ALICE, BOB, _rule_from_another_process, _where
from tests.inbound.test_policy import _plug_scorer


@pytest.fixture
def srv(tmp_path):
    with harness.running_server(tmp_path) as s:  # SQLite: the prefetch is SQLite's
        for a in (ALICE, BOB):
            s.add_user(a, PW)
        _plug_scorer(s)
        yield s


def _states(srv):
    return next(s for s in srv.server.provided.pipeline.checks if s.name == "spam-policy").states


class Counted:
    """``Store.check_versions`` of the server's own store, counted (the real method does the reading)."""

    def __init__(self, store, fail=False):
        self.real, self.calls, self.fail = store.check_versions, 0, fail

    def __call__(self, account_ids):
        self.calls += 1
        if self.fail:
            raise RuntimeError("prefetch failed")
        return self.real(account_ids)


def _count(srv, fail=False) -> Counted:
    store = srv.server.astore.store
    counted = Counted(store, fail)
    srv.call(lambda: setattr(store, "check_versions", counted))
    return counted


def test_a_current_copy_is_confirmed_by_the_versions_of_the_store_trip_without_a_read_job(srv):
    states, counted = _states(srv), _count(srv)
    hello = message("hello", extra=b"X-Score: 1\r\n")
    assert send(srv, hello, rcpts=(ALICE,))[0] == 250  # the first message reads (nothing held, nothing wanted)
    jobs, reads, fetched = states.jobs, states.reads, states.from_prefetch
    for _ in range(3):
        assert send(srv, hello, rcpts=(ALICE,))[0] == 250
    assert counted.calls == 3 and states.from_prefetch == fetched + 3
    assert states.jobs == jobs and states.reads == reads + 3  # one read per message, none of them a pool job
    assert _where(srv, ALICE) == {"INBOX": 4, "Junk": 0}


def test_a_rule_written_by_another_process_counts_from_the_next_message_with_the_prefetch(srv, tmp_path):
    states = _states(srv)
    hello = message("hello", extra=b"X-Score: 1\r\n")
    for _ in range(2):
        assert send(srv, hello, rcpts=(ALICE,))[0] == 250
    assert _where(srv, ALICE) == {"INBOX": 2, "Junk": 0}
    fetched, jobs = states.from_prefetch, states.jobs
    _rule_from_another_process(srv, tmp_path, ALICE, "@remote.test", "block")
    assert send(srv, hello, rcpts=(ALICE,))[0] == 250
    # The versions of the store trip are newer than the held copy: the rules are read in a job as before.
    assert _where(srv, ALICE) == {"INBOX": 2, "Junk": 1}
    assert states.from_prefetch == fetched and states.jobs == jobs + 1
    assert send(srv, hello, rcpts=(ALICE,))[0] == 250  # and the copy just read is current again
    assert _where(srv, ALICE) == {"INBOX": 2, "Junk": 2} and states.from_prefetch == fetched + 1
    _rule_from_another_process(srv, tmp_path, ALICE, "@remote.test", None)
    assert send(srv, hello, rcpts=(ALICE,))[0] == 250
    assert _where(srv, ALICE) == {"INBOX": 3, "Junk": 2}


def test_mail_that_needs_no_account_read_is_not_prefetched_for(tmp_path):
    """No scorer, no verified sender, an untrained classifier: the classifier skips the read (``quiet``) and the
    messages after it make no prefetch either (only the first after a read does, once)."""
    with harness.running_server(tmp_path) as srv:
        srv.add_user(BOB, PW)
        states, counted = _states(srv), _count(srv)
        for _ in range(5):
            assert send(srv, message("hello"), rcpts=(BOB,), sender="someone@unverified.test")[0] == 250
        assert states.reads == 1 and counted.calls <= 1
        assert _where(srv, BOB) == {"INBOX": 5, "Junk": 0}


def test_a_failed_prefetch_only_loses_the_shortcut(srv):
    states = _states(srv)
    hello = message("hello", extra=b"X-Score: 1\r\n")
    assert send(srv, hello, rcpts=(ALICE,))[0] == 250
    counted = _count(srv, fail=True)
    jobs, fetched = states.jobs, states.from_prefetch
    alice = srv.store.get_account(ALICE)
    harness.call(lambda: defer.ensureDeferred(srv.server.astore.set_sender_rule(alice.id, "@remote.test", "block")))
    assert send(srv, hello, rcpts=(ALICE,))[0] == 250
    assert counted.calls == 1 and states.from_prefetch == fetched and states.jobs == jobs + 1
    assert _where(srv, ALICE) == {"INBOX": 1, "Junk": 1}  # the rule made a moment before is in the verdict
