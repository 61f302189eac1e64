"""Shared set-up for outbound tests: a running server (no listeners needed), test DNS, a QueueRunner, waiting."""

from __future__ import annotations

import time
from contextlib import ExitStack, contextmanager

from twisted.internet import task

from tests import harness
from tests.dnsserver import dns_server

SENDER = "alice@example.test"


def wait_for(predicate, timeout: float = 15.0, interval: float = 0.02):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(interval)


def message(subject: str = "hello", body: bytes = b"Hello there.\r\n", sender: str = SENDER,
            to: str = "bob@remote.test") -> bytes:
    return (f"From: Alice <{sender}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n"
            f"Date: Mon, 01 Jan 2024 00:00:00 +0000\r\nMessage-ID: <{subject.replace(' ', '.')}@example.test>\r\n"
            f"\r\n").encode() + body


class Outbound:
    """A server + DNS + clock + runner; ``enqueue`` puts mail in the queue and kicks the runner."""

    def __init__(self, srv, dns, clock, runner):
        self.srv, self.dns, self.clock, self.runner = srv, dns, clock, runner
        self.store = srv.store

    def enqueue(self, raw: bytes, recipients, sender: str = SENDER, **kwargs) -> str:
        from storage.store import QueueRecipientSpec

        ref = self.store.blobs.put(raw)
        specs = [r if isinstance(r, QueueRecipientSpec) else QueueRecipientSpec(r) for r in recipients]
        kwargs.setdefault("next_attempt", self.clock.seconds())
        qid = self.store.enqueue(sender, ref, specs, **kwargs)
        harness.call(self.runner.kick)
        return qid

    def advance(self, seconds: float) -> None:
        harness.call(self.clock.advance, seconds)

    def queue_rows(self):
        from storage.queue import QueueStore

        return QueueStore(self.store).list()

    def inbox(self, address: str = SENDER):
        acct = self.store.get_account(address)
        mb = self.store.get_mailbox(acct.id, "INBOX")
        metas = self.store.list_messages(mb.id)
        return [self.store.read_blob(m.blob_id) for m in self.store.get_messages(mb.id, [x.uid for x in metas])]

    def idle(self) -> bool:
        return not self.runner.running and not self.runner.waiting


@contextmanager
def outbound(tmp_path, zones, *, hang=frozenset(), database_url: str = "", runner_kwargs=None, start=True,
             listeners=(), **config):
    """Yield an :class:`Outbound`; the runner uses a task.Clock set to the current time."""
    from mailserver.delivery.queue import QueueRunner

    with ExitStack() as stack:
        dns = stack.enter_context(dns_server(zones, hang=hang))
        config.setdefault("dns", {"nameservers": [dns.address], "timeout": 1.0})
        srv = stack.enter_context(harness.running_server(tmp_path, listeners=listeners, database_url=database_url,
                                                         **config))
        srv.add_user(SENDER, "pw")
        clock = task.Clock()
        clock.advance(time.time())
        runner = harness.call(lambda: QueueRunner(srv.services, clock=clock, **(runner_kwargs or {})))
        if start:
            harness.call(runner.start)
        try:
            yield Outbound(srv, dns, clock, runner)
        finally:
            harness.call(runner.stop)
