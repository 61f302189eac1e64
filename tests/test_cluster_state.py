"""Per-cluster state (mailserver/clusterstate.py): the in-process implementation, the PostgreSQL one's bookkeeping of
\\Recent spans, and the start refusal of file blobs on a database other nodes may share."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from twisted.internet import defer
from twisted.python.failure import Failure

from mailserver import clusterstate as cs
from mailserver.clusterstate_pg import PgRecentClaims, lock_namespace
from mailserver.config import ConfigError, LimitsConfig
from mailserver.service import check_shared_storage
from tests import harness

ROOT = Path(__file__).resolve().parents[1]
PG_URL = "postgresql+psycopg://nobody@127.0.0.1:1/none"  # never connected to: the refusal comes first


def done(coro):
    """Run a coroutine of the in-process state: it must finish without waiting; return its result."""
    d = defer.ensureDeferred(coro)
    assert d.called, "the in-process implementation waited"
    out = []
    d.addBoth(out.append)
    if isinstance(out[0], Failure):
        out[0].raiseException()
    return out[0]


# --------------------------------------------------------------------------------------------- maildrop locks


def test_maildrop_lock_is_exclusive_per_account_and_released():
    """RFC 1939 section 4: one session per maildrop; another account is not affected; release frees it."""
    locks = cs.MaildropLocks()
    assert locks.acquire(1) and done(locks.acquire_cluster(1))
    assert not locks.acquire(1)
    assert locks.acquire(2)
    assert locks.held(1) and locks.held(2)
    locks.release(1)
    assert not locks.held(1) and locks.acquire(1)
    locks.release(1)
    locks.release(1)  # twice is harmless
    assert not locks.held(1) and locks.held(2)


def test_pop3_session_refused_when_another_process_holds_the_maildrop():
    """The sans-IO POP3 session: the lock of its own process first, then OpenMaildrop takes it against the other
    processes; when one of them holds it the answer is -ERR [IN-USE] and the local lock is given back."""
    from mailserver.pop3 import session as S

    locks = cs.MaildropLocks()
    s = S.Pop3Session(hostname="h", limits=LimitsConfig(), locks=locks, plaintext_without_tls=True)
    s.greeting()
    s.data_received(b"USER alice@example.test\r\n")
    (auth,) = s.data_received(b"PASS pw\r\n")
    assert isinstance(auth, S.Authenticate)
    (opening,) = s.auth_result(True, 7)
    assert opening == S.OpenMaildrop(7) and locks.held(7)
    (reply,) = s.maildrop_in_use()
    assert reply == S.Send(b"-ERR [IN-USE] maildrop already locked by another session\r\n")
    assert s.state is S.AUTHORIZATION and not locks.held(7)
    assert s.maildrop_in_use() == []  # a late second answer is ignored


# --------------------------------------------------------------------------------------------- login failures


def test_login_failures_count_per_key_in_the_window():
    f = cs.LocalLoginFailures(window=600, ip_limit=10, account_limit=5)
    assert done(f.counts("192.0.2.1", "a@x", 0.0)) == (0, 0)
    assert done(f.add("192.0.2.1", "a@x", 1.0)) == (1, 1)
    assert done(f.add("192.0.2.1", "b@x", 2.0)) == (2, 1)
    assert done(f.counts("192.0.2.1", "a@x", 3.0)) == (2, 1)
    assert done(f.counts("192.0.2.9", "b@x", 3.0)) == (0, 1)
    # A failure leaves the window after `window` seconds.
    assert done(f.counts("192.0.2.1", "a@x", 601.0)) == (1, 0)
    assert done(f.counts("192.0.2.1", "b@x", 602.0)) == (0, 0)


def test_clearing_the_account_keeps_the_ip():
    """After a good login the account's failures go, the IP's stay (an attacker with one valid account must not
    reset the IP counter)."""
    f = cs.LocalLoginFailures(window=600, ip_limit=10, account_limit=10)
    for t in range(3):
        done(f.add("198.51.100.7", "a@x", float(t)))
    assert done(f.clear_account("198.51.100.7", "a@x", 4.0)) == (3, 0)


def test_failures_kept_per_key_are_capped_at_the_limit():
    f = cs.LocalLoginFailures(window=600, ip_limit=3, account_limit=0)
    for t in range(100):
        counts = done(f.add("203.0.113.1", "a@x", float(t)))
    assert counts == (3, cs.UNLIMITED_FAILURES_KEPT)


def test_tracked_keys_are_bounded():
    f = cs.LocalLoginFailures(window=600, ip_limit=10, account_limit=10, max_keys=5)
    for i in range(20):
        done(f.add(f"10.0.0.{i}", f"u{i}@x", float(i)))
    assert len(f.ip) <= 5 and len(f.account) <= 5
    assert done(f.counts("10.0.0.19", "u19@x", 20.0)) == (1, 1)  # the most recent are kept


def test_default_cluster_state_follows_the_limits():
    limits = LimitsConfig(auth_max_failures_per_ip=4, auth_max_failures_per_account=2, auth_failure_window=60.0)
    state = cs.in_process(limits)
    state.start()
    for t in range(6):
        counts = done(state.login_failures.add("192.0.2.1", "a@x", float(t)))
    assert counts == (4, 2)
    assert done(state.login_failures.counts("192.0.2.1", "a@x", 70.0)) == (0, 0)
    state.stop()


# --------------------------------------------------------------------------------------------- \Recent


def test_each_new_message_is_recent_in_one_session_only():
    """RFC 3501 2.3.2: the first claim gets the new UIDs, a later one only those that arrived since."""
    r = cs.RecentTracker()
    done(r.reserve(7, 100, 3))
    assert r.claim(7, 100, [1, 2, 3]) == [1, 2, 3]
    assert r.claim(7, 100, [1, 2, 3]) == []
    assert r.unclaimed_count(7, 100, [1, 2, 3, 4, 5]) == 2
    done(r.refresh(7, 100))
    assert r.claim(7, 100, [1, 2, 3, 4, 5]) == [4, 5]
    assert r.unclaimed_count(7, 100, [1, 2, 3, 4, 5]) == 0


def test_recreated_mailbox_starts_afresh():
    """RFC 3501 2.3.1.1: a new UIDVALIDITY is a new mailbox, whose messages are new to every session."""
    r = cs.RecentTracker()
    assert r.claim(7, 100, [1, 2]) == [1, 2]
    assert r.claim(7, 101, [1]) == [1]
    assert r.unclaimed_count(7, 100, [1, 2]) == 2  # the old incarnation's bookkeeping is gone


def test_postgres_claims_hand_out_only_what_this_process_won():
    """The PostgreSQL claims answer from the spans this process reserved: a UID another process won is never
    handed out here, and each won UID goes to one session of this process."""
    r = PgRecentClaims(reactor=None, engine=None, read_pool=None, write_pool=None)
    key = (7, 100)
    r._hold(key, 0, 2)  # this process won 1..2
    r._learn(key, 4)  # another process won 3..4
    assert r.unclaimed_count(7, 100, [1, 2, 3, 4, 5]) == 3  # 1, 2 (held, not handed out yet) and 5
    assert r.claim(7, 100, [1]) == [1]  # a session that knows only UID 1
    assert r.claim(7, 100, [1, 2, 3, 4]) == [2]
    assert r.claim(7, 100, [1, 2, 3, 4]) == []
    r._hold(key, 4, 6)
    r._learn(key, 6)
    assert r.claim(7, 100, [1, 2, 3, 4, 5, 6]) == [5, 6]
    assert r.unclaimed_count(7, 100, [1, 2, 3, 4, 5, 6, 7]) == 1


def test_lock_namespace_depends_on_the_schema():
    assert lock_namespace("public") == lock_namespace("public")
    assert lock_namespace("public") != lock_namespace("t_0123456789ab")
    assert -2**31 <= lock_namespace("public") < 2**31


# --------------------------------------------------------------------------------------------- start refusal


def _config(tmp_path, **store):
    return harness.make_config(tmp_path, listeners=(), database_url=PG_URL, store={"shared_data_dir": False,
                                                                                   **store})


def test_file_blobs_on_postgres_are_refused_unless_data_dir_is_shared(tmp_path):
    """A body under one node's data_dir could not be read by another node on the same database."""
    with pytest.raises(ConfigError) as e:
        check_shared_storage(_config(tmp_path, blobs="files"))
    text = str(e.value)
    assert "store.blobs" in text and "database_url" in text and "store.shared_data_dir = true" in text
    check_shared_storage(_config(tmp_path, blobs="files", shared_data_dir=True))
    check_shared_storage(_config(tmp_path, blobs="database"))
    check_shared_storage(harness.make_config(tmp_path, listeners=()))  # SQLite: one process


def test_serve_refuses_to_start(tmp_path):
    """`mailserver serve` stops before touching the database, with an error that names the keys."""
    conf = tmp_path / "m.toml"
    conf.write_text(f'hostname = "mail.example.test"\ndata_dir = "data"\ndatabase_url = "{PG_URL}"\n'
                    f'[listen]\nsmtp = ["127.0.0.1:0"]\n')
    r = subprocess.run([sys.executable, "-m", "mailserver", "--config", str(conf), "serve"], capture_output=True,
                       text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 1
    assert f"{conf}: store.blobs: \"files\" keeps message bodies in this node's data_dir" in r.stderr
    assert "store.shared_data_dir = true" in r.stderr
