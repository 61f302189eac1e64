"""The shared-mailbox tests on one server, or on two server processes' worth of MailServer sharing one PostgreSQL
database ("two-pg"): the store is set up through the first node, and every new client connection (IMAP session,
SMTP delivery, POP3) goes to the next node in turn, so the sessions of two members opened one after the other sit on
different nodes and a delivery on one node must reach readers on the other (events across nodes)."""

from __future__ import annotations

import itertools
from contextlib import ExitStack, contextmanager

import pytest

from tests import harness
from tests.harness import running_server

NODES = ["one", pytest.param("two-pg", marks=pytest.mark.postgres)]


class Nodes:
    """Looks like a :class:`tests.harness.ServerHandle` (its store, add_user, deliver are the first node's);
    ``port(name)`` hands out the nodes' listeners round robin, per listener name."""

    def __init__(self, handles):
        self.handles = list(handles)
        self.served = [0] * len(self.handles)
        self.reset()

    def reset(self) -> None:
        """Start every listener's rotation at the first node again (each test's sessions land the same way)."""
        self._turns: dict[str, itertools.cycle] = {}

    def port(self, name: str, **kwargs) -> int:
        turn = self._turns.setdefault(name, itertools.cycle(range(len(self.handles))))
        i = next(turn)
        self.served[i] += 1
        return self.handles[i].port(name, **kwargs)

    def __getattr__(self, attr):
        return getattr(self.handles[0], attr)


@contextmanager
def nodes(kind: str, tmp_path, listeners):
    """One server (SQLite) for ``one``; two nodes on a fresh PostgreSQL schema for ``two-pg`` (skipped, visibly,
    without MAILSERVER_TEST_DATABASE_URL)."""
    if kind == "one":
        with running_server(tmp_path / "one", listeners=listeners) as srv:
            yield Nodes([srv])
        return
    base = harness.test_database_url()
    if not base:
        pytest.skip("MAILSERVER_TEST_DATABASE_URL not set")
    url = harness.fresh_pg_url(base)
    try:
        with ExitStack() as stack:
            handles = [stack.enter_context(running_server(tmp_path / n, listeners=listeners, database_url=url))
                       for n in ("a", "b")]
            for h in handles:
                assert h.server.pg_bridge.ready.wait(60)  # returns when LISTEN is up; slow only on a loaded machine
            cluster = Nodes(handles)
            yield cluster
            assert all(cluster.served), cluster.served  # both nodes had clients: the variant went across nodes
    finally:
        harness.drop_pg_schema(base, url)
