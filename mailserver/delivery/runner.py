"""Where the pipeline's blocking work runs.

:class:`ReactorRunner` (a running server): blob and parse work in the blob pool, routing reads in ``db_read``, DNS work of
the checks in ``dns``, local deliveries through the group committer (``AsyncStore.deliver``), change events published.  :class:`InlineRunner`
(command-line tools, no reactor): the same calls made at once in the calling thread, each returning a Deferred that
has already fired, so the pipeline's coroutine completes before ``finish()`` returns.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.python.failure import Failure

from mailserver.threads import run_in

#: At most this many calls of one reactor turn share a trip to the blob pool (``ReactorRunner.blob_grouped``), and
#: at most about this many message bytes: small messages (a 5 KB one takes ~0.2 ms to store and parse) share a trip,
#: a large one goes alone, so the hashing and file writes of large ones (which release the GIL) still run in parallel
#: threads (grouping 100 KB messages by 8 cut the CPU per delivery but also the rate on a loaded 2-core machine).
BLOB_GROUP = 8
BLOB_GROUP_BYTES = 48 * 1024


def _run_group(calls: list) -> list:
    """In a pool thread: each call's (True, value) or (False, Failure), in order; one failing fails only itself."""
    out = []
    for f, args in calls:
        # No explicit GIL hand-over between two messages: a group is at most ~48 KB of small messages (~1-2 ms),
        # its file writes release the GIL anyway, and the interpreter's switch interval bounds the rest; a
        # sleep(0) per message cost a futex wake-up and a thread switch each (measured: more CPU per delivery).
        try:
            out.append((True, f(*args)))
        except BaseException:
            out.append((False, Failure()))
    return out


class ReactorRunner:
    def __init__(self, reactor, pools, astore, kick_queue):
        self.reactor = reactor
        self.pools = pools
        self.astore = astore
        self._kick_queue = kick_queue
        self._grouped: list[tuple] = []  # (f, args, Deferred) waiting for the end of this reactor turn
        self._group_scheduled = False

    @property
    def store(self):
        """The synchronous store, for work that is already on a worker thread (``Stage.prefetch``)."""
        return self.astore.store

    def blob(self, f, *args, **kwargs) -> defer.Deferred:
        return run_in(self.reactor, self.pools.blob, f, *args, **kwargs)

    def blob_grouped(self, f, *args, size: int = 0) -> defer.Deferred:
        """Like :meth:`blob`, for short independent work on a message of ``size`` bytes: the calls made in one
        reactor turn go to the blob pool in groups (``BLOB_GROUP`` calls, ``BLOB_GROUP_BYTES``), one thread trip
        per group instead of one per call (a hop costs the reactor thread about as much as storing a small
        message).  Each call's Deferred fires with its own result or failure."""
        d = defer.Deferred()
        self._grouped.append((f, args, d, size))
        if not self._group_scheduled:
            self._group_scheduled = True
            self.reactor.callLater(0, self._send_groups)
        return d

    def _send_groups(self) -> None:
        self._group_scheduled = False
        pending, self._grouped = self._grouped, []
        group: list = []
        total = 0
        for call in pending:
            group.append(call)
            total += call[3]
            if len(group) >= BLOB_GROUP or total >= BLOB_GROUP_BYTES:
                self._send(group)
                group, total = [], 0
        if group:
            self._send(group)

    def _send(self, group: list) -> None:
        run_in(self.reactor, self.pools.blob, _run_group, [(c[0], c[1]) for c in group]).addCallbacks(
            self._group_done, self._group_failed, callbackArgs=(group,), errbackArgs=(group,))

    @staticmethod
    def _group_done(results: list, group: list) -> None:
        for (ok, value), (_, _, d, _) in zip(results, group, strict=True):
            if ok:
                d.callback(value)
            else:
                d.errback(value)

    @staticmethod
    def _group_failed(f: Failure, group: list) -> None:
        for c in group:
            c[2].errback(f)

    def read(self, f, *args, **kwargs) -> defer.Deferred:
        return run_in(self.reactor, self.pools.db_read, f, *args, **kwargs)

    def cpu(self, f, *args, **kwargs) -> defer.Deferred:
        """CPU work (signing, the classifier's tokenizing) in the ``cpu`` pool."""
        return run_in(self.reactor, self.pools.cpu, f, *args, **kwargs)

    def dns(self, f, *args, **kwargs) -> defer.Deferred:
        """Blocking DNS work (the inbound checks) in the ``dns`` pool."""
        return run_in(self.reactor, self.pools.dns, f, *args, **kwargs)

    def read_blob(self, blob_id: str, start: int = 0, end: int | None = None) -> defer.Deferred:
        return self.astore.read_blob(blob_id, start, end)

    def deliver(self, delivery, make=None) -> defer.Deferred:
        """Group-commit ``delivery``, or the one ``make`` returns (blocking: run in the committer's flush)."""
        return self.astore.deliver(delivery, make)

    def expect(self) -> None:
        """A message has begun (its copies may follow): the group committer's window waits for it."""
        self.astore.committer.expect()

    def arrived(self) -> None:
        """That message's copies are submitted, or it ended without any."""
        self.astore.committer.arrived()

    def append_many(self, account_id: int, mailbox_id: int, items) -> defer.Deferred:
        return self.astore.append_many(account_id, mailbox_id, items)

    def enqueue(self, *args, **kwargs) -> defer.Deferred:
        return self.astore.enqueue(*args, **kwargs)

    def call_store(self, name: str, *args, **kwargs) -> defer.Deferred:
        """Any declared Store unit of work (``Store.<name>``), in its pool; changes published."""
        return getattr(self.astore, name)(*args, **kwargs)

    def kick_queue(self) -> None:
        self._kick_queue()


class InlineRunner:
    """Runs everything at once on the calling thread (never on the reactor thread of a server)."""

    def __init__(self, store, hub=None):
        self.store = store
        self.hub = hub  # a ChangeHub to publish to, if any

    def blob(self, f, *args, **kwargs) -> defer.Deferred:
        return defer.execute(f, *args, **kwargs)

    read = blob
    dns = blob
    cpu = blob

    def blob_grouped(self, f, *args, size: int = 0) -> defer.Deferred:
        return defer.execute(f, *args)

    def read_blob(self, blob_id: str, start: int = 0, end: int | None = None) -> defer.Deferred:
        return defer.execute(self.store.blobs.read, blob_id, start, end)

    def _published(self, changed):
        if self.hub is not None:
            self.hub.publish(changed.changes)
        return changed

    def deliver(self, delivery, make=None) -> defer.Deferred:
        return defer.execute(lambda: self._published(self.store.deliver_batch([make() if make else delivery])).value[0])

    def expect(self) -> None:
        pass  # every delivery is committed at once

    arrived = expect

    def append_many(self, account_id: int, mailbox_id: int, items) -> defer.Deferred:
        return defer.execute(lambda: self._published(self.store.append_many(account_id, mailbox_id, items)))

    def enqueue(self, *args, **kwargs) -> defer.Deferred:
        return defer.execute(self.store.enqueue, *args, **kwargs)

    def call_store(self, name: str, *args, **kwargs) -> defer.Deferred:
        """``Store.<name>(...)`` now; a Changed result is published."""
        from storage.records import Changed

        def call():
            result = getattr(self.store, name)(*args, **kwargs)
            return self._published(result) if isinstance(result, Changed) else result

        return defer.execute(call)

    def kick_queue(self) -> None:
        pass  # the server's queue runner finds it at its next poll


def result_now(d: defer.Deferred):
    """The result of a Deferred that has already fired (InlineRunner); raises its failure."""
    out = []
    d.addBoth(out.append)
    if not out:
        raise RuntimeError("the pipeline waited for something an inline runner cannot provide")
    if isinstance(out[0], Failure):
        out[0].raiseException()
    return out[0]
