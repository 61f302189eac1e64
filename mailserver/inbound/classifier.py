"""The built-in classifier in the pipeline: the per-recipient Bayes verdict, correspondents, and the trainer.

* :class:`BayesCheck` (a check stage, before the spam policy): once per message, in the one read of the recipients'
  account data it shares with the spam policy (``inbound/accountstate.py``: one store call for every local
  recipient, reusing this process's copies where the store's versions say they hold), it learns each account's
  trained totals and whether the sender is one of its correspondents; when one of them has trained enough to vote
  (or this process does not know yet), it first reads the first :data:`~mailserver.inbound.bayes.MAX_INPUT` bytes
  of the stored message and tokenizes them in the ``cpu`` pool, so that read brings the voting accounts' counts of
  the tokens too.  Then, per recipient, the account's own probability becomes a symbol of that recipient only
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
from mailserver.inbound.accountstate import AccountStates, final_accounts
from mailserver.threads import run_in

log = Logger()

#: Below this distance from 0.5 the classifier is unsure (a symbol of weight 0, kept for the "why").
UNSURE = 0.1


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
    from_address = policy.from_address(message)
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


class BayesCheck:
    """The check stage; it gives no verdict itself, only symbols (the policy decides).

    What it needs of the recipients' accounts (trained totals, correspondents, token counts) comes from the
    message's one read (:class:`~mailserver.inbound.accountstate.AccountStates`, shared with the spam policy),
    which reuses this process's copies where the store's versions say they hold.  The message is read (its first
    bytes, once) and tokenized in the cpu pool only when a recipient's classifier votes or may (its totals are
    not known here yet), before that read, so the counts come with it."""

    name = "bayes"
    exact_mailbox = False

    def __init__(self, runner, config, *, clock=None, states: AccountStates | None = None):
        self.runner = runner
        self.cfg = config.antispam
        self.networks = policy.trusted_networks(config)
        self.clock = clock
        self.states = states if states is not None else AccountStates(
            runner, min_spam=self.cfg.bayes_min_spam, min_ham=self.cfg.bayes_min_ham, clock=clock)

    def applies(self, message: MessageInfo) -> bool:
        return not policy.spam_exempt(message, self.networks)

    def votes(self, spam: int, ham: int) -> bool:
        """Whether an account that trained ``spam`` and ``ham`` messages has a say."""
        return spam >= max(self.cfg.bayes_min_spam, 1) and ham >= max(self.cfg.bayes_min_ham, 1)

    def prefetch(self, message: MessageInfo):
        """``Stage.prefetch``: the message's account versions (:meth:`AccountStates.prefetch`)."""
        return self.states.prefetch(message)

    def forget(self, account_id: int) -> None:
        """The trainer trained the account (the versions would show it anyway; this only frees the copy)."""
        self.states.forget(account_id)

    async def check(self, message: MessageInfo, target: Target):
        account_id = getattr(target.route, "account_id", None)
        if target.route.kind != LOCAL or account_id is None:
            return None
        states = self.states
        ms = states.of(message)
        senders = message.memo.get(self.name)
        if senders is None:
            senders = message.memo[self.name] = verified_senders(message, self.cfg.known_sender_needs_auth)
        accounts = final_accounts(message) | {account_id}
        if ms is None and not senders and states.quiet(accounts):
            states.skipped(accounts)
            return None  # nobody has a say and there is nobody to look up: no read (AccountStates.quiet)
        ids = ms.ids if ms is not None else None
        if ids is None and states.may_vote(accounts):
            ids = await self._token_ids(message)
        ms = await states.load(message, account_id, senders=senders, token_ids=ids)
        st = ms.states[account_id]
        spam, ham = st.totals
        if self.votes(spam, ham) and ms.ids is None:
            # Its totals moved past the threshold since this process last read them: the counts once more.
            ms = await states.load(message, account_id, senders=senders, token_ids=await self._token_ids(message))
        card = policy.scorecard(message)
        cfg = self.cfg
        known = st.known_senders(senders)
        if known:
            card.add_for(target.address, "BAYES_KNOWN_SENDER", -cfg.known_sender_weight, ", ".join(sorted(known)),
                         "bayes")
        counts = ms.tokens.get(account_id)
        if self.votes(spam, ham) and counts is not None and ms.ids is not None:
            p = bayes.probability(ms.ids, bayes.Counts(spam, ham, counts))
            name, weight = weight_of(p, cfg.bayes_spam_weight, cfg.bayes_ham_weight)
            card.add_for(target.address, name, weight, f"{p:.4f}", "bayes")
        return None

    async def _token_ids(self, message: MessageInfo) -> list[int]:
        """The message's token ids (its first MAX_INPUT bytes, tokenized in the cpu pool), once per message."""
        key = self.name + "-ids"
        ids = message.memo.get(key)
        if ids is None:
            raw = await message.read(0, bayes.MAX_INPUT)
            ids = message.memo[key] = await self.runner.cpu(token_ids, raw)
        return ids


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
