"""Greylisting (RFC 6647) over the real MX listener, with the server's greylisting clock a ``task.Clock``.

Clients connect from addresses of 127/8 (all this host's) to be different networks: 127.0.0.x share a /24,
127.0.1.x are another one.  No test waits for real time: the delay passes when the test advances the clock.
"""

from __future__ import annotations

import smtplib

import pytest
from twisted.internet import task

from mailserver.inbound.greylist import Greylister
from storage.greylist import GreylistPolicy
from tests import harness
from tests.dnsserver import dns_server
from tests.inbound.mail import PW, copies, message, tls

START = 1_800_000_000.0  # the clock's start (UNIX seconds, as stored)
BOB, CAROL = "bob@example.test", "carol@example.test"


def clock_for(*servers) -> task.Clock:
    """One task.Clock as the greylisting clock of every server given."""
    clock = task.Clock()
    clock.advance(START)
    for s in servers:
        harness.call(setattr, s.services.greylist, "clock", clock)
    return clock


def attempt(srv, source: str = "127.0.0.1", sender: str = "someone@remote.test", rcpt: str = BOB,
            subject: str = "hello") -> tuple[int, bytes]:
    """MAIL, RCPT and (when RCPT is accepted) DATA from ``source``: the RCPT reply if refused, else DATA's."""
    with smtplib.SMTP("127.0.0.1", srv.port("smtp"), timeout=30, source_address=(source, 0)) as c:
        c.ehlo("mx.remote.test")
        assert c.mail(sender)[0] == 250
        code, text = c.rcpt(rcpt)
        if code != 250:
            return code, text
        return c.data(message(subject))


def advance(clock: task.Clock, seconds: float) -> None:
    harness.call(clock.advance, seconds)


@pytest.fixture
def server(tmp_path):
    def start(**greylist):
        return harness.running_server(tmp_path / f"s{len(greylist)}", listeners=("smtp", "submission"),
                                      smtp={"trusted_networks": ["127.0.2.0/24"]},
                                      antispam={"greylist": {"enabled": True, **greylist}})
    return start


def users(srv):
    for a in (BOB, CAROL, "alice@example.test"):
        srv.add_user(a, PW)


def test_first_attempt_is_deferred_early_retry_too_then_it_passes(server):
    with server() as srv:
        users(srv)
        clock = clock_for(srv)
        code, text = attempt(srv)
        assert (code, text[:6]) == (451, b"4.7.1 ") and b"Greylisted" in text
        advance(clock, 120)
        assert attempt(srv)[0] == 451  # before the delay (300 s): still deferred
        advance(clock, 181)
        assert attempt(srv, subject="retried")[0] == 250
        assert [m["Subject"] for m, _k in copies(srv, BOB)] == ["retried"]
        advance(clock, 10 * 86400)
        assert attempt(srv, subject="known")[0] == 250  # a passed triplet is remembered


def test_each_triplet_is_its_own(server):
    """Another recipient or another sender is a new triplet; a neighbour in the client's /24 shares it."""
    with server() as srv:
        users(srv)
        clock = clock_for(srv)
        assert attempt(srv, "127.0.0.10")[0] == 451
        advance(clock, 301)
        assert attempt(srv, "127.0.0.11")[0] == 250  # the same /24
        assert attempt(srv, "127.0.0.11", rcpt=CAROL)[0] == 451  # another recipient
        assert attempt(srv, "127.0.0.11", sender="other@remote.test")[0] == 451  # another sender
        assert attempt(srv, "127.0.1.10")[0] == 451  # another /24
        assert attempt(srv, "127.0.0.12", sender="")[0] == 451  # the null sender is a sender too


def test_retry_after_the_window_starts_again(server):
    with server(retry_window=3600.0) as srv:
        users(srv)
        clock = clock_for(srv)
        assert attempt(srv)[0] == 451
        advance(clock, 3601)
        assert attempt(srv)[0] == 451  # too late: a new first attempt
        advance(clock, 301)
        assert attempt(srv)[0] == 250


def test_authenticated_and_trusted_clients_are_not_greylisted(server):
    with server() as srv:
        users(srv)
        clock_for(srv)
        assert attempt(srv, "127.0.2.5")[0] == 250  # smtp.trusted_networks
        with smtplib.SMTP("127.0.0.1", srv.port("submission"), timeout=30) as c:
            c.ehlo("client")
            c.starttls(context=tls())
            c.login("alice@example.test", PW)
            assert c.mail("alice@example.test")[0] == 250
            assert c.rcpt(BOB)[0] == 250
            raw = message("submitted").replace(b"Someone <someone@remote.test>", b"alice@example.test")
            assert c.data(raw)[0] == 250
        assert sorted(m["Subject"] for m, _k in copies(srv, BOB)) == ["hello", "submitted"]


def test_dnswl_listed_clients_are_not_greylisted(tmp_path):
    zones = {"wl.test": {"7.0.0.127": [("A", "127.0.10.2")]}}
    with dns_server(zones) as dns, harness.running_server(
            tmp_path, listeners=("smtp",), dns={"nameservers": [dns.address], "timeout": 2.0},
            antispam={"greylist": {"enabled": True}, "dnswl": [{"zone": "wl.test", "weight": -1.0}]}) as srv:
        users(srv)
        clock_for(srv)
        assert attempt(srv, "127.0.0.7")[0] == 250
        assert attempt(srv, "127.0.0.8")[0] == 451  # not listed


def test_after_data_the_whole_message_is_deferred(server):
    with server(stage="data") as srv:
        users(srv)
        clock = clock_for(srv)
        with smtplib.SMTP("127.0.0.1", srv.port("smtp"), timeout=30) as c:
            c.ehlo("mx.remote.test")
            c.mail("someone@remote.test")
            assert c.rcpt(BOB)[0] == 250 and c.rcpt(CAROL)[0] == 250  # RCPT is not greylisted here
            code, text = c.data(message("two"))
        assert (code, text[:5]) == (451, b"4.7.1")
        advance(clock, 301)
        with smtplib.SMTP("127.0.0.1", srv.port("smtp"), timeout=30) as c:
            assert c.sendmail("someone@remote.test", [BOB, CAROL], message("two")) == {}
        assert [m["Subject"] for m, _k in copies(srv, BOB)] == ["two"]
        assert [m["Subject"] for m, _k in copies(srv, CAROL)] == ["two"]


def test_auto_whitelist_lets_a_network_through_after_passes(server):
    with server(auto_whitelist=1) as srv:
        users(srv)
        clock = clock_for(srv)
        assert attempt(srv, "127.0.0.20")[0] == 451
        advance(clock, 301)
        assert attempt(srv, "127.0.0.20")[0] == 250
        assert attempt(srv, "127.0.0.21", rcpt=CAROL, sender="new@remote.test")[0] == 250
        assert attempt(srv, "127.0.1.20", rcpt=CAROL)[0] == 451  # another network


def test_expired_rows_are_pruned_by_the_collector(server):
    with server(retry_window=3600.0, pass_lifetime=7200.0) as srv:
        users(srv)
        clock = clock_for(srv)
        attempt(srv, "127.0.0.30")  # a triplet that never retries
        attempt(srv, "127.0.1.30")
        advance(clock, 301)
        assert attempt(srv, "127.0.1.30")[0] == 250  # passed: kept 7200 s
        assert _rows(srv) == 2
        advance(clock, 3600)
        harness.call(srv.server._collect_blobs)
        assert _rows(srv) == 1
        advance(clock, 7200)
        harness.call(srv.server._collect_blobs)
        assert _rows(srv) == 0


def _rows(srv) -> int:
    import sqlalchemy as sa

    with srv.store.engine.connect() as conn:
        return conn.execute(sa.text("SELECT count(*) FROM greylist")).scalar()


def test_networks_of_clients():
    from mailserver import config as cfgmod

    cfg = cfgmod.load_dict({"hostname": "mx.example.test", "data_dir": "/tmp/x",
                            "smtp": {"trusted_networks": ["10.0.0.0/8"]}, "antispam": {"greylist": {"enabled": True}}})
    g = Greylister(cfg, None, clock=task.Clock())
    assert g.network("192.0.2.77") == "192.0.2.0/24"
    assert g.network("2001:db8:1:2:3:4:5:6") == "2001:db8:1:2::/64"
    assert g.network("::ffff:192.0.2.9") == "192.0.2.0/24"
    assert g.network("10.1.2.3") is None and g.network("not an address") is None


def test_store_decisions():
    """The table of outcomes, straight on the store (SQLite)."""
    import tempfile

    from storage import greylist as gl
    from storage.blobs import FileBlobStore
    from storage.db import make_engine
    from storage.migrate import upgrade
    from storage.store import Store

    with tempfile.TemporaryDirectory() as d:
        engine = make_engine(f"sqlite:///{d}/db.sqlite3")
        upgrade(engine)
        store = Store(engine, FileBlobStore(d + "/blobs"))
        p = GreylistPolicy(delay=300, retry_window=3600, lifetime=86400 * 36, auto_whitelist=2)
        key = ("192.0.2.0/24", "a@x.test", "b@y.test")
        assert store.greylist_record(*key, 1000.0, p) == gl.NEW
        assert store.greylist_record(*key, 1100.0, p) == gl.EARLY
        assert store.greylist_known(*key, 1350.0, 2, p.lifetime) is None
        assert store.greylist_record(*key, 1350.0, p) == gl.PASSED
        assert store.greylist_known(*key, 1400.0, 2, p.lifetime) == gl.KNOWN
        assert store.greylist_record(*key, 1400.0, p) == gl.KNOWN
        other = ("192.0.2.0/24", "c@x.test", "b@y.test")
        assert store.greylist_record(*other, 1400.0, p) == gl.NEW
        assert store.greylist_record(*other, 1800.0, p) == gl.PASSED
        assert store.greylist_record("192.0.2.0/24", "new@x.test", "z@y.test", 1900.0, p) == gl.CLIENT
        assert store.prune_greylist(1000.0 + 86400 * 40) == 2
        engine.dispose()


@pytest.mark.postgres
def test_two_nodes_on_postgresql_share_a_triplet(tmp_path):
    base = harness.test_database_url()
    if not base:
        pytest.skip("MAILSERVER_TEST_DATABASE_URL not set")
    url = harness.fresh_pg_url(base)
    try:
        cfg = {"antispam": {"greylist": {"enabled": True}}}
        with harness.running_server(tmp_path / "a", listeners=("smtp",), database_url=url, **cfg) as a, \
                harness.running_server(tmp_path / "b", listeners=("smtp",), database_url=url, **cfg) as b:
            users(a)
            clock = clock_for(a, b)
            assert attempt(a, "127.0.0.40")[0] == 451
            assert attempt(b, "127.0.0.40")[0] == 451  # node b knows the first attempt: still early
            advance(clock, 301)
            assert attempt(b, "127.0.0.41")[0] == 250  # passes on the other node
            assert attempt(a, "127.0.0.41")[0] == 250
    finally:
        harness.drop_pg_schema(base, url)
