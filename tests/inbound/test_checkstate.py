"""The inbound checks' account data read once per message over per-process copies (``storage/checkstate.py``,
``inbound/accountstate.py``), and greylisting's remembered passes: a sender rule, a correspondent or training
changed by anyone (the webmail, another worker, another node, a command) counts from the very next message; a copy
is reused only while its version holds; a passed triplet costs no read until its refresh is due."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from twisted.internet import defer, task
from twisted.python.failure import Failure

from mailserver import config as cfgmod
from mailserver.inbound.greylist import Greylister
from storage import checkstate
from storage import greylist as gl
from storage.blobs import FileBlobStore
from storage.db import make_engine
from storage.migrate import upgrade
from storage.store import Store
from tests import harness
from tests.inbound.mail import PW, message, send
from tests.inbound.test_policy import _plug_scorer

ALICE, BOB = "alice@example.test", "bob@example.test"


@pytest.fixture
def store(tmp_path, database_url):
    engine = make_engine(database_url or f"sqlite:///{tmp_path}/db.sqlite3")
    upgrade(engine)
    s = Store(engine, FileBlobStore(Path(tmp_path) / "blobs"))
    s.add_domain("example.test")
    yield s
    engine.dispose()


def _read(store, account_ids, held=None, senders=("x@remote.test",), rules_for=("x@remote.test",)):
    states, _ = store.check_state(account_ids, held or {}, list(senders), list(rules_for))
    return states


def test_every_writer_moves_its_version_on_in_its_own_transaction(store):
    a = store.add_account(ALICE, "x")
    (v0,) = [s.versions for s in _read(store, [a.id]).values()]
    assert v0 == checkstate.Versions()  # never changed: no data, and no further statement
    store.set_sender_rule(a.id, "@remote.test", "block")
    v1 = _read(store, [a.id])[a.id].versions
    assert v1.rules != v0.rules
    store.bayes_note_senders(a.id, ["x@remote.test"])
    v2 = _read(store, [a.id])[a.id].versions
    assert (v2.rules, v2.training) == (v1.rules, v1.training) and v2.senders != v1.senders
    store.bayes_learn(a.id, "k", "spam", [1, 2, 3])
    v3 = _read(store, [a.id])[a.id].versions
    assert (v3.rules, v3.senders) == (v2.rules, v2.senders) and v3.training != v2.training
    store.set_sender_rule(a.id, "@remote.test", None)  # forgetting a rule is a change too
    assert _read(store, [a.id])[a.id].versions.rules != v3.rules


def test_a_held_copy_is_used_only_while_its_version_holds(store):
    a = store.add_account(ALICE, "x")
    store.set_sender_rule(a.id, "@remote.test", "block")
    store.bayes_note_senders(a.id, ["x@remote.test"])
    first = _read(store, [a.id])[a.id]
    assert first.rules == {"@remote.test": "block"} and first.known == {"x@remote.test": True}
    # A copy at the current versions is taken as it is (this one is made up: the store does not read the data).
    made_up = checkstate.AccountState(first.versions, {"made@up.test": "allow"}, True, (7, 7),
                                      {"x@remote.test": False})
    again = _read(store, [a.id], {a.id: made_up})[a.id]
    assert (again.rules, again.totals, again.known) == (made_up.rules, (7, 7), {"x@remote.test": False})
    # A sender it holds no answer for is read (and added to the copy).
    more = _read(store, [a.id], {a.id: made_up}, senders=("x@remote.test", "y@remote.test"))[a.id]
    assert more.known == {"x@remote.test": False, "y@remote.test": False}
    # Once a rule changes, the rules are read again (the rest of the copy still holds).
    store.set_sender_rule(a.id, "friend@remote.test", "allow")
    after = _read(store, [a.id], {a.id: made_up})[a.id]
    assert after.rules == {"@remote.test": "block", "friend@remote.test": "allow"}
    assert after.totals == (7, 7) and after.known == {"x@remote.test": False}


def test_an_account_with_more_rules_than_are_held_gets_those_that_apply_each_time(store):
    a = store.add_account(ALICE, "x")
    for i in range(checkstate.MAX_HELD_RULES + 1):
        store.set_sender_rule(a.id, f"s{i}@many.test", "block")
    store.set_sender_rule(a.id, "@remote.test", "allow")
    st = _read(store, [a.id])[a.id]
    assert not st.rules_complete and st.rules == {"@remote.test": "allow"}
    st2 = _read(store, [a.id], {a.id: st}, rules_for=("s3@many.test",))[a.id]
    assert st2.rules == {"s3@many.test": "block"}


def test_one_read_answers_for_every_recipient_account(store):
    a, b = store.add_account(ALICE, "x"), store.add_account(BOB, "x")
    store.set_sender_rule(b.id, "x@remote.test", "allow")
    store.bayes_note_senders(a.id, ["x@remote.test"])
    states = _read(store, [a.id, b.id])
    assert states[a.id].rules == {} and states[a.id].known == {"x@remote.test": True}
    assert states[b.id].rules == {"x@remote.test": "allow"} and states[b.id].known == {"x@remote.test": False}


# ---------------------------------------------------------------------------------------------- through SMTP

RULE_SCRIPT = textwrap.dedent("""
    import sys
    from storage.blobs import FileBlobStore
    from storage.db import make_engine
    from storage.store import Store

    url, blobs, address, pattern, rule = sys.argv[1:6]
    engine = make_engine(url)
    store = Store(engine, FileBlobStore(blobs))
    store.set_sender_rule(store.get_account(address).id, pattern, None if rule == "-" else rule)
    engine.dispose()
""")


def _rule_from_another_process(srv, tmp_path, address, pattern, rule):
    """What the webmail of another worker or node does: the rule written by a process of its own."""
    url = srv.server.config.db_url
    subprocess.run([sys.executable, "-c", RULE_SCRIPT, url, str(tmp_path / "other-blobs"), address, pattern,
                    rule or "-"], check=True, cwd=str(Path(__file__).resolve().parents[2]), timeout=120)


def _where(srv, address) -> dict:
    """Messages in the account's INBOX and Junk (None: no such mailbox yet)."""
    acct = srv.store.get_account(address)
    out = {}
    for name in ("INBOX", "Junk"):
        box = srv.store.get_mailbox(acct.id, name)
        out[name] = box.message_count if box is not None else None
    return out


@pytest.fixture
def srv(tmp_path, database_url):
    with harness.running_server(tmp_path, database_url=database_url) as s:
        for a in (ALICE, BOB):
            s.add_user(a, PW)
        _plug_scorer(s)
        yield s


def test_a_rule_written_by_another_process_counts_from_the_next_message(srv, tmp_path):
    """alice's allow rule, written by another process (as another worker's or node's webmail would), takes a
    message that would go to Junk out of it on the very next delivery; its removal, and a block rule, likewise.
    Nothing tells this server: the versions it reads with each message do."""
    spam = message("pills", extra=b"X-Score: 7\r\n")
    assert send(srv, spam, rcpts=(ALICE,))[0] == 250
    assert _where(srv, ALICE) == {"INBOX": 0, "Junk": 1}
    _rule_from_another_process(srv, tmp_path, ALICE, "someone@remote.test", "allow")
    assert send(srv, spam, rcpts=(ALICE,))[0] == 250
    assert _where(srv, ALICE) == {"INBOX": 1, "Junk": 1}
    _rule_from_another_process(srv, tmp_path, ALICE, "someone@remote.test", None)
    assert send(srv, spam, rcpts=(ALICE,))[0] == 250
    assert _where(srv, ALICE) == {"INBOX": 1, "Junk": 2}
    _rule_from_another_process(srv, tmp_path, ALICE, "@remote.test", "block")
    assert send(srv, message("hello", extra=b"X-Score: 1\r\n"), rcpts=(ALICE,))[0] == 250
    assert _where(srv, ALICE) == {"INBOX": 1, "Junk": 3}


def test_a_rule_edited_in_this_process_counts_from_the_next_message(srv):
    hello = message("hello", extra=b"X-Score: 1\r\n")
    assert send(srv, hello, rcpts=(BOB,))[0] == 250
    assert _where(srv, BOB) == {"INBOX": 1, "Junk": 0}
    bob = srv.store.get_account(BOB)
    harness.call(lambda: defer.ensureDeferred(srv.server.astore.set_sender_rule(bob.id, "@remote.test", "block")))
    assert send(srv, hello, rcpts=(BOB,))[0] == 250
    assert _where(srv, BOB) == {"INBOX": 1, "Junk": 1}


def test_the_checks_read_the_store_once_per_message_for_all_recipients(srv):
    pipeline = srv.server.provided.pipeline
    policy_stage = next(s for s in pipeline.checks if s.name == "spam-policy")
    states = policy_stage.states
    before = states.reads
    assert send(srv, message("hello", extra=b"X-Score: 1\r\n"), rcpts=(ALICE, BOB))[0] == 250
    assert states.reads == before + 1  # the classifier and the policy, both recipients: one read
    assert states.held(srv.store.get_account(ALICE).id) is not None


# ---------------------------------------------------------------------------------------------- greylisting


class CountingStore:
    """The greylister's store face over a real Store, counting the calls that reach it."""

    def __init__(self, store):
        self.store = store
        self.calls = []

    def __getattr__(self, name):
        method = getattr(self.store, name)

        def call(*args, **kwargs):
            self.calls.append(name)
            return defer.execute(method, *args, **kwargs)

        return call


def _greylister(store, **greylist):
    cfg = cfgmod.load_dict({"hostname": "mx.example.test", "data_dir": "/tmp/x",
                            "antispam": {"greylist": {"enabled": True, **greylist}}})
    clock = task.Clock()
    clock.advance(1_800_000_000.0)
    counting = CountingStore(store)
    return Greylister(cfg, counting, clock=clock), counting, clock


def _check(g, ip="192.0.2.9", sender="a@remote.test", rcpt=BOB):
    d = defer.ensureDeferred(g.check(ip, sender, rcpt))
    assert d.called
    return d.result


def test_a_passed_triplet_is_remembered_until_its_refresh_is_due(store):
    g, counting, clock = _greylister(store)
    assert _check(g) == gl.NEW
    clock.advance(g.policy.delay + 1)
    assert _check(g) == gl.PASSED
    counting.calls.clear()
    for _ in range(3):
        assert _check(g) == gl.KNOWN
    assert counting.calls == []  # from memory: the store would answer KNOWN and write nothing
    assert _check(g, rcpt="carol@example.test") == gl.NEW and counting.calls  # another triplet: the store
    counting.calls.clear()
    clock.advance(gl.REFRESH + 1)  # the refresh is due: the store moves the expiry on (and says KNOWN)
    assert _check(g) == gl.KNOWN and "greylist_record_until" in counting.calls
    counting.calls.clear()
    assert _check(g) == gl.KNOWN and counting.calls == []


def test_first_attempts_and_early_retries_always_ask_the_store(store):
    g, counting, clock = _greylister(store)
    assert _check(g) == gl.NEW and _check(g) == gl.EARLY
    assert counting.calls.count("greylist_record_until") == 2


def test_a_remembered_pass_never_outlives_the_triplet(store):
    """With a pass lifetime shorter than the refresh period the memory ends at the expiry, after which the
    store starts the triplet again."""
    g, counting, clock = _greylister(store, retry_window=600, pass_lifetime=600)
    assert _check(g) == gl.NEW
    clock.advance(g.policy.delay + 1)
    assert _check(g) == gl.PASSED
    clock.advance(601)
    assert _check(g) == gl.NEW


def test_a_whitelisted_network_is_remembered_until_it_expires(store):
    g, counting, clock = _greylister(store, auto_whitelist=1)
    assert _check(g) == gl.NEW
    clock.advance(g.policy.delay + 1)
    assert _check(g) == gl.PASSED
    counting.calls.clear()
    assert _check(g, sender="new@remote.test") == gl.CLIENT and counting.calls  # read once
    counting.calls.clear()
    assert _check(g, sender="other@remote.test", rcpt="x@example.test") == gl.CLIENT and counting.calls == []


class HeldRunner:
    """A runner whose store calls (a real Store) run only when the test releases them, one job at a time: the
    db-read pool busy with one read while more messages ask."""

    def __init__(self, store):
        self.store = store
        self.jobs = []

    def call_store(self, name, *args):
        d = defer.Deferred()
        self.jobs.append((name, args, d))
        return d

    def release(self):
        name, args, d = self.jobs.pop(0)
        d.callback(getattr(self.store, name)(*args))


def test_reads_that_arrive_while_one_is_in_flight_share_one_pool_job_each_with_its_own_answer(store):
    from mailserver.inbound.accountstate import AccountStates

    a = store.add_account(ALICE, "x")
    b = store.add_account(BOB, "x")
    store.set_sender_rule(b.id, "@remote.test", "block")
    runner = HeldRunner(store)
    states = AccountStates(runner)
    req = [([a.id], {}, ["x@remote.test"], ["x@remote.test"], None, 1, 1),
           ([b.id], {}, ["x@remote.test"], ["x@remote.test"], None, 1, 1),
           ([a.id, b.id], 5, [], [], None, 1, 1)]  # held=5: this read fails, and only its own message sees it
    got = [states._read(r) for r in req]
    assert [j[0] for j in runner.jobs] == ["check_state"]  # the first at once, the others wait for it
    runner.release()
    assert [j[0] for j in runner.jobs] == ["check_state_many"]  # the two that waited: one job
    assert len(runner.jobs[0][1][0]) == 2
    runner.release()
    assert states.jobs == 2 and not runner.jobs
    results = []
    for d in got:
        d.addBoth(results.append)
    assert results[0] == store.check_state(*req[0])
    assert results[1] == store.check_state(*req[1])
    assert results[1][0][b.id].rules  # bob's block rule is in his answer
    assert isinstance(results[2], Failure)
    # a read asked for when nothing is in flight starts at once again
    d = states._read(req[0])
    assert [j[0] for j in runner.jobs] == ["check_state"]
    runner.release()
    assert d.called
