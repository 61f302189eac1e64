"""DMARC (RFC 7489, with the DMARCbis DNS tree walk): policy discovery, identifier alignment, the disposition.

**Tree walk.**  For a domain D the names asked are ``_dmarc.D``, then, when D has more than eight labels, its last
seven, then each shorter suffix down to the top-level domain: at most :data:`MAX_WALK` queries, each answered once
per message (:class:`Walker` remembers them).  The *policy record* of D is the first valid record found on that
walk.  The *organizational domain* of D is found on the same walk: the first name whose record says ``psd=n``; the
name one label below the first record with ``psd=y``; otherwise the name with the fewest labels that has a record;
and D itself when no name has one.  This replaces RFC 7489's public suffix list and gives the same answers for
domains that publish as RFC 7489 expects (a record at the organizational domain).

**Alignment** (RFC 7489 3.1): strict when the identifier equals the From domain, relaxed when their organizational
domains are equal.  DMARC passes when an SPF pass (the MAIL FROM domain, or the HELO domain for the null reverse
path) or a DKIM pass (its ``d=``) is aligned under the record's ``aspf`` / ``adkim``.

**Disposition.**  The author domain's own record applies ``p``; a record found higher up applies ``sp`` (or ``np``
when the author domain does not exist, DMARCbis), else ``p``.  ``t=y`` (DMARCbis testing) and ``pct`` below 100
(RFC 7489 6.6.4) lower it one step (reject -> quarantine -> none): a message is never refused on a sampled policy.
A record that is not ``v=DMARC1`` first is not a record; several records at one name count as none there
(RFC 7489 6.6.3); an unknown or invalid tag value is ignored, an invalid ``p`` makes the record ``p=none`` when it
has a ``rua`` and no record otherwise (RFC 7489 6.6.3 step 6).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from mailserver.dns import DnsError, DnsPermanentError
from mailserver.inbound.lookups import Lookups

NONE, PASS, FAIL, TEMPERROR, PERMERROR = "none", "pass", "fail", "temperror", "permerror"
REJECT, QUARANTINE = "reject", "quarantine"
DISPOSITIONS = ("none", QUARANTINE, REJECT)

#: DMARCbis: the tree walk asks at most this many names.
MAX_WALK = 8
#: A record longer than this is not a record (a real one is well under 1 KiB).
MAX_RECORD = 4096
#: Most distinct author domains evaluated (a message with several From addresses); more is a permerror.
MAX_AUTHOR_DOMAINS = 4


@dataclass(frozen=True)
class Record:
    """The tags of a DMARC record that decide a disposition."""

    p: str
    sp: str = ""
    np: str = ""
    adkim: str = "r"
    aspf: str = "r"
    pct: int = 100
    testing: bool = False
    psd: str = "u"


def parse_record(text: bytes | str) -> Record | None:
    """A DMARC record, or None when ``text`` is not one (RFC 7489 6.3, 6.4; DMARCbis np/psd/t)."""
    if isinstance(text, bytes):
        if len(text) > MAX_RECORD:
            return None
        text = text.decode("ascii", "replace")
    if len(text) > MAX_RECORD:
        return None
    parts = [p.strip() for p in text.split(";")]
    head = parts[0].replace(" ", "").replace("\t", "")
    if head != "v=DMARC1":  # RFC 7489 6.4: v first, "DMARC1" case-sensitive
        return None
    tags: dict[str, str] = {}
    for part in parts[1:]:
        if not part:
            continue
        name, eq, value = part.partition("=")
        if not eq:
            continue  # not a tag: ignored
        tags.setdefault(name.strip().lower(), value.strip())
    pol = tags.get("p", "").lower()
    if pol not in DISPOSITIONS:
        if "rua" in tags:
            pol = "none"  # RFC 7489 6.6.3 step 6: a record with rua and a bad or missing p is p=none
        else:
            return None

    def disposition(tag):
        v = tags.get(tag, "").lower()
        return v if v in DISPOSITIONS else ""

    def mode(tag):
        v = tags.get(tag, "r").lower()
        return v if v in ("r", "s") else "r"

    pct = 100
    if tags.get("pct", "").isdigit() and len(tags["pct"]) <= 3:
        pct = min(int(tags["pct"]), 100)
    psd = tags.get("psd", "u").lower()
    return Record(p=pol, sp=disposition("sp"), np=disposition("np"), adkim=mode("adkim"), aspf=mode("aspf"),
                  pct=pct, testing=tags.get("t", "n").lower() == "y", psd=psd if psd in ("y", "n") else "u")


def _parsed_record(text: bytes) -> Record | None:
    """:func:`parse_record` of a TXT record, remembered (a Record is immutable; the same few records come with
    message after message)."""
    if len(text) > MAX_RECORD:
        return None  # not a record (and not kept: the cache holds at most 4096 short texts)
    return _parse_record_cached(text)


@functools.lru_cache(maxsize=4096)
def _parse_record_cached(text: bytes) -> Record | None:
    return parse_record(text)


def walk_names(domain: str) -> list[str]:
    """The names of the DMARCbis tree walk for ``domain``, the domain first."""
    labels = domain.rstrip(".").lower().split(".")
    names = [".".join(labels)]
    for k in range(min(len(labels) - 1, MAX_WALK - 1), 0, -1):
        names.append(".".join(labels[-k:]))
    return names


class Walker:
    """Answers ``_dmarc.`` queries once per message; a temporary failure is remembered as one."""

    def __init__(self, lookups: Lookups):
        self.lookups = lookups
        self._seen: dict[str, Record | None | DnsError] = {}

    def record_at(self, name: str) -> Record | None:
        """The one valid record at ``_dmarc.name`` (None: none, or several); raises a temporary DnsError."""
        if name not in self._seen:
            try:
                found = [r for r in (_parsed_record(t) for t in self.lookups.txt("_dmarc." + name)) if r is not None]
                self._seen[name] = found[0] if len(found) == 1 else None
            except DnsPermanentError:
                self._seen[name] = None
            except DnsError as e:
                self._seen[name] = None if e.permanent else e
        got = self._seen[name]
        if isinstance(got, DnsError):
            raise got
        return got

    def policy(self, domain: str) -> tuple[str, Record] | None:
        """(the name the policy record was found at, the record) for ``domain``, or None."""
        for name in walk_names(domain):
            rec = self.record_at(name)
            if rec is not None:
                return name, rec
        return None

    def org_domain(self, domain: str) -> str:
        names = walk_names(domain)
        topmost = ""
        for name in names:
            rec = self.record_at(name)
            if rec is None:
                continue
            if rec.psd == "n":
                return name
            if rec.psd == "y":  # a public suffix: the organizational domain is one label below it
                labels = names[0].split(".")
                below = name.count(".") + 2
                return ".".join(labels[-below:]) if below <= len(labels) else name
            topmost = name
        return topmost or names[0]


def aligned(walker: Walker, author: str, identifier: str, mode: str) -> bool:
    author, identifier = author.lower().rstrip("."), identifier.lower().rstrip(".")
    if not identifier:
        return False
    if identifier == author:
        return True
    if mode == "s":
        return False
    return walker.org_domain(identifier) == walker.org_domain(author)


@dataclass(frozen=True)
class DmarcResult:
    result: str  # none | pass | fail | temperror | permerror
    from_domain: str = ""
    policy: str = ""  # the policy that applies (p, sp or np of the record): none | quarantine | reject
    disposition: str = "none"  # what the record asks of this message: none | quarantine | reject
    record_domain: str = ""  # where the record was found
    spf_aligned: bool = False
    dkim_aligned: bool = False
    reason: str = ""
    override: str = ""  # set by the caller when local policy overrides the disposition
    extra: dict = field(default_factory=dict, compare=False)


_LOWER = {REJECT: QUARANTINE, QUARANTINE: "none", "none": "none"}


def evaluate(lookups: Lookups, from_domain: str, spf_domain: str, spf_pass: bool,
             dkim_passes: list[str], walker: Walker | None = None) -> DmarcResult:
    """DMARC for one author domain; ``dkim_passes`` are the ``d=`` of the passing signatures.  Never raises."""
    walker = walker or Walker(lookups)
    try:
        found = walker.policy(from_domain)
        if found is None:
            return DmarcResult(NONE, from_domain, reason="no DMARC record")
        at, rec = found
        if at == from_domain.lower().rstrip("."):
            policy = rec.p
        elif rec.np and not lookups.exists(from_domain):
            policy = rec.np
        else:
            policy = rec.sp or rec.p
        spf_ok = spf_pass and aligned(walker, from_domain, spf_domain, rec.aspf)
        dkim_ok = any(aligned(walker, from_domain, d, rec.adkim) for d in dkim_passes)
    except DnsError as e:
        return DmarcResult(PERMERROR if e.permanent else TEMPERROR, from_domain, reason=e.reason)
    if spf_ok or dkim_ok:
        return DmarcResult(PASS, from_domain, policy, "none", at, spf_ok, dkim_ok)
    disposition = policy
    if rec.testing or rec.pct < 100:
        disposition = _LOWER[policy]
    return DmarcResult(FAIL, from_domain, policy, disposition, at, reason="no aligned SPF or DKIM pass")
