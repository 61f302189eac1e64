"""Worker processes share one login success cache: a password one worker verified is a cache hit in the others
(the entry travels on the worker bus under the supervisor's key), and forgetting an account reaches them all.

Before this, each of N workers verified every user's password itself (argon2: tens of milliseconds of CPU), so N
workers did N times the hashing of one process for the same logins."""

from __future__ import annotations

from twisted.internet import protocol, task
from twisted.internet.testing import StringTransport

from mailserver.bus import BusClient, BusServerFactory, _BusClientProtocol
from storage.changes import ChangeHub
from tests.test_auth import make_env


class Wire:
    """Two workers' bus clients joined through the supervisor's fan-out over in-memory transports."""

    def __init__(self, *clients: BusClient):
        self.server = BusServerFactory()
        self.pairs = []
        for c in clients:
            f = protocol.Factory.forProtocol(_BusClientProtocol)
            f.client = c
            cp, sp = f.buildProtocol(None), self.server.buildProtocol(None)
            ct, st = StringTransport(), StringTransport()
            cp.makeConnection(ct)
            sp.makeConnection(st)
            self.pairs.append((cp, ct, sp, st))

    def pump(self) -> None:
        moved = True
        while moved:
            moved = False
            for cp, ct, sp, st in self.pairs:
                for src, dst in ((ct, sp), (st, cp)):
                    data = src.value()
                    if data:
                        src.clear()
                        dst.dataReceived(data)
                        moved = True


def _two(secret_b: bytes = b"s" * 32):
    """Two workers' authenticators on one database (the same stored hashes)."""
    a, b = make_env(secret=b"s" * 32), make_env(secret=secret_b)
    b.accounts.rows.update(a.accounts.rows)
    return a, b


def _worker(env, name: str) -> BusClient:
    client = BusClient(task.Clock(), "/nonexistent", ChangeHub(), name, on_login=env.auth.apply_shared)
    env.auth.on_verified = client.share_login
    env.auth.on_forget = client.share_forget
    return client


def test_a_login_verified_by_one_worker_is_a_cache_hit_in_the_other():
    a, b = _two()
    wire = Wire(_worker(a, "worker0"), _worker(b, "worker1"))
    assert a.login("alice@example.org", "alice-pw")[0].ok
    wire.pump()
    assert b.login("alice@example.org", "alice-pw")[0].ok
    assert a.runner.calls == ["verify"] and b.runner.calls == []
    # A wrong password is no hit: the entry is keyed by the HMAC of address and password.
    assert not b.login("alice@example.org", "wrong")[0].ok
    assert b.runner.calls == ["verify"]


def test_a_password_changed_elsewhere_or_a_forget_ends_the_shared_entry():
    a, b = _two()
    wire = Wire(_worker(a, "worker0"), _worker(b, "worker1"))
    a.login("alice@example.org", "alice-pw")
    wire.pump()
    a.auth.forget("alice@example.org")
    wire.pump()
    assert b.login("alice@example.org", "alice-pw")[0].ok and b.runner.calls == ["verify"]
    wire.pump()
    # The stored hash changed (another process): the entry names the old one and is not used.
    b.accounts.add(1, "alice@example.org", a.accounts.rows["bob@example.org"].password_hash)
    assert not b.login("alice@example.org", "alice-pw")[0].ok


def test_shared_entries_never_outlive_the_local_cache_time_and_bad_frames_are_ignored():
    b = make_env(secret=b"s" * 32)
    key = b.auth._cache_key("alice@example.org", "alice-pw")
    from mailserver.auth import _hash_id

    hid = _hash_id(b.accounts.rows["alice@example.org"].password_hash).hex()
    for bad in ({"t": "login"}, {"t": "login", "k": "zz", "a": "alice@example.org", "h": [hid], "s": 10},
                {"t": "login", "k": key.hex(), "a": 5, "h": [hid], "s": 10},
                {"t": "login", "k": key.hex(), "a": "alice@example.org", "h": [], "s": 10},
                {"t": "login", "k": key.hex(), "a": "alice@example.org", "h": [hid], "s": "nan"},
                {"t": "login", "k": key.hex()[:-2], "a": "alice@example.org", "h": [hid], "s": 10}):
        b.auth.apply_shared(bad)
    assert not b.auth._cache
    b.auth.apply_shared({"t": "login", "k": key.hex(), "a": "alice@example.org", "h": [hid], "s": 1e9})
    b.clock.advance(61)  # cache_seconds is 60 here, whatever the frame said
    b.login("alice@example.org", "alice-pw")
    assert b.runner.calls == ["verify"]


def test_workers_with_different_keys_share_nothing():
    a, b = _two(secret_b=b"t" * 32)
    wire = Wire(_worker(a, "worker0"), _worker(b, "worker1"))
    a.login("alice@example.org", "alice-pw")
    wire.pump()
    b.login("alice@example.org", "alice-pw")
    assert b.runner.calls == ["verify"]
