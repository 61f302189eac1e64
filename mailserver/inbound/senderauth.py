"""Sender authentication of mail received on the MX listener: one check stage and one body transform.

:class:`SenderAuthCheck` (a check stage, ``delivery/stages.py``) runs, once per message and only for mail the
``smtp`` listener took from a client that is neither authenticated nor in ``smtp.trusted_networks``:

two jobs in parallel in the ``dns`` pool, each check in them with its own
:class:`~mailserver.inbound.lookups.Lookups` (time limit ``[senderauth] timeout``, ``max_queries``):

1. the connection: iprev and the HELO facts, SPF for HELO;
2. the message, one step after the other: it is read (as received, without our trace fields), then SPF for MAIL
   FROM (HELO for the null reverse path), DKIM of every signature, the ARC chain, DMARC for the From domain(s).

The results are :class:`SenderAuthResult`, kept in ``message.memo["senderauth"]`` for later checks and scoring,
and written as one ``Authentication-Results: <hostname>; ...`` field (RFC 8601) at the top of every recipient's
copy.  The DMARC disposition is honoured (``dmarc_action``, per recipient domain in ``dmarc_action_by_domain``):
``reject`` refuses the message at the end of DATA with 550 5.7.1 (never a bounce: when the recipients' domains do
not all refuse, the ones that would are quarantined instead, so the message is accepted or refused as one);
``quarantine`` holds the copy in the quarantine (``Verdict.quarantine("dmarc", ...)``, with our field and the
results as facts).  A failing message whose
ARC chain passes and was sealed by a trusted sealer that recorded ``dmarc=pass`` is delivered as if it passed.

Each check is bounded in the thread that runs it (its deadline cuts every DNS query) and again on the reactor:
a job that has not answered ``timeout`` seconds per check (plus a margin) after it was handed to the pool counts
as ``temperror`` for its checks, so a message never waits on its checks for long, whatever the pool's backlog.
(Fewer, grouped jobs: each hand-over to a thread costs more than a cached lookup.)

:class:`AuthResultsStripper` (a body transform) removes incoming ``Authentication-Results`` claiming our host name
(RFC 8601 5) from mail of the same clients, before it is stored.
"""

from __future__ import annotations

import email.parser
import email.policy
import email.utils
import functools
import re
import time
from dataclasses import dataclass, field

from twisted.internet import defer
from twisted.logger import Logger

from mailserver.delivery import envelope as ev
from mailserver.delivery.router import LOCAL
from mailserver.delivery.stages import Fact, MessageInfo, Target, Verdict
from mailserver.dns import AnswerCache
from mailserver.inbound import arc as arc_mod
from mailserver.inbound import authresults, dkimcheck
from mailserver.inbound import dmarc as dmarc_mod
from mailserver.inbound import iprev as iprev_mod
from mailserver.inbound import spf as spf_mod
from mailserver.inbound.authresults import Clause
from mailserver.inbound.lookups import CachedLookups, Lookups

log = Logger()

FACTS_KEY = "senderauth"
HEADER = "Authentication-Results"
#: The most of the header section read to find From and the signatures (the rest of a larger header is not seen).
MAX_HEADER = 256 * 1024
#: Seconds added to ``timeout`` before the reactor stops waiting for a check.
REACTOR_MARGIN = 2.0
#: How long, and for how many clients, the connection's facts are kept (DNS answers have their own cache).
CONNECTION_TTL = 60.0
CONNECTION_CACHE_SIZE = 4096
#: The checks of a message run on the reactor thread, without a ``dns`` pool job, when every DNS answer they need
#: is in the resolver's cache and the message is in memory, at most this large, with at most
#: INLINE_MAX_SIGNATURES DKIM signatures and no ARC set (bounded CPU: hashing it and a few public-key steps).
INLINE_MAX_SIZE = 128 * 1024
INLINE_MAX_SIGNATURES = 2


@dataclass
class SenderAuthResult:
    """Everything the checks found for one message (``message.memo["senderauth"]``)."""

    client_ip: str
    iprev: iprev_mod.IprevResult
    helo: iprev_mod.HeloFacts
    spf_helo: spf_mod.SpfResult
    spf_mailfrom: spf_mod.SpfResult | None  # None for the null reverse path (the HELO result stands for it)
    dkim: list[dkimcheck.DkimResult]
    arc: arc_mod.ArcResult
    dmarc: list[dmarc_mod.DmarcResult] = field(default_factory=list)
    #: The disposition DMARC asks for after local policy ("none", "quarantine", "reject") and why.
    disposition: str = "none"
    disposition_domain: str = ""
    arc_override: str = ""  # the trusted sealer that let a DMARC failure through

    @property
    def spf(self) -> spf_mod.SpfResult:
        """The SPF result DMARC uses: MAIL FROM, or HELO for the null reverse path (RFC 7489 3.1.2)."""
        return self.spf_mailfrom or self.spf_helo

    def clauses(self) -> list[Clause]:
        """The Authentication-Results results, in a fixed order: iprev, spf (HELO, MAIL FROM), dkim, dmarc, arc."""
        out = []
        ip = self.iprev
        out.append(Clause("iprev", ip.result, ip.confirmed or ip.reason, properties=(("policy.iprev",
                                                                                       self.client_ip),)))
        for s in (self.spf_helo, self.spf_mailfrom):
            if s is None:
                continue
            prop = ("smtp.helo", s.domain) if s.scope == spf_mod.HELO else ("smtp.mailfrom", s.identity)
            out.append(Clause("spf", s.result, s.reason, properties=(prop,)))
        for d in self.dkim:
            props = (("header.d", d.domain), ("header.i", d.identity), ("header.s", d.selector),
                     ("header.a", d.algorithm), ("header.b", d.b))
            out.append(Clause("dkim", d.result, d.reason, properties=props))
        for m in self.dmarc:
            comment = f"p={m.policy or 'none'} dis={m.disposition}" if m.result in (dmarc_mod.PASS,
                                                                                    dmarc_mod.FAIL) else m.reason
            if m.override:
                comment += f"; {m.override}"
            out.append(Clause("dmarc", m.result, comment, properties=(("header.from", m.from_domain),)))
        a = self.arc
        comment = (f"i={a.sets[0].instance} d={a.sealer}" if a.result == arc_mod.PASS and a.sets else a.reason)
        out.append(Clause("arc", a.result, comment, properties=(("smtp.remote-ip", self.client_ip),)
                          if a.result != arc_mod.NONE else ()))
        return out


def _facts(result: SenderAuthResult) -> list[Fact]:
    """What a quarantined copy keeps of the checks (shown with it)."""
    out = [Fact("dmarc", m.from_domain, m.result, detail=f"p={m.policy or 'none'}") for m in result.dmarc]
    out.append(Fact("spf", result.spf.domain, result.spf.result))
    out += [Fact("dkim", d.domain, d.result, detail=d.reason) for d in result.dkim]
    out.append(Fact("arc", result.arc.sealer, result.arc.result))
    out.append(Fact("iprev", result.client_ip, result.iprev.result, detail=result.iprev.confirmed))
    return out


#: A header section the stdlib parser reads as fields only: every line a field (name: ...) or a continuation,
#: every line break CRLF (the parser also breaks lines at a lone CR or LF), no empty line, no leading
#: continuation, no "From " envelope line.
_PLAIN_HEADER = re.compile(rb"[\x21-\x39\x3b-\x7e]+:[^\r\n]*(?:\r\n(?:[\x21-\x39\x3b-\x7e]+:|[ \t])[^\r\n]*)*(?:\r\n)?")
_FROM_FIELD = re.compile(rb"(?im)^from:[^\r\n]*(?:\r\n[ \t][^\r\n]*)*")


def from_domains(head: bytes) -> list[str] | None:
    """The distinct domains of the From field(s) (RFC 5322 3.6.2), lower-cased; None when there is no usable
    From (no field, or one without a domain).

    A plain header section (:data:`_PLAIN_HEADER`) gives the parser the same From fields whatever its other fields,
    so only its From fields are parsed (and their result remembered); any other header is parsed whole."""
    end = head.find(b"\r\n\r\n")
    head = head if end < 0 else head[:end + 4]
    if end < 0 and _PLAIN_HEADER.fullmatch(head):
        fields = b"".join(f + b"\r\n" for f in _FROM_FIELD.findall(head))
        found = _from_fields_domains(fields)
        return list(found) if found is not None else None
    return _parse_from_domains(head)


@functools.lru_cache(maxsize=4096)
def _from_fields_domains(fields: bytes) -> tuple[str, ...] | None:
    """:func:`_parse_from_domains` of From fields alone, remembered: most mail comes from few senders."""
    found = _parse_from_domains(fields)
    return tuple(found) if found is not None else None


def _parse_from_domains(head: bytes) -> list[str] | None:
    msg = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(head)
    values = [str(v) for v in (msg.get_all("From") or [])]
    if not values:
        return None
    domains = []
    for _name, addr in email.utils.getaddresses(values):
        domain = addr.rpartition("@")[2].strip().lower().rstrip(".") if "@" in addr else ""
        if not domain:
            return None
        if domain not in domains:
            domains.append(domain)
    return domains or None


class Settings:
    """What the checks need from the configuration, read once."""

    def __init__(self, config):
        sa = config.senderauth
        self.hostname = config.hostname
        self.enabled = sa.enabled
        self.timeout = sa.timeout
        self.max_queries = sa.max_queries
        self.dkim_max_size = sa.dkim_max_size
        self.action = sa.dmarc_action
        self.action_by_domain = {d.lower(): a for d, a in sa.dmarc_action_by_domain.items()}
        self.trusted_sealers = frozenset(s.lower() for s in sa.arc_trusted_sealers)
        self.own_names = frozenset([config.hostname.lower()] + [d.name.lower() for d in config.domain])

    def action_for(self, recipient_domain: str) -> str:
        return self.action_by_domain.get(recipient_domain.lower(), self.action)


def applies_to(message_client, producer: str, settings: Settings) -> bool:
    """Mail the MX listener took from outside: not submission, not authenticated, not a trusted network."""
    c = message_client
    return (settings.enabled and producer == ev.SMTP and c is not None and not c.submission and not c.trusted
            and not c.authenticated)


class AuthResultsStripper:
    """The body transform: remove incoming Authentication-Results claiming our host name (RFC 8601 5)."""

    name = "senderauth:strip-authentication-results"

    def __init__(self, settings: Settings):
        self.settings = settings

    def applies(self, request) -> bool:
        return applies_to(request.client, request.producer, self.settings)

    def start(self, request):
        return authresults.AuthResultsStripper(self.settings.hostname)


class SenderAuthCheck:
    """The check stage (see the module docstring)."""

    name = "senderauth"
    exact_mailbox = False

    def __init__(self, runner, settings: Settings, resolver, blobs, *, reactor=None, clock=time.monotonic):
        self.runner = runner
        self.settings = settings
        self.resolver = resolver
        self.blobs = blobs  # the blob store: the message is read in the check's own thread
        #: iprev, HELO facts and SPF for HELO by (client address, HELO, null sender?): the same for every message
        #: of a client, remembered for CONNECTION_TTL seconds.
        self._connections = AnswerCache(CONNECTION_CACHE_SIZE, clock=clock)
        #: SPF for the message's identity by (client address, MAIL FROM, HELO, scope), kept the same way (the
        #: same sender from the same client gets the same answer; not when a lookup failed for now).
        self._spf = AnswerCache(CONNECTION_CACHE_SIZE, clock=clock)
        self.reactor = reactor  # for the reactor-side time limit (None: no such limit, e.g. an inline runner)
        self.clock = clock

    def applies(self, message: MessageInfo) -> bool:
        return applies_to(message.client, message.producer, self.settings)

    async def check(self, message: MessageInfo, target: Target):
        result = message.memo.get(FACTS_KEY)
        if result is None:
            result = message.memo[FACTS_KEY] = await self._authenticate(message)
        value = authresults.header_value(self.settings.hostname, result.clauses())
        headers = ((HEADER, value),)
        action = self._action(result, message, target)
        if action == dmarc_mod.REJECT:
            return Verdict.refuse("5.7.1", f"Rejected by the DMARC policy of {result.disposition_domain}")
        if action == dmarc_mod.QUARANTINE and target.route.kind == LOCAL:
            domain = result.disposition_domain
            return Verdict.quarantine("dmarc", f"The sender's domain {domain} asks that mail failing its "
                                      "authentication (DMARC) be quarantined", _facts(result), add_headers=headers)
        return Verdict.tag(add_headers=headers)

    # ------------------------------------------------------------------ policy

    def _cap(self, recipient) -> str:
        domain = recipient.address.rpartition("@")[2] if recipient is not None else ""
        return self.settings.action_for(domain)

    def _action(self, result: SenderAuthResult, message: MessageInfo, target: Target) -> str:
        """What this recipient's copy gets: "reject" only when every recipient of the message would refuse it."""
        wanted = result.disposition
        if wanted == "none":
            return "none"
        cap = self._cap(target.recipient)
        if cap == "none":
            return "none"
        if wanted == dmarc_mod.REJECT:
            recipients = message.envelope.recipients if message.envelope is not None else ()
            if cap == "quarantine" or any(self._cap(r) != "policy" for r in recipients):
                return dmarc_mod.QUARANTINE  # accepted or refused as one message: never a later bounce
        return wanted

    # ------------------------------------------------------------------ the checks

    def _run(self, checks, lookups_type=Lookups):
        """``checks`` ((f, args, fallback) each) one after the other: ``f(lookups, *args)`` with Lookups of its own
        made when it starts (its own time limit); a check that raises gives ``fallback("internal error")``.
        With :class:`CachedLookups`: None as soon as one check needed an answer that is not in the cache."""
        s = self.settings
        out = []
        for f, args, fallback in checks:
            lookups = lookups_type(self.resolver, timeout=s.timeout, max_queries=s.max_queries, clock=self.clock)
            try:
                out.append(f(lookups, *args))
            except Exception:  # noqa: BLE001 - our bug, not the sender's: logged, the others still count
                if getattr(lookups, "missed", False):
                    return None
                log.failure("sender authentication check {check} failed", check=getattr(f, "__name__", f))
                out.append(fallback("internal error"))
            if getattr(lookups, "missed", False):
                return None
        return out

    def _group(self, *checks, now: bool = False):
        """Run ``checks`` (see :meth:`_run`) in one ``dns`` pool job; the Deferred fires with their results; a group
        that the reactor stopped waiting for gives each ``fallback(reason)``.  ``now``: first on this thread with
        answers from the resolver's cache alone (:class:`CachedLookups`, no waiting): when one is missing, that run
        is dropped and the checks run in the pool as they would have (a hand-over to a thread and its time limit
        cost more than the checks themselves when every answer is cached)."""
        if now and self.resolver.cache is not None:
            found = self._run(checks, CachedLookups)
            if found is not None:
                return defer.succeed(found)
        d = self.runner.dns(self._run, checks)
        if self.reactor is not None:
            d.addTimeout(self.settings.timeout * len(checks) + REACTOR_MARGIN, self.reactor)

        def failed(failure):
            if failure.check(defer.TimeoutError, defer.CancelledError):
                return [fallback("time limit of the check reached") for _f, _a, fallback in checks]
            log.failure("sender authentication checks failed", failure)
            return [fallback("internal error") for _f, _a, fallback in checks]

        return d.addErrback(failed)

    @staticmethod
    def _in_memory(message: MessageInfo) -> bytes | None:
        """The message as received when it can be had without waiting (a body held in memory, at most
        INLINE_MAX_SIZE bytes), else None."""
        if message.size > INLINE_MAX_SIZE:
            return None
        d = message.read(message.offset)
        if not d.called:
            d.addErrback(lambda _f: None)  # read in a pool: not waited for (the check's own thread reads it)
            return None
        got = []
        d.addBoth(got.append)
        return got[0] if isinstance(got[0], bytes) else None

    async def _authenticate(self, message: MessageInfo) -> SenderAuthResult:
        s = self.settings
        client, env = message.client, message.envelope
        ip, helo, sender = client.ip, client.helo, env.sender if env is not None else ""
        spf_scope = spf_mod.MAILFROM if sender else spf_mod.HELO  # the identity DMARC uses (RFC 7489 3.1.2)
        got: dict = {}  # what the message job's steps pass on to each other (one thread, one after the other)
        data = self._in_memory(message)

        def read_message(lookups):
            """The message as received (from memory, or a blocking read in this thread): its header, and all of
            it when signed."""
            got.clear()  # (a run on the reactor that missed an answer may have left some)
            if data is not None:
                start = data if len(data) <= MAX_HEADER else data[:MAX_HEADER]
            else:
                start = self.blobs.read(message.blob_id, message.offset, message.offset + MAX_HEADER)
            head_end = start.find(b"\r\n\r\n")
            got["head"] = head = start[:head_end + 2] if head_end >= 0 else start
            lowered = head.lower()
            got["signed"], got["sealed"] = b"dkim-signature" in lowered, b"arc-seal" in lowered
            got["raw"] = b""
            if (got["signed"] or got["sealed"]) and message.size <= s.dkim_max_size:
                got["raw"] = (start if len(start) < MAX_HEADER else data if data is not None
                              else self.blobs.read(message.blob_id, message.offset))
            got["domains"] = from_domains(head)

        def spf_used(lookups):
            key = (ip, sender, helo, spf_scope)
            r = self._spf.get(key)
            if r is None:
                r = spf_mod.check(lookups, ip, sender, helo, s.hostname, spf_scope)
                if r.result != spf_mod.TEMPERROR and not getattr(lookups, "missed", False):
                    self._spf.put(key, r, CONNECTION_TTL)
            got["spf"] = r
            return r

        def dkim_all(lookups):
            if not got["signed"]:
                return [dkimcheck.DkimResult(dkimcheck.NONE)]
            if not got["raw"]:
                return dkimcheck.too_large(message.size)
            got["dkim"] = r = dkimcheck.verify(lookups, got["raw"])
            return r

        def arc_chain(lookups):
            if not got["sealed"]:
                return arc_mod.ArcResult(arc_mod.NONE)
            if not got["raw"]:
                return arc_mod.ArcResult(arc_mod.NONE, reason=f"message of {message.size} bytes not verified")
            return arc_mod.verify(lookups, got["raw"], got["head"])

        def dmarc_all(lookups):
            domains = got["domains"]
            if domains is None:
                return [dmarc_mod.DmarcResult(dmarc_mod.PERMERROR, reason="no usable From field")]
            if len(domains) > dmarc_mod.MAX_AUTHOR_DOMAINS:
                return [dmarc_mod.DmarcResult(dmarc_mod.PERMERROR, reason="too many From domains")]
            spf_r = got.get("spf")
            passes = [d.domain for d in got.get("dkim", ()) if d.result == dkimcheck.PASS]
            walker = dmarc_mod.Walker(lookups)
            return [dmarc_mod.evaluate(lookups, d, spf_r.domain if spf_r else "",
                                       spf_r is not None and spf_r.result == spf_mod.PASS, passes, walker)
                    for d in domains]

        def iprev_and_helo(lookups):
            ipr = iprev_mod.iprev(lookups, ip)
            return ipr, iprev_mod.helo_facts(lookups, helo, ip, ipr.confirmed, s.own_names)

        def spf_helo(lookups):
            return spf_mod.check(lookups, ip, sender, helo, s.hostname, spf_mod.HELO) if sender else None

        def temp_spf(scope):
            identity, domain = (sender, sender.rpartition("@")[2]) if scope == spf_mod.MAILFROM else (
                f"postmaster@{helo}", helo)
            return lambda r: spf_mod.SpfResult(scope, spf_mod.TEMPERROR, identity, domain, r)

        # Two jobs in parallel in the dns pool: the facts about the connection, and the message's chain of checks
        # (DMARC needs the SPF and DKIM results).  Each hand-over to a thread costs more than a cached lookup.
        key = (ip, helo.lower(), bool(sender))
        connection = self._connections.get(key)
        if connection is None:
            connection = self._group(
                (iprev_and_helo, (), lambda r: (iprev_mod.IprevResult(iprev_mod.TEMPERROR, reason=r),
                                                iprev_mod.HeloFacts(helo))),
                (spf_helo, (), temp_spf(spf_mod.HELO) if sender else (lambda r: None)), now=True)
            connection.addCallback(self._remember_connection, key)
        else:
            connection = defer.succeed(connection)
        chain = self._group(
            (read_message, (), lambda r: None),
            (spf_used, (), temp_spf(spf_scope)),
            (dkim_all, (), lambda r: [dkimcheck.DkimResult(dkimcheck.TEMPERROR, reason=r)]),
            (arc_chain, (), lambda r: arc_mod.ArcResult(arc_mod.FAIL, reason=r)),
            (dmarc_all, (), lambda r: [dmarc_mod.DmarcResult(dmarc_mod.TEMPERROR, reason=r)]),
            now=data is not None and self._inline_head(data))
        if connection.called and chain.called:  # both on this thread: no Deferred list to wait on
            connection_results, chain_results = connection.result, chain.result
        else:
            connection_results, chain_results = await defer.gatherResults([connection, chain])
        ((ipr, helo_facts), helo_result), (_, spf_result, dkim_results, arc_result, dmarc_results) = \
            connection_results, chain_results
        if sender:
            spf_helo_r, spf_mailfrom_r = helo_result, spf_result
        else:
            spf_helo_r, spf_mailfrom_r = spf_result, None
        result = SenderAuthResult(ip, ipr, helo_facts, spf_helo_r, spf_mailfrom_r, dkim_results, arc_result,
                                  dmarc_results)
        self._decide(result)
        return result

    @staticmethod
    def _inline_head(data: bytes) -> bool:
        """Whether the message's header allows its checks on the reactor thread: no ARC set, at most
        INLINE_MAX_SIGNATURES DKIM signatures (each mention of the name counted)."""
        end = data.find(b"\r\n\r\n")
        lowered = (data if end < 0 else data[:end]).lower()
        return b"arc-seal" not in lowered and lowered.count(b"dkim-signature") <= INLINE_MAX_SIGNATURES

    def _remember_connection(self, found, key):
        """Keep the connection's facts for the next messages of the same client (not when a lookup failed for now)."""
        (ipr, _helo), helo_spf = found
        if ipr.result != iprev_mod.TEMPERROR and (helo_spf is None or helo_spf.result != spf_mod.TEMPERROR):
            self._connections.put(key, found, CONNECTION_TTL)
        return found

    def _decide(self, result: SenderAuthResult) -> None:
        """The strictest disposition of the From domains, unless a trusted ARC sealer vouches for the message."""
        order = {"none": 0, dmarc_mod.QUARANTINE: 1, dmarc_mod.REJECT: 2}
        for i, m in enumerate(result.dmarc):
            if m.result != dmarc_mod.FAIL or m.disposition == "none":
                continue
            sealer = arc_mod.trusted_pass(result.arc, self.settings.trusted_sealers, m.from_domain)
            if sealer:
                result.arc_override = sealer
                result.dmarc[i] = dmarc_mod.DmarcResult(
                    m.result, m.from_domain, m.policy, "none", m.record_domain, reason=m.reason,
                    override=f"overridden: ARC sealed by trusted {sealer}")
                continue
            if order[m.disposition] > order[result.disposition]:
                result.disposition, result.disposition_domain = m.disposition, m.from_domain
