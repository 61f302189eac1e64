"""Deferred-returning access to the store for code on the reactor thread.

Reads run in the ``db_read`` pool, writes in ``db_write`` (one thread for SQLite).  Mutations return
:class:`storage.store.Changed`; their change events are published on the reactor thread *after* the commit, before the
caller's Deferred fires, so a session that made a change and a session watching the mailbox see it in the same order.

Deliveries go through :class:`GroupCommitter`: requests that arrive while a batch is being written wait and are then
written together in one transaction (one fsync), which is how one SQLite writer reaches thousands of deliveries a second.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.logger import Logger

from mailserver.threads import Pools, run_in
from storage.changes import ChangeHub
from storage.store import Changed, Delivery, DeliveryResult, Store

log = Logger()

#: Store methods that write (run in the writer pool).
WRITE_METHODS = frozenset({
    "add_domain", "ensure_domain", "remove_domain", "add_account", "remove_account", "set_password_hash",
    "update_account", "set_quota", "add_alias", "remove_alias", "create_mailbox", "delete_mailbox", "rename_mailbox",
    "set_subscribed", "deliver_batch", "append", "append_many", "set_flags", "expunge", "delete_messages", "copy", "collect_blobs",
    "enqueue",
})


class GroupCommitter:
    """Batches deliveries into as few transactions as the writer allows, in a two-stage pipeline.

    Stage 1 flushes a batch's blobs (blob pool); stage 2 commits flushed batches (writer pool).  The stages run at
    the same time, so while batch N commits, batch N+1's blobs are being flushed and deliveries arriving meanwhile
    collect into batch N+2.  A delivery's Deferred fires after its transaction committed.
    """

    def __init__(self, reactor, astore: "AsyncStore", max_batch: int = 256):
        self.reactor = reactor
        self.astore = astore
        self.max_batch = max_batch
        self._pending: list[tuple[Delivery, Deferred]] = []
        self._flushed: list[tuple[Delivery, Deferred]] = []
        self._flushing = False
        self._committing = False
        self._scheduled = False
        self.batches = 0
        self.delivered = 0

    @property
    def _running(self) -> bool:
        return bool(self._flushing or self._committing or self._pending or self._flushed)

    def submit(self, delivery: Delivery) -> Deferred:
        d: Deferred = Deferred()
        self._pending.append((delivery, d))
        if not self._scheduled:
            self._scheduled = True
            # Let deliveries that arrive in this reactor turn join the batch.
            self.reactor.callLater(0, self._kick)
        return d

    def _kick(self) -> None:
        self._scheduled = False
        self._flush_next()
        self._commit_next()

    # stage 1 -----------------------------------------------------------------------------------------

    def _flush_next(self) -> None:
        if self._flushing or not self._pending:
            return
        self._flushing = True
        batch, self._pending = self._pending[:self.max_batch], self._pending[self.max_batch:]
        d = run_in(self.reactor, self.astore.pools.blob, self.astore.store.blobs.ensure_synced,
                   [b[0].blob for b in batch])

        def flushed(_):
            self._flushed.extend(batch)

        def failed(f):
            log.failure("flushing message bodies failed", f)
            for _, dd in batch:
                dd.errback(f)

        def next_(_):
            self._flushing = False
            self._flush_next()
            self._commit_next()

        d.addCallbacks(flushed, failed).addBoth(next_)

    # stage 2 -----------------------------------------------------------------------------------------

    def _commit_next(self) -> None:
        if self._committing or not self._flushed:
            return
        self._committing = True
        batch, self._flushed = self._flushed[:self.max_batch], self._flushed[self.max_batch:]
        d = run_in(self.reactor, self.astore.pools.db_write, self.astore.store.deliver_batch, [b[0] for b in batch])

        def committed(changed: Changed):
            self.batches += 1
            self.delivered += len(batch)
            self.astore.publish(changed.changes)
            for (_, dd), result in zip(batch, changed.value, strict=True):
                dd.callback(result)

        def failed(f):
            log.failure("batch delivery failed; retrying one by one", f)
            return self._one_by_one(batch)

        def next_(_):
            self._committing = False
            self._commit_next()
            self._flush_next()

        d.addCallbacks(committed, failed).addBoth(next_)

    @inlineCallbacks
    def _one_by_one(self, batch):
        for delivery, d in batch:
            try:
                changed = yield run_in(self.reactor, self.astore.pools.db_write, self.astore.store.deliver_batch,
                                       [delivery])
            except Exception as e:
                d.errback(e)
                continue
            self.astore.publish(changed.changes)
            d.callback(changed.value[0])


class AsyncStore:
    """``astore.<method>(...)`` runs ``store.<method>(...)`` off the reactor thread and returns a Deferred.

    For mutations the Deferred fires with the :class:`Changed` (value + changes) after the changes were published.
    """

    def __init__(self, reactor, store: Store, pools: Pools, hub: ChangeHub, *, max_batch: int = 256):
        self.reactor = reactor
        self.store = store
        self.pools = pools
        self.hub = hub
        self.committer = GroupCommitter(reactor, self, max_batch=max_batch)

    def publish(self, changes) -> None:
        self.hub.publish(changes)

    def deliver(self, delivery: Delivery) -> Deferred:
        """Deliver one message (group-committed with concurrent ones); fires with a DeliveryResult."""
        return self.committer.submit(delivery)

    def append(self, account_id: int, mailbox_id: int, blob, parsed: dict, flags: int = 0,
               keywords: tuple[str, ...] = (), internal_date: float | None = None) -> Deferred:
        """IMAP APPEND through the group committer (concurrent appends and deliveries share a transaction).

        Fires with ``Changed((uid_validity, uid), [])`` (the changes were already published, as for
        ``Store.append``); fails with QuotaExceeded or NotFound like it.
        """
        from storage.store import NotFound, QuotaExceeded

        d = self.committer.submit(Delivery(account_id, blob, parsed, "", flags, tuple(keywords), internal_date,
                                           True, mailbox_id))

        def done(result: DeliveryResult):
            if result.ok:
                return Changed((result.uid_validity, result.uid), [])
            if result.error == "overquota":
                raise QuotaExceeded("mailbox full")
            raise NotFound("no such mailbox")

        return d.addCallback(done)

    def read(self, f: Callable, *args, **kwargs) -> Deferred:
        """Run any blocking read ``f`` in the read pool."""
        return run_in(self.reactor, self.pools.db_read, f, *args, **kwargs)

    def read_blob(self, blob_id: str, start: int = 0, end: int | None = None) -> Deferred:
        return run_in(self.reactor, self.pools.blob, self.store.blobs.read, blob_id, start, end)

    def finish_blob(self, writer) -> Deferred:
        """``writer.finish()`` (fsync) in the blob pool; fires with the BlobRef."""
        return run_in(self.reactor, self.pools.blob, writer.finish)

    def __getattr__(self, name: str) -> Callable[..., Deferred]:
        method = getattr(self.store, name)
        if not callable(method) or name.startswith("_"):
            raise AttributeError(name)
        pool = self.pools.db_write if name in WRITE_METHODS else self.pools.db_read

        def call(*args, **kwargs) -> Deferred:
            d = run_in(self.reactor, pool, method, *args, **kwargs)
            if name in WRITE_METHODS:
                d.addCallback(self._published)
            return d

        call.__name__ = name
        return call

    def _published(self, result: Any) -> Any:
        if isinstance(result, Changed):
            self.publish(result.changes)
        return result


__all__ = ["AsyncStore", "GroupCommitter", "DeliveryResult"]
