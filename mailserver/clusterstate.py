"""Per-cluster state: what every server process sharing one database must agree on, behind one small interface.

Three pieces of protocol state would silently split if each process kept its own copy:

* the POP3 maildrop lock (RFC 1939 section 4: the server locks the maildrop for one session; a second session is
  answered ``-ERR [IN-USE]``, RFC 2449 section 8.1.1): :class:`MaildropLockTable`;
* failed-login counters per client IP and per account (:mod:`mailserver.auth` throttling), so that 20 wrong
  passwords spread over two nodes count as 20, not as 10 + 10: :class:`LoginFailures`;
* ``\\Recent`` (RFC 3501 2.3.2: a new message is \\Recent in exactly one session): :class:`RecentClaims`.

:class:`ClusterState` bundles one of each.  Two implementations:

* :func:`in_process` (this module, the default, used with SQLite where one process owns the database): plain
  Python objects, no I/O;
* :class:`mailserver.clusterstate_pg.PgClusterState`, chosen by the service when the database is PostgreSQL, which
  several processes or nodes may share: an advisory lock per maildrop, counters in a table, a "highest UID claimed
  as \\Recent" row per mailbox.

The contract every implementation follows: plain methods are cheap and never block (they run on the reactor
thread); methods that may need the database are coroutines (``async def``) that callers await.  The in-process
implementation finishes them without ever suspending, so on SQLite everything runs in the same reactor turn as if
it were synchronous.  Nothing here imports Twisted or the store.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from typing import Protocol

#: Client IPs / addresses with recent failures tracked at most (in-process); the least recently failed go first.
MAX_TRACKED_KEYS = 100_000
#: Failures remembered per key when its limit is 0 ("no maximum"): enough to reach any sensible delay cap.
UNLIMITED_FAILURES_KEPT = 64


def failures_kept(limit: int) -> int:
    """How many failures of one key are remembered: its limit, or :data:`UNLIMITED_FAILURES_KEPT` without one."""
    return limit if limit > 0 else UNLIMITED_FAILURES_KEPT


# --------------------------------------------------------------------------------------------- interface


class MaildropLockTable(Protocol):
    """One POP3 session per maildrop (RFC 1939 section 4).

    Taking the lock has two steps: :meth:`acquire` (this process; synchronous, called by the sans-IO session) and
    then :meth:`acquire_cluster` (every other process sharing the database).  :meth:`release` undoes both and
    never blocks; with PostgreSQL the database part is released in the background, in order, before any later
    :meth:`acquire_cluster` of the same account.  A process that dies loses its locks.
    """

    def acquire(self, account_id: int) -> bool:
        """Take the maildrop within this process; False if a session of this process holds it."""
        ...

    async def acquire_cluster(self, account_id: int) -> bool:
        """After :meth:`acquire`: take it against other processes; False if one of them holds it (the caller
        then refuses the session and calls :meth:`release`)."""
        ...

    def release(self, account_id: int) -> None:
        ...

    def held(self, account_id: int) -> bool:
        """Whether a session of this process holds the maildrop."""
        ...


class LoginFailures(Protocol):
    """Failed logins in a sliding window, per client IP key and per account address.

    Every method answers ``(ip_failures, account_failures)`` counted in ``(now - window, now]`` after it acted,
    each capped at :func:`failures_kept` of its limit.  ``now`` is the caller's clock (the reactor's), so every node
    must keep its clock in step (NTP).
    """

    async def counts(self, ip_key: str, address: str, now: float) -> tuple[int, int]:
        ...

    async def add(self, ip_key: str, address: str, now: float) -> tuple[int, int]:
        """Record one failure against both keys."""
        ...

    async def clear_account(self, ip_key: str, address: str, now: float) -> tuple[int, int]:
        """Forget the account's failures (after a good login); the IP's stay."""
        ...


class RecentClaims(Protocol):
    """Which session gets each new message as ``\\Recent`` (RFC 3501 2.3.2): exactly one of all sessions, the first
    that selects the mailbox read-write or has it selected when the message arrives.

    Mailboxes are keyed by (id, UIDVALIDITY): a mailbox deleted and created again may get the old row id back, and
    its messages are new to every session (RFC 3501 2.3.1.1).  ``uids`` arguments are the session's sorted UIDs.

    :meth:`claim` and :meth:`unclaimed_count` answer at once from what this process holds; call :meth:`reserve`
    (before a claim) or :meth:`refresh` (before a count) first so that other processes' claims are known.
    """

    def claim(self, mailbox_id: int, uid_validity: int, uids: Sequence[int]) -> list[int]:
        """The UIDs among ``uids`` that are now this session's \\Recent messages (no other session has them)."""
        ...

    def unclaimed_count(self, mailbox_id: int, uid_validity: int, uids: Sequence[int]) -> int:
        """How many of ``uids`` no session has claimed yet (STATUS RECENT, EXAMINE)."""
        ...

    async def reserve(self, mailbox_id: int, uid_validity: int, up_to_uid: int) -> None:
        """Take, for this process, every UID up to ``up_to_uid`` that no process has claimed yet."""
        ...

    async def refresh(self, mailbox_id: int, uid_validity: int) -> None:
        """Learn how far other processes have claimed (before :meth:`unclaimed_count`)."""
        ...

    def after_reserve(self, mailbox_id: int, uid_validity: int, up_to_uid: int, then: Callable[[], None]) -> None:
        """Call ``then()`` once :meth:`reserve` up to ``up_to_uid`` is done (or failed: it is logged): at once when
        nothing is left to reserve, else after one reservation per mailbox shared by every caller waiting for it
        (the IDLE fan-out: thousands of sessions of one mailbox wait for one database trip, not one each)."""
        ...


class ClusterState:
    """The per-cluster state of one server process: one of each piece, plus start/stop for their resources."""

    maildrop_locks: MaildropLockTable
    login_failures: LoginFailures
    recent: RecentClaims

    def start(self) -> None:
        """Acquire resources (connections, threads); the in-process state has none."""

    def stop(self) -> None:
        """Release them; locks held by this process end."""


# --------------------------------------------------------------------------------------------- in-process


class MaildropLocks:
    """In-process :class:`MaildropLockTable`: which accounts have a POP3 session in this process.

    One instance per server process, shared by its ``pop3`` and ``pop3s`` listeners.
    """

    def __init__(self) -> None:
        self._held: set[int] = set()

    def acquire(self, account_id: int) -> bool:
        if account_id in self._held:
            return False
        self._held.add(account_id)
        return True

    async def acquire_cluster(self, account_id: int) -> bool:
        return True  # no other process shares the database

    def release(self, account_id: int) -> None:
        self._held.discard(account_id)

    def held(self, account_id: int) -> bool:
        return account_id in self._held


class FailureLog:
    """Recent failure times per key, bounded in keys (``max_keys``) and in times per key (``keep``).

    Keys are kept in order of their last failure, so expired keys are found at the front.
    """

    def __init__(self, window: float, keep: int, max_keys: int = MAX_TRACKED_KEYS):
        self.window = window
        self.max_keys = max_keys
        self._keep = keep
        self._times: OrderedDict[str, deque[float]] = OrderedDict()

    def count(self, key: str, now: float) -> int:
        times = self._times.get(key)
        if times is None:
            return 0
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._times[key]
            return 0
        return len(times)

    def add(self, key: str, now: float) -> None:
        times = self._times.get(key)
        if times is None:
            times = self._times[key] = deque(maxlen=self._keep)
        times.append(now)
        self._times.move_to_end(key)
        self.prune(now)

    def reset(self, key: str) -> None:
        self._times.pop(key, None)

    def prune(self, now: float) -> None:
        while self._times:
            key, times = next(iter(self._times.items()))
            if times and times[-1] > now - self.window and len(self._times) <= self.max_keys:
                break
            del self._times[key]

    def __len__(self) -> int:
        return len(self._times)


class LocalLoginFailures:
    """In-process :class:`LoginFailures`: two bounded :class:`FailureLog` (``ip``, ``account``)."""

    def __init__(self, window: float, ip_limit: int, account_limit: int, *, max_keys: int = MAX_TRACKED_KEYS):
        self.ip = FailureLog(window, failures_kept(ip_limit), max_keys)
        self.account = FailureLog(window, failures_kept(account_limit), max_keys)

    def _counts(self, ip_key: str, address: str, now: float) -> tuple[int, int]:
        return self.ip.count(ip_key, now), self.account.count(address, now)

    async def counts(self, ip_key: str, address: str, now: float) -> tuple[int, int]:
        return self._counts(ip_key, address, now)

    async def add(self, ip_key: str, address: str, now: float) -> tuple[int, int]:
        self.ip.add(ip_key, now)
        self.account.add(address, now)
        return self._counts(ip_key, address, now)

    async def clear_account(self, ip_key: str, address: str, now: float) -> tuple[int, int]:
        self.account.reset(address)
        return self._counts(ip_key, address, now)


class RecentTracker:
    """In-process :class:`RecentClaims`: the highest UID of each mailbox already given to a session as \\Recent."""

    def __init__(self) -> None:
        self._claimed: dict[tuple[int, int], int] = {}

    def claim(self, mailbox_id: int, uid_validity: int, uids: Sequence[int]) -> list[int]:
        key = (mailbox_id, uid_validity)
        last = self._claimed.get(key, 0)
        start = bisect.bisect_right(uids, last)
        new = list(uids[start:])
        if new:
            if key not in self._claimed:
                # The mailbox's earlier incarnations are gone for good.
                for old in [k for k in self._claimed if k[0] == mailbox_id]:
                    del self._claimed[old]
            self._claimed[key] = new[-1]
        return new

    def unclaimed_count(self, mailbox_id: int, uid_validity: int, uids: Sequence[int]) -> int:
        last = self._claimed.get((mailbox_id, uid_validity), 0)
        return len(uids) - bisect.bisect_right(uids, last)

    async def reserve(self, mailbox_id: int, uid_validity: int, up_to_uid: int) -> None:
        return None  # every claim is decided in this process

    def after_reserve(self, mailbox_id: int, uid_validity: int, up_to_uid: int, then: Callable[[], None]) -> None:
        then()

    async def refresh(self, mailbox_id: int, uid_validity: int) -> None:
        return None


class LocalClusterState(ClusterState):
    """One process owns the database (SQLite): every piece in memory."""

    def __init__(self, limits) -> None:
        self.maildrop_locks = MaildropLocks()
        self.login_failures = LocalLoginFailures(limits.auth_failure_window, limits.auth_max_failures_per_ip,
                                                 limits.auth_max_failures_per_account)
        self.recent = RecentTracker()


def in_process(limits) -> LocalClusterState:
    """The default per-cluster state for ``limits`` (a :class:`mailserver.config.LimitsConfig`)."""
    return LocalClusterState(limits)
