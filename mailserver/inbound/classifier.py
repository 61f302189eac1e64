"""The built-in classifier in the pipeline: the per-recipient Bayes verdict, correspondents, and the trainer.

* :class:`BayesCheck` (a check stage, before the spam policy): once per message it reads, in one store call,
  every local recipient account's trained totals and whether the sender is one of its correspondents; when one of
  them has trained enough to vote, it reads the first :data:`~mailserver.inbound.bayes.MAX_INPUT` bytes of the
  stored message, tokenizes them in the ``cpu`` pool and reads those accounts' counts of the tokens (one more call).  Then, per recipient, the account's own probability becomes a symbol of that recipient only
  (``BAYES_SPAM`` / ``BAYES_HAM`` / ``BAYES_UNSURE`` with the probability as detail, weighted by ``[antispam]
  bayes_spam_weight`` / minus ``bayes_ham_weight`` scaled by its distance from 0.5), once the account has trained at
  least ``bayes_min_spam`` spam and ``bayes_min_ham`` ham messages; ``BAYES_KNOWN_SENDER`` (minus ``known_sender_weight``)
  when the envelope sender or From address is one the account wrote to or replied to, and (by default) SPF, DKIM
  or DMARC passed for that address's domain.
* :class:`CorrespondentRecorder` (a check stage on authenticated submission, webmail sending included): the
  recipients of mail an account sends become its correspondents (``Store.set_flags`` adds the sender of a message
  marked ``\\Answered``).
* :class:`Trainer`: the store records training jobs with the user's own actions (``storage/bayes.py``); the trainer
  does them off the reactor (blob read in the blob pool, tokenizing in the cpu pool, the counts in one write), when
  the store says there is work and every ``interval`` seconds for jobs another process left.
"""

from __future__ import annotations

from twisted.internet import defer, task
from twisted.logger import Logger

from mailserver.delivery.router import LOCAL
from mailserver.delivery.stages import MessageInfo, Target
from mailserver.inbound import bayes, policy
from mailserver.threads import run_in
from storage import bayes as bayes_store

log = Logger()

#: Below this distance from 0.5 the classifier is unsure (a symbol of weight 0, kept for the "why").
UNSURE = 0.1
#: Seconds an account's trained totals are taken as known, and the most accounts remembered.
TOTALS_TTL = 30.0
MAX_CACHED = 100_000


def token_ids(raw: bytes | None) -> list[int] | None:
    """The message's token ids (cpu work); None for no message."""
    if raw is None:
        return None
    return sorted({bayes.token_id(t) for t in bayes.tokenize(raw)})


def weight_of(p: float, spam_weight: float, ham_weight: float) -> tuple[str, float]:
    """The symbol for probability ``p``: its name and weight."""
    if p >= 0.5 + UNSURE:
        return "BAYES_SPAM", spam_weight * (p - 0.5) / 0.5
    if p <= 0.5 - UNSURE:
        return "BAYES_HAM", -ham_weight * (0.5 - p) / 0.5
    return "BAYES_UNSURE", 0.0


def verified_senders(message: MessageInfo, needs_auth: bool) -> list[str]:
    """The envelope sender and From address, each only where its domain authenticated (unless not required)."""
    sender = (message.envelope.sender if message.envelope is not None else "") or ""
    from_address = policy._from_address(message.parsed)
    candidates = [a.lower() for a in (sender, from_address) if a and "@" in a]
    if not needs_auth:
        return list(dict.fromkeys(candidates))
    auth = message.memo.get("senderauth")
    if auth is None:
        return []
    passed: set[str] = set()
    spf = getattr(auth, "spf_mailfrom", None)
    if spf is not None and spf.result == "pass":
        passed.add(spf.domain.lower())
    passed |= {d.domain.lower() for d in getattr(auth, "dkim", ()) if d.result == "pass" and d.domain}
    passed |= {d.from_domain.lower() for d in getattr(auth, "dmarc", ()) if d.result == "pass" and d.from_domain}
    return list(dict.fromkeys(a for a in candidates if a.rpartition("@")[2] in passed))


class _Scan:
    """One message's classifier work: its token ids (read and tokenized only when a recipient's classifier votes),
    the verified senders, and each recipient account's counts."""

    def __init__(self, senders: list[str]):
        self.ids: list[int] | None = None
        self.senders = senders
        self.counts: dict = {}


class BayesCheck:
    """The check stage; it gives no verdict itself, only symbols (the policy decides).

    Each account's trained totals are kept for :data:`TOTALS_TTL` seconds (on ``clock``), so mail to accounts that
    have not trained enough costs no read at all unless there is a verified sender to look up; the trainer of this
    process forgets an account's entry when it trains it (another process's training shows within the TTL)."""

    name = "bayes"
    exact_mailbox = False

    def __init__(self, runner, config, *, clock=None):
        self.runner = runner
        self.cfg = config.antispam
        self.networks = policy.trusted_networks(config)
        self.clock = clock
        self._totals: dict[int, tuple[int, int, float]] = {}  # account -> (spam, ham, read at)

    def applies(self, message: MessageInfo) -> bool:
        return not policy.spam_exempt(message, self.networks)

    def votes(self, counts) -> bool:
        return counts.spam >= max(self.cfg.bayes_min_spam, 1) and counts.ham >= max(self.cfg.bayes_min_ham, 1)

    def forget(self, account_id: int) -> None:
        self._totals.pop(account_id, None)

    def _now(self) -> float:
        return self.clock.seconds() if self.clock is not None else float("-inf")

    async def check(self, message: MessageInfo, target: Target):
        account_id = getattr(target.route, "account_id", None)
        if target.route.kind != LOCAL or account_id is None:
            return None
        scan = message.memo.get(self.name)
        if scan is None:
            scan = message.memo[self.name] = _Scan(verified_senders(message, self.cfg.known_sender_needs_auth))
            await self._load(message, scan, _final_accounts(message) | {account_id})
        elif account_id not in scan.counts:  # a recipient routing did not name at RCPT (a redirect)
            await self._load(message, scan, {account_id})
        counts = scan.counts[account_id]
        card = policy.scorecard(message)
        cfg = self.cfg
        if counts.known_senders:
            card.add_for(target.address, "BAYES_KNOWN_SENDER", -cfg.known_sender_weight,
                         ", ".join(sorted(counts.known_senders)), "bayes")
        if self.votes(counts) and counts.tokens is not None and scan.ids is not None:
            p = bayes.probability(scan.ids, bayes.Counts(counts.spam, counts.ham, counts.tokens))
            name, weight = weight_of(p, cfg.bayes_spam_weight, cfg.bayes_ham_weight)
            card.add_for(target.address, name, weight, f"{p:.4f}", "bayes")
        return None

    async def _load(self, message: MessageInfo, scan: _Scan, accounts: set[int]) -> None:
        """At most one read for the message's recipients: their totals, correspondents and (for those that vote)
        token counts.  The message is read (its first bytes, once) and tokenized in the cpu pool only when a
        recipient votes or may (its totals are not known)."""
        now, cfg = self._now(), self.cfg
        known, maybe = {}, False
        for a in accounts:
            entry = self._totals.get(a)
            if entry is None or now - entry[2] > TOTALS_TTL:
                maybe = True
            else:
                known[a] = bayes_store.AccountCounts(entry[0], entry[1], {}, frozenset())
                maybe = maybe or self.votes(known[a])
        if not maybe and not scan.senders:
            scan.counts.update(known)  # nobody votes, no sender to look up: no read at all
            return
        if maybe and scan.ids is None:
            raw = await message.read(0, bayes.MAX_INPUT)
            scan.ids = await self.runner.cpu(token_ids, raw)
        got = await self.runner.call_store("bayes_counts", sorted(accounts), scan.ids if maybe else None,
                                           scan.senders, max(cfg.bayes_min_spam, 1), max(cfg.bayes_min_ham, 1),
                                           {a: (c.spam, c.ham) for a, c in known.items()})
        if len(self._totals) > MAX_CACHED:
            self._totals.clear()
        for a, c in got.items():
            if a not in known:  # read now (a known entry keeps the time it was read)
                self._totals[a] = (c.spam, c.ham, now)
        scan.counts.update(got)


def _final_accounts(message: MessageInfo) -> set[int]:
    out = set()
    for r in message.envelope.recipients if message.envelope is not None else ():
        for route in getattr(r.route, "routes", None) or ():
            if route.kind == LOCAL and route.account_id is not None:
                out.add(route.account_id)
    return out


class CorrespondentRecorder:
    """Authenticated submission: the account's recipients are its correspondents (once per message)."""

    name = "correspondents"
    exact_mailbox = False

    def __init__(self, runner):
        self.runner = runner

    def applies(self, message: MessageInfo) -> bool:
        c = message.client
        return c is not None and c.account_id is not None and message.envelope is not None

    async def check(self, message: MessageInfo, target: Target):
        if self.name not in message.memo:
            message.memo[self.name] = True
            addresses = [r.address for r in message.envelope.recipients]
            try:
                await self.runner.call_store("bayes_note_senders", message.client.account_id, addresses)
            except Exception:  # remembering correspondents must never stop the mail
                log.failure("noting correspondents of {qid} failed", qid=message.queue_id)
        return None


class Trainer:
    """Does the training jobs the store recorded (``storage/bayes.py``), off the reactor thread."""

    def __init__(self, reactor, astore, pools, config, *, interval: float = 60.0, batch: int = 20):
        self.reactor = reactor
        self.astore = astore
        self.pools = pools
        self.max_tokens = config.antispam.bayes_max_tokens
        self.interval = interval
        self.batch = batch
        self.trained = 0  # jobs done by this process (tests and metrics)
        #: Called with the account id of each training done (the check stage forgets its cached totals).
        self.on_trained = None
        self._running = False
        self._again = False
        self._idle: list[defer.Deferred] = []
        self._loop: task.LoopingCall | None = None

    def start(self) -> None:
        self._loop = task.LoopingCall(self.kick)
        self._loop.clock = self.reactor
        self._loop.start(self.interval, now=True)

    def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    def kick(self) -> None:
        """There may be work (call on the reactor thread)."""
        if self._running:
            self._again = True
            return
        self._running = True
        defer.ensureDeferred(self._drain()).addErrback(
            lambda f: log.failure("classifier training failed", f)).addBoth(self._done)

    def when_idle(self) -> defer.Deferred:
        """Fires once no training is running (tests)."""
        d: defer.Deferred = defer.Deferred()
        if self._running:
            self._idle.append(d)
        else:
            d.callback(None)
        return d

    def _done(self, _):
        self._running = False
        if self._again:
            self._again = False
            self.kick()
            return
        idle, self._idle = self._idle, []
        for d in idle:
            d.callback(None)

    async def _drain(self) -> None:
        while True:
            self._again = False
            jobs = await self.astore.bayes_pending(self.batch)
            for job in jobs:
                try:
                    raw = await self.astore.read_blob(job.blob_id, 0, bayes.MAX_INPUT)
                except Exception:  # the message is gone (expunged and collected): nothing to learn
                    raw = None
                ids = await run_in(self.reactor, self.pools.cpu, token_ids, raw)
                outcome = await self.astore.bayes_learn(job.account_id, job.blob_id, job.klass, ids, job_id=job.id,
                                                        max_tokens=self.max_tokens)
                self.trained += 1
                if self.on_trained is not None:
                    self.on_trained(job.account_id)
                log.info("classifier: account {account} message {blob} as {klass}: {outcome}",
                         account=job.account_id, blob=job.blob_id[:12], klass=job.klass, outcome=outcome)
            if len(jobs) < self.batch and not self._again:
                return
