"""The recipient's filter: its Sieve script, in the FILTER place of the pipeline (``delivery/stages.py``).

Per local recipient: the account's active script, with its domain's global "before" and "after" scripts around it
(``storage/sieve.py``), compiled once and cached per account until the scripts' version changes: one read of the version of
all scripts at most every ``[sieve] cache_check_interval`` seconds, and only when that changed, one per account.  Compiling and running happen in the ``cpu`` pool: the facts are
the stored header (plus check stages' added fields), the body read from the blob only when the script needs it.
Then the actions become the stage's :class:`Verdict`:

* keep / fileinto -> ``copies`` (one per mailbox, flags and keywords; ``:create`` creates the mailbox first; a
  missing mailbox falls back to INBOX, as every delivery does);
* discard -> ``discard``; reject / ereject -> refuse 550 5.7.1 (the producer refuses at SMTP time when it is the only
  recipient, else the sender gets a failure report: RFC 5429 2.1);
* editheader -> a ``form`` of this recipient's own (the edited header + the body, a new blob); replace/enclose
  (RFC 5703) -> the same with the message the run rebuilt (redirects still send the message as it came);
* redirect -> a new message through the pipeline (envelope sender kept; marked ``forwarded_by`` the account, so a
  copy the pipeline queues for another domain gets SRS and an ARC set: ``delivery/forward.py``), with our trace field
  ``X-Sieve-Redirected-By`` (a message redirected by this account before, or ``max_redirect_hops`` times, is kept
  instead: a loop);
* vacation -> RFC 3834 checks (``sieve/vacation.py``), once per sender per period (claimed in the store), the reply
  from the recipient's address or an alias of theirs, with the null sender, through the pipeline.

A script that fails to compile or to run, or passes a limit, keeps the message in INBOX and the reason is logged:
mail is never lost to a filter.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from twisted.internet import defer
from twisted.logger import Logger

from mailserver.address import AddressError, mailbox_of
from mailserver.delivery.envelope import SIEVE, ClientInfo, Envelope, Recipient, Request
from mailserver.delivery.stages import FILTER, Copy, Verdict
from mailserver.sieve import (
    Env,
    Limits,
    MessageFacts,
    Redirect,
    Reject,
    Script,
    SieveCompileError,
    Vacation,
    compile_script,
    evaluate,
)
from mailserver.sieve import vacation as vac
from mailserver.sieve.message import split_message

log = Logger()

REDIRECT_TRACE = "X-Sieve-Redirected-By"
#: Bytes of a message read when its parsed header size is not known.
HEADER_READ_MAX = 256 * 1024


def limits_of(cfg) -> Limits:
    """The ``[sieve]`` section as evaluator limits."""
    return Limits(max_script_size=cfg.max_script_size, max_scripts=cfg.max_scripts, max_storage=cfg.max_storage,
                  max_actions=cfg.max_actions, max_redirects=cfg.max_redirects, max_steps=cfg.max_steps,
                  max_include_depth=cfg.max_include_depth, regex_timeout=cfg.regex_timeout,
                  vacation_min_period=cfg.vacation_min_period, vacation_max_period=cfg.vacation_max_period,
                  vacation_default_period=cfg.vacation_default_period)


def store_loader(store, account_id: int | None, domain_id: int | None):
    """``include`` from the store: :personal = the account's scripts, :global = its domain's (blocking)."""
    from storage.sieve import ACCOUNT, DOMAIN

    def load(location: str, name: str):
        if location == "personal" and account_id is not None:
            s = store.get_sieve_script(account_id, name, scope=ACCOUNT)
        elif location == "global" and domain_id is not None:
            s = store.get_sieve_script(domain_id, name, scope=DOMAIN)
        else:
            return None
        return s.content if s else None

    return load


def compile_for_account(store, sieve_config, account_id: int, name: str, text: str) -> Script:
    """Blocking (cpu pool): compile ``text`` as delivery would for this account (its and its domain's scripts for
    ``include``): what ManageSieve PUTSCRIPT and the webmail check before storing.  SieveCompileError names the
    line and column."""
    acct = store.get_account_by_id(account_id)
    domain = store.get_domain(acct.address.rpartition("@")[2]) if acct is not None else None
    loader = store_loader(store, account_id, domain.id if domain else None)
    return compile_script(text, name, loader=loader, limits=limits_of(sieve_config))


def compile_error_text(e: SieveCompileError) -> str:
    """``line L, column C: message`` (what ManageSieve answers and the webmail shows)."""
    return f"line {e.line}, column {e.col}: {e.message}" if e.line else e.message


def _score_header(facts: MessageFacts, name: str, top: int, scale: float) -> str:
    for value in facts.header(name):
        try:
            score = float(value.split()[0].rstrip(";,"))
        except (ValueError, IndexError):
            continue
        if score <= 0:
            return "1"
        return str(min(top, 1 + round((top - 1) * min(score, scale) / scale)))
    return "0"  # RFC 5235 3.1: "0" = not tested


def header_spam_score(facts: MessageFacts) -> str:
    """RFC 5235 spamtest from the inbound checks' ``X-Spam-Score`` field (a score of 10 or more is "10")."""
    return _score_header(facts, "x-spam-score", 10, 10.0)


def header_spam_percent(facts: MessageFacts) -> str:
    """RFC 5235 3.2 spamtestplus ``:percent`` from ``X-Spam-Score``: the score as a whole percentage of 10 (rounded
    down, "0" to "100"; "0" when the message was not scored, as Pigeonhole with a score status header)."""
    for value in facts.header("x-spam-score"):
        try:
            score = float(value.split()[0].rstrip(";,"))
        except (ValueError, IndexError):
            continue
        return str(int(max(0.0, min(score, 10.0)) * 10))
    return "0"


def header_virus_score(facts: MessageFacts) -> str:
    """RFC 5235 virustest from ``X-Virus-Score`` (0 untested, 1 clean ... 5 infected)."""
    return _score_header(facts, "x-virus-score", 5, 5.0)


@dataclass
class Bundle:
    """An account's compiled scripts: before, the user's, after (None when missing); or why they cannot run."""

    scripts: list[Script]
    version: tuple
    error: str = ""
    address: str = ""
    domain_id: int | None = None


class SieveFilter:
    """The FILTER stage.  ``store`` is the blocking Store (used in the cpu pool only), ``astore`` its asynchronous
    face (AsyncStore, or an inline one for tools), ``cpu(f, *args)`` runs CPU work off the reactor thread.
    ``pipeline`` is set once the pipeline exists (redirects and vacation replies go through it)."""

    name = FILTER

    def __init__(self, config, store, astore, cpu, *, clock=None):
        self.config = config
        self.cfg = config.sieve
        self.limits = limits_of(self.cfg)
        self.store = store
        self.astore = astore
        self.cpu = cpu
        self.clock = clock
        self.pipeline = None
        self._cache: dict[int, tuple[Bundle, int]] = {}  # account -> (bundle, generation it was checked in)
        self._generation = 0
        self._all_version = None  # the store's version of all scripts, read every cache_check_interval
        self._all_checked = float("-inf")

    def _now(self) -> float:
        return self.clock.seconds() if self.clock is not None else time.time()

    # ------------------------------------------------------------------ scripts

    def _version(self, account_id: int) -> tuple:
        """Blocking: the versions of the account's and its domain's scripts."""
        from storage.sieve import DOMAIN

        acct = self.store.get_account_by_id(account_id)
        if acct is None:
            return ("gone",)
        d = self.store.get_domain(acct.address.rpartition("@")[2])
        dv = self.store.sieve_version(d.id, scope=DOMAIN) if d else (0, 0.0)
        return (self.store.sieve_version(account_id), dv, d.id if d else None, acct.address)

    def _compile(self, account_id: int, version: tuple) -> Bundle:
        """Blocking (cpu pool): load and compile before, the active script, after."""
        from storage.sieve import AFTER, BEFORE, DOMAIN

        if version == ("gone",):
            return Bundle([], version)
        _, _, domain_id, address = version
        loader = store_loader(self.store, account_id, domain_id)
        texts = []
        if domain_id is not None:
            b = self.store.get_sieve_script(domain_id, BEFORE, scope=DOMAIN)
            texts.append(("global", BEFORE, b.content if b else None))
        active = self.store.active_sieve_script(account_id)
        texts.append(("personal", active.name if active else "", active.content if active else None))
        if domain_id is not None:
            a = self.store.get_sieve_script(domain_id, AFTER, scope=DOMAIN)
            texts.append(("global", AFTER, a.content if a else None))
        scripts = []
        try:
            for location, name, text in texts:
                if text is not None:
                    scripts.append(compile_script(text, name, loader=loader, limits=self.limits, location=location))
        except SieveCompileError as e:
            return Bundle([], version, error=f"compile error: {e}", address=address, domain_id=domain_id)
        return Bundle(scripts, version, address=address, domain_id=domain_id)

    async def bundle(self, account_id: int) -> Bundle:
        now = self._now()
        if now - self._all_checked >= self.cfg.cache_check_interval:
            # One read for every account: while no script anywhere changed, every cached bundle holds.
            self._all_checked = now
            version = await self.astore.sieve_version_all()
            if version != self._all_version:
                self._all_version = version
                self._generation += 1  # every bundle cached before is checked again
        generation = self._generation
        cached = self._cache.get(account_id)
        if cached is not None and cached[1] == generation:
            return cached[0]
        version = await self.astore.read(self._version, account_id)
        if cached is not None and cached[0].version == version:
            self._cache[account_id] = (cached[0], generation)
            return cached[0]
        b = await self.cpu(self._compile, account_id, version)
        self._cache[account_id] = (b, generation)
        return b

    def invalidate(self, account_id: int | None = None) -> None:
        """Forget compiled scripts (all, or one account's): the next delivery compiles again."""
        if account_id is None:
            self._cache.clear()
        else:
            self._cache.pop(account_id, None)

    # ------------------------------------------------------------------ the stage

    def check(self, message, target):
        if not self.cfg.enabled or target.route.account_id is None:
            return None
        return defer.ensureDeferred(self._check(message, target))

    async def _check(self, message, target) -> Verdict | None:
        account_id = target.route.account_id
        try:
            b = await self.bundle(account_id)
        except Exception:
            log.failure("sieve: loading the scripts of account {id} failed; keeping the message", id=account_id)
            return None
        if b.error:
            log.warn("sieve {qid} {rcpt}: {error}; implicit keep", qid=message.queue_id, rcpt=target.address,
                     error=b.error)
            return None
        if not b.scripts:
            return None
        parsed = message.parsed or {}
        header_size = parsed.get("header_size") or 0
        head = await message.read(0, header_size or HEADER_READ_MAX)
        try:
            out = await self.cpu(self._evaluate, b, message, target, head)
        except Exception:
            log.failure("sieve {qid} {rcpt}: the run failed; implicit keep", qid=message.queue_id,
                        rcpt=target.address)
            return None
        result, facts, own = out
        if result.error:
            log.warn("sieve {qid} {rcpt}: {error}; implicit keep", qid=message.queue_id, rcpt=target.address,
                     error=result.error)
            return None
        log.info("sieve {qid} {rcpt}: {actions}", qid=message.queue_id, rcpt=target.address,
                 actions=", ".join(_brief(a) for a in result.actions) + (" (implicit keep)"
                                                                         if result.implicit_keep else ""))
        return await self._verdict(result, facts, own, b, message, target)

    def _evaluate(self, b: Bundle, message, target, head: bytes):
        """Blocking (cpu pool): facts, lookups, the run."""
        account_id = target.route.account_id
        header = split_message(head)[0]
        if target.add_headers:
            from mailserver.delivery.trace import header_fields

            header = header_fields(target.add_headers) + header
        env_from = message.envelope.sender if message.envelope else ""
        rc = target.recipient
        facts = MessageFacts(header, size=message.size, envelope_from=env_from, envelope_to=target.address,
                             original_to=rc.address if rc is not None else target.address,
                             auth=message.client.authenticated if message.client else "",
                             load_body=lambda: self.store.blobs.read(message.blob_id))
        boxes = {m.name for m in self.store.list_mailboxes(account_id)}
        now = self._now()
        env = Env(now=now,
                  mailbox_exists=lambda n: n in boxes or n.upper() == "INBOX" and "INBOX" in boxes,
                  duplicate_seen=lambda key: bool(self.store.sieve_duplicates_seen(account_id, [key], now)),
                  spam_score=header_spam_score, spam_percent=header_spam_percent, virus_score=header_virus_score,
                  environment={"domain": b.address.rpartition("@")[2], "host": self.config.hostname,
                               "location": "MDA", "name": "mailserver", "phase": "during",
                               "remote-host": message.client.helo if message.client else "",
                               "remote-ip": message.client.ip if message.client else "", "version": "0.1"},
                  subaddress_separator=self.config.smtp.subaddress_separator or "+")
        result = evaluate(b.scripts, facts, env, self.limits)
        own = self.store.addresses_of(account_id) if any(isinstance(a, Vacation) for a in result.actions) else []
        return result, facts, own

    async def _verdict(self, result, facts: MessageFacts, own, b: Bundle, message, target) -> Verdict | None:
        account_id = target.route.account_id
        for a in result.actions:
            if isinstance(a, Reject):
                return Verdict.refuse("5.7.1", " ".join(a.reason.split()) or "Rejected by the recipient's filter")
        if result.duplicate_marks:
            await self.astore.mark_sieve_duplicates(account_id, result.duplicate_marks, self._now())
        form = None
        if result.header_fields is not None or result.message is not None:
            form = await self.cpu(self._edited_form, facts, message, result.message)
        raw_for_redirect = None
        kept_instead = False
        for a in result.actions:
            if isinstance(a, Redirect):
                if raw_for_redirect is None:
                    raw_for_redirect = await self.cpu(self._redirect_bytes, facts, message, b.address)
                ok = await self._redirect(a, raw_for_redirect, facts, message, b.address)
                if not ok and not a.copy:
                    kept_instead = True
            elif isinstance(a, Vacation):
                await self._vacation(a, facts, own, message, target, b.address)
        stores = result.stores
        if kept_instead and not any(m.upper() == "INBOX" for m, _, _ in stores):
            stores.append(("INBOX", (), False))
        if not stores:
            return Verdict.discard()
        copies = []
        for mailbox, flags, create in stores:
            if create and mailbox.upper() != "INBOX":
                await self._create(account_id, mailbox)
            bits, keywords = _flag_bits(flags)
            copies.append(Copy(mailbox, bits, keywords))
        return Verdict(copies=tuple(copies), form=form)

    async def _create(self, account_id: int, mailbox: str) -> None:
        from storage.store import AlreadyExists, StoreError

        try:
            await self.astore.create_mailbox(account_id, mailbox)
        except AlreadyExists:
            pass
        except StoreError as e:
            log.warn("sieve: fileinto :create {mailbox}: {error}", mailbox=mailbox, error=str(e))

    # ------------------------------------------------------------------ editheader

    def _edited_form(self, facts: MessageFacts, message, rebuilt: bytes | None = None):
        """Blocking: this recipient's copy with the edited header, or the message replace/enclose rebuilt (a new
        blob, parsed)."""
        from mailserver.delivery.body import Form, parse

        if rebuilt is not None:
            new = rebuilt
        else:
            raw = self.store.blobs.read(message.blob_id)
            _, body = split_message(raw)
            new = facts.header_bytes() + b"\r\n" + body
        ref = self.store.blobs.put(new)
        return Form(b"\0sieve", None, ref, parse(new))

    # ------------------------------------------------------------------ redirect

    def _redirect_bytes(self, facts: MessageFacts, message, account: str) -> bytes:
        raw = self.store.blobs.read(message.blob_id)
        _, body = split_message(raw)
        # RFC 5321 4.4: the next final delivery adds its own Return-Path, and a message we send must not carry one
        # (the check stages' fields, Authentication-Results, come before ours in this view).
        fields = [f for f in facts.fields if f[0].lower() != "return-path"]
        head = "".join(f"{k}:{v}\r\n" for k, v in fields).encode("utf-8")
        trace = f"{REDIRECT_TRACE}: <{account}>\r\n".encode()
        return trace + head + b"\r\n" + body

    async def _redirect(self, a: Redirect, raw: bytes, facts: MessageFacts, message, account: str) -> bool:
        hops = facts.raw_header(REDIRECT_TRACE)
        if any(account.lower() in h.lower() for h in hops) or len(hops) >= self.cfg.max_redirect_hops:
            log.warn("sieve {qid}: redirect to {to} not done: a redirect loop ({n} hops); keeping it",
                     qid=message.queue_id, to=a.address, n=len(hops))
            return False
        try:
            target = mailbox_of(a.address)
        except AddressError:
            log.warn("sieve {qid}: redirect to {to}: not an address", qid=message.queue_id, to=a.address)
            return False
        sender = message.envelope.sender if message.envelope else ""
        rp = mailbox_of(sender) if sender else None
        env = Envelope(rp, (Recipient(target),), body="" if raw.isascii() else "8BITMIME",
                       smtputf8=not a.address.isascii() or not (sender or "").isascii())
        # A new transaction from us (as Pigeonhole hands a redirect to its MTA): Received, Return-Path at the final
        # delivery, and the Received count's loop check (RFC 5321 6.3) on top of ours.
        client = ClientInfo(ip="127.0.0.1", helo=self.config.hostname, esmtp=True)
        result = await self.pipeline.ingest(Request(SIEVE, envelope=env, client=client, may_relay=True, log=True,
                                                    forwarded_by=account), raw)
        if not result.accepted:
            log.warn("sieve {qid}: redirect to {to} failed: {why}", qid=message.queue_id, to=a.address,
                     why="; ".join(f"{o.status} {o.text}" for o in result.failed))
            return False
        return True

    # ------------------------------------------------------------------ vacation

    async def _vacation(self, v: Vacation, facts: MessageFacts, own, message, target, account: str) -> None:
        sender = message.envelope.sender if message.envelope else ""
        own = list(own) or [account]
        why = vac.reason_not_to_reply(facts, sender, own, v)
        if why is not None:
            log.info("sieve {qid}: no vacation reply to <{sender}>: {why}", qid=message.queue_id, sender=sender,
                     why=why)
            return
        now = self._now()
        claimed = await self.astore.claim_sieve_vacation_reply(target.route.account_id, vac.handle_of(v), sender,
                                                               now, v.seconds)
        if not claimed:
            log.info("sieve {qid}: no vacation reply to <{sender}>: already answered within {s} s",
                     qid=message.queue_id, sender=sender, s=v.seconds)
            return
        from_address = _own_from(v.from_, own) or account
        raw = vac.build_reply(facts, v, sender=sender, from_address=from_address, hostname=self.config.hostname,
                              now=now)
        env = Envelope(None, (Recipient(mailbox_of(sender)),), body="" if raw.isascii() else "8BITMIME",
                       smtputf8=not sender.isascii())
        result = await self.pipeline.ingest(Request(SIEVE, envelope=env, may_relay=True, log=True), raw)
        for o in result.failed:
            log.warn("sieve: vacation reply to <{sender}> failed: {status} {text}", sender=sender, status=o.status,
                     text=o.text)


def _own_from(value: str, own: list[str]) -> str:
    """:from only when it names one of the recipient's own addresses (else the recipient's address is used)."""
    if not value:
        return ""
    from email.utils import parseaddr

    addr = parseaddr(value)[1].lower()
    return addr if addr in {a.lower() for a in own} else ""


def _flag_bits(flags) -> tuple[int, tuple[str, ...]]:
    from storage.models import SYSTEM_FLAGS

    bits, keywords = 0, []
    for f in flags:
        if f.lower() in SYSTEM_FLAGS:
            bits |= SYSTEM_FLAGS[f.lower()]
        elif not f.startswith("\\") and f not in keywords:
            keywords.append(f)
    return bits, tuple(keywords)


def _brief(a) -> str:
    from mailserver.sieve import describe
    from mailserver.sieve.actions import Result

    lines = describe(Result(actions=[a], implicit_keep=False))
    return lines[0] if lines else type(a).__name__.lower()


class InlineStore:
    """``astore`` for tools with an inline runner: the blocking store's methods as fired Deferreds."""

    def __init__(self, store):
        self._store = store

    def read(self, f, *args, **kwargs):
        return defer.execute(f, *args, **kwargs)

    def __getattr__(self, name: str):
        method = getattr(self._store, name)

        def call(*args, **kwargs):
            return defer.execute(lambda: _value(method(*args, **kwargs)))

        return call


def _value(x):
    from storage.records import Changed

    return x.value if isinstance(x, Changed) else x
