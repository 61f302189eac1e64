"""One read per message for what the inbound checks need of its recipient accounts, over a per-process cache.

The classifier (``inbound/classifier.py``: trained totals, correspondents, token counts) and the spam policy
(``inbound/policy.py``: the recipient's sender rules) used to read the store once each, per message; now the first
of them asks :meth:`AccountStates.load`, which reads everything both need for **every** final recipient account
of the message in one store call (one thread hand-over, one transaction: ``Store.check_state``), and keeps the
answer in the message's memo for the other.  The store reads each account's versions first and only what changed
since this process last read it (``storage/checkstate.py``); the copies are kept here.

A change committed before a message's read (a rule edited in the webmail of any node, a message trained) is in
that message's verdict: nothing here is trusted without the versions read with the message.  What is saved is
the data (one statement per message while nothing changed), not the read.  On SQLite that statement is made in
the trip the message makes anyway to be stored and parsed (:meth:`AccountStates.prefetch`, after its data ended,
before its checks), for accounts whose last message wanted a read; when the copies held here are at those
versions the read is answered from them without a ``db_read`` trip (``checkstate.from_held``), else it is made
as before.  A change committed before the message's data ended is so in its verdict.  The one exception is the classifier's
own, as before: mail to accounts whose classifier has no say (too little training), with no verified sender to
look up, is not read for at all within :data:`QUIET_TTL` of the last read (:meth:`AccountStates.quiet`); the
spam policy, when the message scored anything, still reads the rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from twisted.internet import defer
from twisted.python.failure import Failure

from mailserver.delivery.router import LOCAL
from mailserver.delivery.stages import MessageInfo
from storage import checkstate
from storage.checkstate import AccountState

#: The most accounts whose state a process keeps (past it the cache starts again).
MAX_ACCOUNTS = 20_000
#: Seconds the classifier takes an account's "too little training to vote" as known without a read, when it has
#: no sender to look up either (mail to untrained accounts, from senders no check verified).
QUIET_TTL = 30.0
_MEMO = "account-state"
_VERSIONS = "account-versions"  # the versions prefetched in the message's store-and-parse trip


@dataclass
class MessageState:
    """What one message's read found: each account's state, the token counts of voting accounts, and the
    message's token ids when they were part of the read."""

    states: dict[int, AccountState] = field(default_factory=dict)
    tokens: dict[int, dict] = field(default_factory=dict)
    ids: list[int] | None = None
    senders: tuple[str, ...] = ()


def rule_addresses(message: MessageInfo) -> list[str]:
    """The addresses a recipient's sender rules are looked up for: the envelope sender and the From address."""
    from mailserver.inbound.policy import from_address

    sender = (message.envelope.sender if message.envelope is not None else "") or ""
    return [a for a in dict.fromkeys(a.lower() for a in (sender, from_address(message)) if a)]


def final_accounts(message: MessageInfo) -> set[int]:
    """The local accounts among the message's final recipients, as routing saw them at RCPT."""
    out = set()
    for r in message.envelope.recipients if message.envelope is not None else ():
        for route in getattr(r.route, "routes", None) or ():
            if route.kind == LOCAL and route.account_id is not None:
                out.add(route.account_id)
    return out


class AccountStates:
    """The process's copies of account states and the one read per message (``runner.call_store``)."""

    def __init__(self, runner, *, min_spam: int = 1, min_ham: int = 1, clock=None):
        self.runner = runner
        self.min_spam, self.min_ham = max(min_spam, 1), max(min_ham, 1)
        self.clock = clock
        self._held: dict[int, AccountState] = {}
        self._read_at: dict[int, float] = {}  # account -> when its copy was last confirmed by a read
        self.reads = 0  # store reads made (tests)
        self.jobs = 0  # pool jobs they took (several reads gathered in one: see _read)
        self.from_prefetch = 0  # reads answered from the prefetched versions, without a job (tests)
        self._wanted: dict[int, bool] = {}  # account -> whether its last message wanted a read (prefetch)
        self._waiting: list[tuple[tuple, defer.Deferred]] = []
        self._in_flight = False

    def held(self, account_id: int) -> AccountState | None:
        """This process's copy (maybe out of date: only a read says whether it holds)."""
        return self._held.get(account_id)

    def forget(self, account_id: int | None = None) -> None:
        """Drop a copy (all of them): the next message reads it (the versions keep every copy right anyway)."""
        if account_id is None:
            self._held.clear()
            self._read_at.clear()
            self._wanted.clear()
        else:
            self._held.pop(account_id, None)
            self._read_at.pop(account_id, None)

    def _now(self) -> float:
        return self.clock.seconds() if self.clock is not None else float("-inf")

    def quiet(self, accounts) -> bool:
        """Whether every one of these accounts was read within :data:`QUIET_TTL` and its classifier had no say:
        then the classifier, with no sender to look up, may skip the read (training elsewhere shows within the
        TTL; this process's trainer calls :meth:`forget`).  Sender rules are never taken from here."""
        now = self._now()
        for a in accounts:
            st, at = self._held.get(a), self._read_at.get(a)
            if st is None or at is None or now - at > QUIET_TTL or self._votes(st):
                return False
        return True

    def skipped(self, accounts) -> None:
        """A message to these accounts needed no read (:meth:`quiet`): the next one is not prefetched for."""
        for a in accounts:
            self._wanted.pop(a, None)

    def prefetch(self, message: MessageInfo):
        """``Stage.prefetch``: the versions of the message's final accounts (``Store.check_versions``), read in
        its store-and-parse trip, when the last message to one of them wanted a read and the store can
        (SQLite); None otherwise."""
        store = getattr(self.runner, "store", None)
        if store is None or not getattr(store, "sqlite", False):
            return None
        accounts = final_accounts(message)
        if not accounts or not any(a in self._wanted for a in accounts):
            return None
        return _VERSIONS, store.check_versions, (sorted(accounts),)

    def of(self, message: MessageInfo) -> MessageState | None:
        """What this message's read found, if it was made."""
        return message.memo.get(_MEMO)

    async def load(self, message: MessageInfo, account_id: int, *, senders: Sequence[str] = (),
                   token_ids: list[int] | None = None) -> MessageState:
        """The message's state, with ``account_id`` in it: read once for every final account of the message
        (and again only for an account it did not name at RCPT, or for token counts the first read lacked).
        ``senders`` are the addresses whose correspondent status the classifier wants; ``token_ids`` the
        message's tokens when a recipient's classifier may vote."""
        ms = message.memo.get(_MEMO)
        if ms is None:
            ms = message.memo[_MEMO] = MessageState(senders=tuple(senders))
            accounts = final_accounts(message) | {account_id}
        elif account_id not in ms.states:
            accounts = {account_id}  # a recipient routing did not name at RCPT (a redirect)
        elif token_ids is not None and ms.ids is None and self._votes(ms.states[account_id]):
            accounts = {a for a, st in ms.states.items() if self._votes(st)}  # the counts the first read lacked
        else:
            return ms
        wanted_senders = list(dict.fromkeys(list(ms.senders) + [s.lower() for s in senders]))
        held = {a: st for a in accounts if (st := self._held.get(a)) is not None}
        self.reads += 1
        args = (sorted(accounts), held, wanted_senders, rule_addresses(message), token_ids, self.min_spam,
                self.min_ham)
        now = message.memo.pop(_VERSIONS, None)  # only for the message's first read
        found = None
        if now is not None and all(a in now for a in accounts):
            found = checkstate.from_held(now, *args)
        if found is not None:
            self.from_prefetch += 1
            states, tokens = found
        else:
            states, tokens = await self._read(args)
        if len(self._held) > MAX_ACCOUNTS:
            self._held.clear()
            self._read_at.clear()
            self._wanted.clear()
        self._wanted.update((a, True) for a in states)
        self._held.update(states)
        now = self._now()
        self._read_at.update((a, now) for a in states)
        ms.states.update(states)
        ms.tokens.update(tokens)
        if token_ids is not None:
            ms.ids = token_ids
        return ms

    def _read(self, args: tuple) -> defer.Deferred:
        """``Store.check_state(*args)``: at once when no read is in flight; else gathered with the others that wait
        and made, each read on its own, in one pool job when the one in flight is done (``check_state_many``).
        Each message's read still starts after the message asked for it, so every change committed before is in
        its verdict; what is saved is a thread hand-over per message while many arrive together."""
        d = defer.Deferred()
        self._waiting.append((args, d))
        if not self._in_flight:
            self._start()
        return d

    def _start(self) -> None:
        batch, self._waiting = self._waiting, []
        self._in_flight = True
        self.jobs += 1
        if len(batch) == 1:
            job = self.runner.call_store("check_state", *batch[0][0])
            job.addCallback(lambda answer: [(True, answer)])
        else:
            job = self.runner.call_store("check_state_many", [args for args, _ in batch])

        def done(results):
            self._in_flight = False
            if self._waiting:
                self._start()
            if isinstance(results, Failure):
                for _, d in batch:
                    d.errback(results)
                return None
            for (_, d), (ok, value) in zip(batch, results, strict=True):
                if ok:
                    d.callback(value)
                else:
                    d.errback(Failure(value))
            return None

        job.addBoth(done)

    def _votes(self, st: AccountState) -> bool:
        spam, ham = st.totals
        return spam >= self.min_spam and ham >= self.min_ham

    def may_vote(self, accounts) -> bool:
        """Whether a recipient's classifier may vote, as far as this process knows (unknown accounts may)."""
        for a in accounts:
            st = self._held.get(a)
            if st is None or self._votes(st):
                return True
        return False
