"""Deferred-returning access to the store for code on the reactor thread.

``astore.<method>(…)`` runs the Store method of that name in the pool its declaration names (``storage.access``:
``@reads`` in ``db_read``, ``@writes`` and ``@writes_changes`` in ``db_write``, one thread for SQLite); a method
without a declaration is refused (AttributeError), so none can fall through to the wrong pool.  The changes of a
``@writes_changes`` method's :class:`storage.store.Changed` are published on the reactor thread *after* the commit,
before the caller's Deferred fires, so a session that made a change and a session watching the mailbox see it in the
same order.

Deliveries go through :class:`GroupCommitter`: requests that arrive while a batch is being written wait and are then
written together in one transaction (one fsync), which is how one SQLite writer reaches thousands of deliveries a second.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.logger import Logger
from twisted.python.failure import Failure

from mailserver.threads import Pools, run_in
from storage.access import access_of
from storage.changes import ChangeHub
from storage.db import write_lock
from storage.store import Changed, Delivery, DeliveryResult, Store

log = Logger()


#: While deliveries arrive together (a commit carried more than one, or one was submitted while another was still
#: being flushed or committed), a batch that would start at once with the flush stage idle waits this long for more:
#: with worker processes each committer sees only its own sessions, and without the window two busy workers made
#: 1.6-2x the commits of one process for the same messages (measured: a third fewer commits and ~20 % less CPU per
#: message with 3 ms; docs/benchmarks.md, branch smtpw).  The overlap rule is for a worker with two or three
#: sessions: their deliveries take turns through the two stages and each commits alone, so no commit ever carries
#: more than one (docs/benchmarks.md, second smtp17 section).  A lone client never waits: each of its deliveries is
#: submitted after the previous one was committed, and the window closes after COLLECT_KEEP commits of one each.
COLLECT_WINDOW = 0.003
COLLECT_KEEP = 8
#: The window closes as soon as no message that could still join it is on its way: producers announce a message
#: when it begins (:meth:`GroupCommitter.expect`: SMTP at DATA/BDAT, every other producer when it hands its message
#: over) and again when its copies are submitted or it ended without any (:meth:`GroupCommitter.arrived`).  With
#: every session of a worker's batch already in it, waiting the rest of the window only delays every reply; a
#: message still arriving (a slow client in DATA) keeps the window open, at most COLLECT_WINDOW, as before.


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
        self.window = COLLECT_WINDOW
        self._together = 0  # commits of one delivery each before the collection window closes again
        self.expecting = 0  # messages begun whose copies are not submitted yet (expect / arrived)
        self._timer = None  # the scheduled _kick (its window may be cut short by arrived)

    @property
    def _running(self) -> bool:
        return bool(self._flushing or self._committing or self._pending or self._flushed)

    def submit(self, delivery: Delivery | None, make: Callable[[], Delivery] | None = None) -> Deferred:
        """Commit ``delivery``; or, with ``make`` (blocking, run in stage 1 before the flush), the Delivery it
        returns: a body that is still only in memory is stored there, in the trip that flushes it."""
        d: Deferred = Deferred()
        if self._flushing or self._committing or self._flushed:
            # another delivery is still on its way to a commit: sessions are delivering at the same time
            self._together = COLLECT_KEEP
        self._pending.append((delivery, d, make))
        if not self._scheduled:
            self._scheduled = True
            # Let deliveries that arrive in this reactor turn join the batch, and, while deliveries have been
            # arriving together, the flush would start now and another message is on its way, those of the next
            # few milliseconds.
            wait = self.window if self._together and not self._flushing and self.expecting > 0 else 0
            self._timer = self.reactor.callLater(wait, self._kick)
        return d

    def expect(self) -> None:
        """A message has begun that may submit copies (see COLLECT_WINDOW's note); :meth:`arrived` follows once."""
        self.expecting += 1

    def arrived(self) -> None:
        """A message announced by :meth:`expect` has submitted its copies, or ended without any: when no other is
        on its way, a batch waiting in its collection window goes now."""
        self.expecting -= 1
        if self.expecting <= 0:
            self.expecting = 0
            timer = self._timer
            if timer is not None and timer.active() and timer.getTime() > self.reactor.seconds():
                timer.reset(0)

    def _kick(self) -> None:
        self._scheduled = False
        self._timer = None
        self._flush_next()
        self._commit_next()

    # stage 1 -----------------------------------------------------------------------------------------

    def _flush_next(self) -> None:
        if self._flushing or not self._pending:
            return
        self._flushing = True
        batch, self._pending = self._pending[:self.max_batch], self._pending[self.max_batch:]
        blobs = self.astore.store.blobs

        def flush() -> list:
            made = []
            for delivery, _, make in batch:
                if make is None:
                    made.append(delivery)
                    continue
                try:
                    made.append(make())
                except Exception:
                    made.append(Failure())  # this delivery fails alone
            blobs.ensure_synced([m.blob for m in made if not isinstance(m, Failure)])
            return made

        d = run_in(self.reactor, self.astore.pools.blob, flush)

        def flushed(made):
            for (_, dd, _make), m in zip(batch, made, strict=True):
                if isinstance(m, Failure):
                    log.failure("storing a message body failed", m)
                    dd.errback(m)
                else:
                    self._flushed.append((m, dd))

        def failed(f):
            log.failure("flushing message bodies failed", f)
            for _, dd, _make in batch:
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
        d = run_in(self.reactor, self.astore.pools.db_write, self._commit_flushed)

        def committed(out):
            batch, changed = out
            if isinstance(changed, Failure):
                log.failure("batch delivery failed; retrying one by one", changed)
                return self._one_by_one(batch)
            self.batches += 1
            self.delivered += len(batch)
            self._together = COLLECT_KEEP if len(batch) > 1 else max(0, self._together - 1)
            self.astore.publish(changed.changes)
            for (_, dd), result in zip(batch, changed.value, strict=True):
                dd.callback(result)

        def next_(_):
            self._committing = False
            self._commit_next()
            self._flush_next()

        d.addCallback(committed).addErrback(lambda f: log.failure("group commit failed", f)).addBoth(next_)

    def _commit_flushed(self) -> tuple[list, Changed | Failure]:
        """In the writer thread: (the batch, its Changed or Failure).  The batch is what stage 1 has flushed by the
        time this process holds the write lock: while another worker process commits on the same SQLite file, the
        deliveries flushed meanwhile join this commit instead of waiting for one of their own (the reactor only
        appends to ``_flushed``; only this thread takes from it)."""
        store = self.astore.store
        with write_lock(store.engine):
            n = min(len(self._flushed), self.max_batch)
            batch = self._flushed[:n]
            del self._flushed[:n]
            try:
                return batch, store.deliver_batch([b[0] for b in batch])
            except Exception:
                return batch, Failure()

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

    def deliver(self, delivery: Delivery | None, make: Callable[[], Delivery] | None = None) -> Deferred:
        """Deliver one message (group-committed with concurrent ones); fires with a DeliveryResult.  ``make``:
        see :meth:`GroupCommitter.submit`."""
        return self.committer.submit(delivery, make)

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
        store = self.__dict__.get("store")
        method = getattr(store, name, None) if store is not None and not name.startswith("_") else None
        access = access_of(method)
        if access is None or access.kind == "blocking":
            raise AttributeError(f"Store.{name} is not a unit of work declared with @reads, @writes or "
                                 "@writes_changes (storage/access.py)")
        pool = self.pools.db_write if access.writes else self.pools.db_read
        if access.publishes:
            def call(*args, **kwargs) -> Deferred:
                return run_in(self.reactor, pool, method, *args, **kwargs).addCallback(self._published, name)
        else:
            def call(*args, **kwargs) -> Deferred:
                return run_in(self.reactor, pool, method, *args, **kwargs)

        call.__name__ = name
        call.__doc__ = method.__doc__
        self.__dict__[name] = call  # built once per name
        return call

    def _published(self, result: Any, name: str) -> Any:
        if not isinstance(result, Changed):
            raise TypeError(f"Store.{name} is declared @writes_changes but returned {type(result).__name__}")
        self.publish(result.changes)
        return result


__all__ = ["AsyncStore", "GroupCommitter", "DeliveryResult"]
