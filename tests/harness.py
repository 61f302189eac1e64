"""Test harness: a real MailServer on 127.0.0.1 (port 0) in a reactor running in a background thread.

Tests drive it with real blocking clients (smtplib, imaplib, poplib, a browser) from the test thread::

    def test_something(tmp_path):
        with running_server(tmp_path, listeners=("smtp", "imap")) as srv:
            srv.add_user("alice@example.test", "secret")
            with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as c: ...

``srv.call(f, *args)`` runs ``f`` on the reactor thread and waits for its (Deferred) result.
"""

from __future__ import annotations

import copy
import os
import threading
import uuid
from contextlib import contextmanager
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.threads import blockingCallFromThread

from mailserver import config as config_mod

_reactor_thread: threading.Thread | None = None
_lock = threading.Lock()

TEST_HOSTNAME = "mail.example.test"
TEST_DOMAIN = "example.test"
ALL_LISTENERS = ("smtp", "submission", "submissions", "imap", "imaps", "pop3", "pop3s", "http", "https",
                 "managesieve")

_hasher = None


def ensure_reactor() -> None:
    """Start the global reactor in a daemon thread (once per test process)."""
    global _reactor_thread
    with _lock:
        if _reactor_thread is None:
            _reactor_thread = threading.Thread(target=reactor.run, kwargs={"installSignalHandlers": False},
                                               name="reactor", daemon=True)
            _reactor_thread.start()


def call(f, *args, **kwargs):
    """Run ``f`` on the reactor thread; wait for its result (Deferreds are waited on)."""
    ensure_reactor()
    return blockingCallFromThread(reactor, f, *args, **kwargs)


def hasher():
    global _hasher
    if _hasher is None:
        from mailserver.auth import PasswordHasher

        _hasher = PasswordHasher("argon2", low_cost=True)  # cheap rounds for tests; server costs are tested in test_auth
    return _hasher


def _merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def test_database_url() -> str | None:
    return os.environ.get("MAILSERVER_TEST_DATABASE_URL") or None


def fresh_pg_url(base_url: str) -> str:
    """A URL of ``base_url`` whose search_path is a new, empty schema (isolates tests sharing one database)."""
    import sqlalchemy as sa

    schema = "t_" + uuid.uuid4().hex[:12]
    eng = sa.create_engine(base_url)
    with eng.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    eng.dispose()
    sep = "&" if "?" in base_url else "?"
    return f"{base_url}{sep}options=-csearch_path%3D{schema}"


def drop_pg_schema(base_url: str, url: str) -> None:
    """Drop the schema made by :func:`fresh_pg_url` (after the test's engines were disposed)."""
    import sqlalchemy as sa

    schema = url.rsplit("%3D", 1)[1]
    eng = sa.create_engine(base_url)
    try:
        with eng.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    finally:
        eng.dispose()


@contextmanager
def migrated_store(tmp_path: Path, database_url: str | None = None, *, domains=(TEST_DOMAIN,)):
    """A migrated Store on SQLite in ``tmp_path`` (or on ``database_url``) with ``domains`` added; its engine is
    disposed at the end.  The body of the store tests' ``store`` fixtures."""
    from storage import migrate
    from storage.blobs import FileBlobStore
    from storage.db import make_engine
    from storage.store import Store

    engine = make_engine(database_url or f"sqlite:///{tmp_path}/db.sqlite3")
    try:
        migrate.upgrade(engine)
        store = Store(engine, FileBlobStore(Path(tmp_path) / "blobs"))
        for name in domains:
            store.add_domain(name)
        yield store
    finally:
        engine.dispose()


def make_config(tmp_path: Path, listeners=("smtp",), domains=(TEST_DOMAIN,), database_url: str = "",
                **overrides) -> config_mod.Config:
    table = {
        "hostname": TEST_HOSTNAME,
        "data_dir": str(Path(tmp_path) / "data"),
        "database_url": database_url,
        "listen": {name: ["127.0.0.1:0"] for name in listeners},
        "domain": [{"name": d} for d in domains],
        # Tests never send mail off the machine: no queue runner unless a test asks for one (and then it must
        # point [dns] at its own loopback DNS server); lookups that slip through go to a closed loopback port.
        "queue": {"run": False},
        "dns": {"nameservers": ["127.0.0.1:9"], "timeout": 2.0},
        # Sender authentication asks DNS for every message from outside on the MX port: off unless a test gives it
        # a DNS server of its own (tests/inbound/senderauth_env.py); a lookup of that closed port waits its timeout.
        "senderauth": {"enabled": False},
        # The server's own digest runner looks once a day on the real clock; digest tests drive a DigestRunner of
        # their own on a task.Clock (tests/quarantine/test_digest.py), so no test gets an unexpected digest.
        "quarantine": {"digest_check_interval": 86400.0},
    }
    if database_url and not database_url.startswith("sqlite"):
        # Declared shared so that PostgreSQL tests keep file blobs (refused at start otherwise); no test reads
        # through one server a body that another server stored under its own data_dir.
        table["store"] = {"shared_data_dir": True}
    table = _merge(table, overrides)
    return config_mod.load_dict(table, "test-config")


class ServerHandle:
    def __init__(self, server):
        self.server = server
        self.config = server.config
        self.store = server.store

    @property
    def services(self):
        """The running server's :class:`mailserver.services.Services` (what its protocols are given)."""
        return self.server.provided

    def port(self, name: str, *, proxied: bool = False) -> int:
        """The port of listener ``name`` in ``[listen]`` (``[listen_proxied]`` with ``proxied``)."""
        return self.server.port(name, proxied=proxied)

    def call(self, f, *args, **kwargs):
        return call(f, *args, **kwargs)

    def server_sessions(self, family: str) -> int:
        """Connections the server counts as open for a protocol family (``smtp``, ``imap``, ``pop3``)."""
        limiter = self.server.provided.state.connections.get(family)
        return call(limiter.count) if limiter is not None else 0

    def wait_for(self, condition, timeout: float = 10.0) -> None:
        """Poll ``condition()`` until it holds; fail after ``timeout`` seconds (a bound, never a measurement)."""
        import time

        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met within {timeout}s")
            time.sleep(0.02)

    def add_user(self, address: str, password: str, **kwargs):
        return self.store.add_account(address, hasher().hash(password), **kwargs)

    def deliver(self, address: str, raw: bytes, mailbox: str = "INBOX", **kwargs):
        """Deliver through the running server (group commit, change events published)."""
        from mailserver.ingest import deliver_raw

        acct = self.store.get_account(address)
        assert acct is not None, f"no account {address}"
        return call(deliver_raw, self.server.provided, acct.id, raw, mailbox=mailbox, **kwargs)


@contextmanager
def running_server(tmp_path, listeners=("smtp",), domains=(TEST_DOMAIN,), database_url: str | None = None,
                   queue_options: dict | None = None, **overrides):
    """Start a MailServer with the given listeners on 127.0.0.1:0; stop it (and everything it started) after.

    ``queue_options`` go to the server's QueueRunner (with ``queue={"run": True}``), e.g. a ``port_map`` sending the
    test MX hosts to loopback receivers.
    """
    from mailserver.service import MailServer

    cfg = make_config(tmp_path, listeners, domains, database_url or "", **overrides)
    ensure_reactor()
    server = MailServer(cfg, reactor)
    server.queue_options = dict(queue_options or {})
    call(server.startService)
    try:
        yield ServerHandle(server)
    finally:
        call(server.stopService)
