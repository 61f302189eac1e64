"""One score, one policy: the message's spam score card and the thresholds that turn its total into an action.

Every spam check adds named, weighted symbols to the message's :class:`ScoreCard` (one per message, kept in
``MessageInfo.memo``: a check runs once per message however many recipients it has).  A check whose verdict
depends on the recipient (the built-in classifier: each account's own Bayes data and correspondents) adds its
symbols for that recipient only (:meth:`ScoreCard.add_for`); each recipient's total is the message's symbols plus
its own.  The :class:`SpamPolicy`
stage, registered after every scorer, then decides *per recipient*, because each recipient's domain (and account)
may have its own :class:`Thresholds` (``[antispam.account."a@x"]`` -> ``[antispam.domain."x"]`` -> ``[antispam]``):

===========  ==========================================================================================
action       what the recipient's copy gets
===========  ==========================================================================================
accept       ``X-Spam-Score`` and ``X-Spam-Symbols`` (the "why") when anything scored it
tag          the same and ``X-Spam: yes``
junk         tagged, delivered to Junk with the keyword ``$Junk``
quarantine   held in the quarantine (``Verdict.quarantine("spam", ...)``, with every symbol as a fact)
defer        451 4.7.1 (the sending server retries; rspamd's "greylist" and "soft reject")
refuse       550 5.7.1 at the end of DATA: refusing beats accepting and bouncing (no backscatter)
===========  ==========================================================================================

An engine may also decide itself (:meth:`ScoreCard.force`): rspamd's "reject" is a refusal whatever our
thresholds say, "soft reject"/"greylist" a deferral, "add header"/"rewrite subject" at least a tag; the action is
the more severe of the engine's and the thresholds'.  A threshold refusal that would refuse some recipients of a
message while others accept it is turned into quarantine for those (a partial refusal after DATA means a failure
report to the envelope sender, which for spam is backscatter).  A recipient's own sender rules (the webmail's
"always allow" / "block sender", ``Store.sender_rules``, for an address or a whole ``@domain``: the address's own
rule wins) come last: an allowed envelope sender or From address is at
most tagged (unless the engine itself refuses or defers), a blocked one goes to Junk.  A scorer that could not run marks the card
unchecked (``X-Spam-Status: unchecked``) or defers the message itself, as its ``on_error`` says.

Authenticated submission, trusted networks and mail without a client (reports, imports, APPEND) are not
spam-scored (:func:`spam_exempt`); the virus scan (``inbound/clamd.py``) does not depend on this.

Our fields go at the top of the copy, above our Received field; a sender's own ``X-Spam:`` lines stay below it
(the message is stored byte-exact), so whoever reads these fields (a filter, a client rule) must take the first.
"""

from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import dataclass, field

from mailserver.delivery.stages import Fact, MessageInfo, Target, Verdict
from storage.quarantine import rule_for

ACCEPT, TAG, JUNK, QUARANTINE, DEFER, REFUSE = "accept", "tag", "junk", "quarantine", "defer", "refuse"
#: Actions from the mildest to the most severe: of two, the later one wins.
SEVERITY = (ACCEPT, TAG, JUNK, QUARANTINE, DEFER, REFUSE)

JUNK_MAILBOX = "Junk"
JUNK_KEYWORD = "$Junk"
#: Most symbols a card keeps, and the longest name and detail kept of each (an engine's reply is not trusted).
MAX_SYMBOLS = 256
MAX_SYMBOL_NAME = 64
MAX_SYMBOL_DETAIL = 200
#: The longest X-Spam-Symbols value (folded over several lines); symbols past it are left out ("...").
MAX_SYMBOLS_HEADER = 1500
#: The longest reason text put into an SMTP reply.
MAX_REPLY_TEXT = 200

_CARD = "spam-scorecard"
_NAME_BAD = re.compile(r"[^A-Za-z0-9_.\-]")
_TEXT_BAD = re.compile(r"[^\x20-\x7e]")


def clean_name(name: str) -> str:
    """A symbol name safe in a header: letters, digits, ``_.-`` only, at most MAX_SYMBOL_NAME characters."""
    return _NAME_BAD.sub("_", str(name))[:MAX_SYMBOL_NAME] or "_"


def clean_text(text: str, limit: int = MAX_REPLY_TEXT) -> str:
    """Printable ASCII on one line (an SMTP reply or a header value), at most ``limit`` characters."""
    return _TEXT_BAD.sub("?", str(text))[:limit].strip()


@dataclass(frozen=True)
class Symbol:
    """One named reason of the score: its weight and what it saw (e.g. rspamd's options)."""

    name: str
    weight: float
    detail: str = ""
    source: str = ""  # the check that added it ("rspamd", ...)
    counted: bool = True  # False: already part of an engine's score (ScoreCard.engine_score)


@dataclass
class ScoreCard:
    """The spam facts of one message: symbols with weights, an engine's own decision, checks that could not run."""

    symbols: list[Symbol] = field(default_factory=list)
    #: An engine's own decision (action, text): rspamd's reject -> REFUSE, soft reject -> DEFER, add header -> TAG.
    forced: tuple[str, str] | None = None
    #: A score reported by an engine that weighs its own symbols (rspamd): the total is this plus our symbols.
    engine_score: float | None = None
    scored: bool = False
    unchecked: list[str] = field(default_factory=list)  # which scorers could not run
    #: Symbols of one recipient only (a per-account classifier's verdict), by lower-cased recipient address.
    per_recipient: dict[str, list[Symbol]] = field(default_factory=dict)

    def add(self, name: str, weight: float, detail: str = "", source: str = "") -> None:
        if len(self.symbols) < MAX_SYMBOLS and math.isfinite(weight):
            self.symbols.append(Symbol(clean_name(name), float(weight), clean_text(detail, MAX_SYMBOL_DETAIL),
                                       source))
        self.scored = True

    def add_for(self, address: str, name: str, weight: float, detail: str = "", source: str = "") -> None:
        """A symbol that counts for this recipient only (its own Bayes data, its own correspondents)."""
        mine = self.per_recipient.setdefault(address.lower(), [])
        if len(mine) < MAX_SYMBOLS and math.isfinite(weight):
            mine.append(Symbol(clean_name(name), float(weight), clean_text(detail, MAX_SYMBOL_DETAIL), source))

    def symbols_for(self, address: str = "") -> list[Symbol]:
        """The message's symbols and this recipient's own."""
        return self.symbols + self.per_recipient.get(address.lower(), []) if address else list(self.symbols)

    def scored_for(self, address: str = "") -> bool:
        return self.scored or bool(address and self.per_recipient.get(address.lower()))

    def total_for(self, address: str = "") -> float:
        return self.total + sum(s.weight for s in self.per_recipient.get(address.lower(), ()) if s.counted) \
            if address else self.total

    def set_engine_score(self, score: float, symbols: list[Symbol]) -> None:
        """An engine's total and the symbols it is made of (kept for the "why", not added again)."""
        self.engine_score = (self.engine_score or 0.0) + score
        for s in symbols[: MAX_SYMBOLS - len(self.symbols)]:
            self.symbols.append(Symbol(clean_name(s.name), s.weight, clean_text(s.detail, MAX_SYMBOL_DETAIL),
                                       s.source, counted=False))
        self.scored = True

    def force(self, action: str, text: str = "") -> None:
        """An engine's own decision; of several, the most severe stays."""
        if action not in SEVERITY:
            raise ValueError(f"unknown action {action!r}")
        if self.forced is None or SEVERITY.index(action) > SEVERITY.index(self.forced[0]):
            self.forced = (action, clean_text(text))

    def mark_unchecked(self, scorer: str) -> None:
        self.unchecked.append(scorer)

    @property
    def own_total(self) -> float:
        """The symbols that no engine's score includes."""
        return sum(s.weight for s in self.symbols if s.counted)

    @property
    def total(self) -> float:
        return (self.engine_score or 0.0) + self.own_total

    @property
    def empty(self) -> bool:
        return not self.scored and not self.unchecked and self.forced is None and not self.per_recipient

    def symbols_text(self, address: str = "") -> str:
        """The symbols that weigh something, heaviest first: ``"GTUBE(15.00) R_SPF_FAIL(1.00)"``."""
        weighty = sorted((s for s in self.symbols_for(address) if s.weight), key=lambda s: (-abs(s.weight), s.name))
        out, length = [], 0
        for s in weighty:
            item = f"{s.name}({s.weight:.2f})"
            if length + len(item) + 1 > MAX_SYMBOLS_HEADER:
                out.append("...")
                break
            out.append(item)
            length += len(item) + 1
        return " ".join(out)

    def top(self, n: int = 3, address: str = "") -> str:
        """The names of the ``n`` heaviest symbols (for a reply text)."""
        weighty = sorted((s for s in self.symbols_for(address) if s.weight > 0), key=lambda s: (-s.weight, s.name))
        return ", ".join(s.name for s in weighty[:n])


def scorecard(message: MessageInfo) -> ScoreCard:
    """The message's one score card (made on first use)."""
    card = message.memo.get(_CARD)
    if card is None:
        card = message.memo[_CARD] = ScoreCard()
    return card


@dataclass(frozen=True)
class Thresholds:
    """Scores at or above which each action is taken; 0 = that action is off."""

    tag: float = 5.0
    junk: float = 6.0
    quarantine: float = 0.0
    refuse: float = 15.0

    def action_for(self, total: float) -> str:
        for action in (REFUSE, QUARANTINE, JUNK, TAG):
            limit = getattr(self, action)
            if limit > 0 and total >= limit:
                return action
        return ACCEPT


def thresholds_for(cfg, address: str) -> Thresholds:
    """The thresholds of a recipient: its account's, else its domain's, else ``[antispam]``'s, key by key."""
    address = address.lower()
    domain = address.rpartition("@")[2]
    levels = [_entry(cfg.account, address), _entry(cfg.domain, domain)]
    values = {}
    for key in ("tag", "junk", "quarantine", "refuse"):
        value = getattr(cfg, key)
        for level in levels:
            if level is not None and getattr(level, key) >= 0:
                value = getattr(level, key)
                break
        values[key] = value
    return Thresholds(**values)


def _entry(table: dict, key: str):
    """``table[key]``, the key compared without case (addresses and domains are configured as admins type them)."""
    entry = table.get(key)
    if entry is None:
        for name, value in table.items():
            if name.lower() == key:
                return value
    return entry


def trusted_networks(cfg) -> list:
    return [ipaddress.ip_network(n, strict=False) for n in cfg.smtp.trusted_networks]


def spam_exempt(message: MessageInfo, networks) -> bool:
    """Not spam-scored: mail without a client (reports, imports), authenticated submission, trusted networks."""
    client = message.client
    if client is None or client.submission or client.account_id is not None:
        return True
    if not networks:
        return False  # (any address, or none, is in no network: nothing to parse)
    try:
        ip = ipaddress.ip_address(client.ip)
    except ValueError:
        return False
    return any(ip in n for n in networks)


@dataclass(frozen=True)
class Decision:
    action: str
    total: float
    text: str = ""
    forced: bool = False  # the engine's own decision, not the thresholds'


def decide(card: ScoreCard, thresholds: Thresholds, address: str = "") -> Decision:
    """The action for one recipient: the more severe of the engine's own and the thresholds'."""
    total = card.total_for(address)
    action = thresholds.action_for(total) if card.scored_for(address) else ACCEPT
    if card.forced is not None and SEVERITY.index(card.forced[0]) > SEVERITY.index(action):
        return Decision(card.forced[0], total, card.forced[1], forced=True)
    return Decision(action, total)


def headers_for(card: ScoreCard, decision: Decision, *, symbols_header: bool,
                address: str = "") -> list[tuple[str, str]]:
    """The fields a delivered copy gets."""
    out = []
    if card.unchecked:
        out.append(("X-Spam-Status", "unchecked (" + " ".join(card.unchecked) + ")"))
    if decision.action != ACCEPT:
        out.append(("X-Spam", "yes"))
    if card.scored_for(address):
        out.append(("X-Spam-Score", f"{decision.total:.2f}"))
        if symbols_header:
            text = card.symbols_text(address)
            if text:
                out.append(("X-Spam-Symbols", _fold(text)))
    return out


def _fold(text: str, width: int = 76) -> str:
    """Fold a header value of space-separated items (RFC 5322 2.2.3), lines under ``width`` characters."""
    lines, line = [], ""
    for item in text.split(" "):
        if line and len(line) + 1 + len(item) > width:
            lines.append(line)
            line = item
        else:
            line = f"{line} {item}" if line else item
    lines.append(line)
    return "\r\n\t".join(lines)


def verdict_for(card: ScoreCard, decision: Decision, *, symbols_header: bool,
                address: str = "") -> Verdict | None:
    if decision.action == REFUSE:
        why = decision.text or card.top(address=address)
        return Verdict.refuse("5.7.1", clean_text(f"Message refused as spam ({why})" if why else
                                                  "Message refused as spam"))
    if decision.action == DEFER:
        why = f" ({decision.text})" if decision.text else ""
        return Verdict.defer("4.7.1", clean_text(f"Message deferred by the spam filter{why}, try again later"))
    headers = headers_for(card, decision, symbols_header=symbols_header, address=address)
    if decision.action == QUARANTINE:
        why = decision.text or card.top(address=address)
        text = f"Spam score {decision.total:.2f}" + (f" ({why})" if why else "")
        return Verdict.quarantine("spam", clean_text(text), facts_of(card, decision, address), add_headers=headers)
    if decision.action == JUNK:
        return Verdict.tag(add_headers=headers, keywords=(JUNK_KEYWORD,), mailbox=JUNK_MAILBOX)
    return Verdict.tag(add_headers=headers) if headers else None


def facts_of(card: ScoreCard, decision: Decision, address: str = "") -> list[Fact]:
    """The score card as named facts: the total and the action, then each symbol (heaviest first)."""
    out = [Fact("spam-policy", "score", decision.action, round(decision.total, 2),
                "engine's own decision" if decision.forced else "")]
    out += [Fact("spam-policy", "unchecked", s) for s in card.unchecked]
    for s in sorted(card.symbols_for(address), key=lambda s: (-abs(s.weight), s.name)):
        out.append(Fact(s.source or "spam", s.name, "", round(s.weight, 2), s.detail))
    return out


def final_addresses(message: MessageInfo) -> list[str]:
    """Every final recipient of the message as routing saw it at RCPT (an alias's targets), else the envelope's."""
    out: list[str] = []
    for r in message.envelope.recipients if message.envelope is not None else ():
        routes = getattr(r.route, "routes", None)
        out += [route.address for route in routes] if routes else [r.address]
    return out


class SpamPolicy:
    """The check stage that turns the message's score card into each recipient's verdict (registered after every
    scorer).  It runs only where something scored the message (or could not)."""

    name = "spam-policy"
    exact_mailbox = False

    def __init__(self, config, rules=None, *, states=None):
        self.config = config
        self.antispam = config.antispam
        self.networks = trusted_networks(config)
        #: ``rules(account_id, addresses)`` -> Deferred of {address: "allow" | "block"}: the recipient's own sender
        #: rules (``Store.sender_rules``); None = none.
        self.rules = rules
        #: Or the server's :class:`~mailserver.inbound.accountstate.AccountStates`: the rules come with the
        #: message's one read of its recipients' account data (shared with the classifier), not a read each.
        self.states = states

    def applies(self, message: MessageInfo) -> bool:
        if spam_exempt(message, self.networks):
            return False
        card = message.memo.get(_CARD)
        return card is not None and not card.empty

    def decision(self, card: ScoreCard, address: str) -> Decision:
        return decide(card, thresholds_for(self.antispam, address), address)

    def check(self, message: MessageInfo, target: Target):
        card = scorecard(message)
        decision = self.decision(card, target.address)
        if decision.action == REFUSE and not decision.forced:
            # A threshold refusal of only some recipients would mean a failure report to a (forged) sender.
            if any(self.decision(card, a).action != REFUSE for a in final_addresses(message)):
                decision = Decision(QUARANTINE, decision.total)
        account_id = getattr(target.route, "account_id", None)
        if (self.rules is None and self.states is None) or account_id is None:
            return verdict_for(card, decision, symbols_header=self.antispam.symbols_header, address=target.address)
        return self._with_rules(message, card, decision, account_id, target.address)

    async def _with_rules(self, message: MessageInfo, card: ScoreCard, decision: Decision, account_id: int,
                          address: str):
        senders = [a for a in (message.envelope.sender if message.envelope else "",
                               from_address(message)) if a]
        if not senders:
            found = {}
        elif self.states is not None:
            found = (await self.states.load(message, account_id)).states[account_id].rules
        else:
            found = await self.rules(account_id, senders)
        # A sender's own rule beats its domain's (``@example.com``); rules of both senders count.
        rules = {rule_for(found, a) for a in senders} - {None}
        if "allow" in rules and not (decision.forced and decision.action in (DEFER, REFUSE)):
            decision = Decision(min(decision.action, TAG, key=SEVERITY.index), decision.total, decision.text)
        elif "block" in rules and SEVERITY.index(decision.action) < SEVERITY.index(JUNK):
            decision = Decision(JUNK, decision.total, "sender blocked by the recipient")
        return verdict_for(card, decision, symbols_header=self.antispam.symbols_header, address=address)


def from_address(message: MessageInfo) -> str:
    """The message's first From address (:func:`_from_address`), worked out once per message (the classifier,
    the account-data read and the policy all ask)."""
    found = message.memo.get(_FROM)
    if found is None:
        found = message.memo[_FROM] = _from_address(message.parsed)
    return found


_FROM = "from-address"


def _from_address(parsed: dict | None) -> str:
    """The address of the first From mailbox in the stored ENVELOPE ("" when none)."""
    import json

    try:
        env = json.loads((parsed or {}).get("envelope") or "null")
        mbox = env[2][0]
        return f"{mbox[2]}@{mbox[3]}".lower() if mbox[2] and mbox[3] else ""
    except (ValueError, TypeError, IndexError, KeyError):
        return ""
