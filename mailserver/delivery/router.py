"""Per-recipient routing: which mailbox, relay host or outbound queue a recipient address goes to.

Blocking (it reads the store): call :meth:`Router.route` in a database thread pool.

Rules, in order, for a domain we protect in mode ``local``:
1. an enabled account with that address;
2. an alias with that address: each target is routed again (one-to-many, nested up to ``max_depth``; a target
   outside our domains goes to the outbound queue); a loop is cut where it closes;
3. subaddressing: ``user+tag@domain`` is tried as ``user@domain`` (rules 1-2), with the configured separator;
4. the domain's catch-all alias ``@domain``.
A domain in mode ``relay`` is queued for its ``relay_to`` host.  Any other domain is *outgoing*: allowed only when
the client may relay (authenticated submission or a trusted network), otherwise relay access is denied.

With SRS on (``[srs]``, ``delivery/srs.py``), an ``SRS0=``/``SRS1=`` local part at the SRS domain is a bounce to a
sender we rewrote: when its hash and age check out it goes back to the original sender (whoever sends it: the hash
is the authorization), otherwise it is unknown (550 5.1.1 at RCPT).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import NamedTuple

from mailserver.delivery.srs import SrsError, looks_like_srs
from storage.sendgrants import OWN, SEND_AS

LOCAL, RELAY, OUTGOING = "local", "relay", "outgoing"

# Route errors.
UNKNOWN = "unknown"
RELAY_DENIED = "relay-denied"
LOOP = "loop"
TOO_MANY_TARGETS = "too-many-targets"
OVER_QUOTA = "overquota"


class Route(NamedTuple):
    """One final recipient (a NamedTuple: one is made for every message taken in, which a dataclass makes slower)."""

    kind: str  # LOCAL | RELAY | OUTGOING
    address: str  # the account address (LOCAL) or the address to send to (RELAY, OUTGOING)
    account_id: int | None = None
    relay_to: str = ""  # "host:port" for RELAY


@dataclass(frozen=True)
class RouteResult:
    routes: tuple[Route, ...] = ()
    error: str = ""  # "" or one of the errors above
    detail: str = ""

    @property
    def ok(self) -> bool:
        return not self.error and bool(self.routes)


@dataclass
class _Walk:
    routes: dict[tuple[str, str], Route] = field(default_factory=dict)
    usage: dict[int, tuple[int, int]] = field(default_factory=dict)  # account id -> (used, quota) as read
    loop: bool = False
    too_many: bool = False


def split_address(address: str) -> tuple[str, str]:
    """(local part, lower-case domain); an address without "@" (``<postmaster>``) has no domain."""
    local, at, domain = address.rpartition("@")
    if not at:
        return address, ""
    return local, domain.lower().rstrip(".")


class Router:
    """Routes recipient addresses using the store (accounts, aliases, domains)."""

    def __init__(self, store, *, separator: str = "+", max_depth: int = 10, max_targets: int = 1000,
                 default_domain: str = "", postmaster: str = "", srs=None, clock=time.time):
        self.store = store
        self.srs = srs  # delivery.srs.Srs or None
        self.clock = clock  # wall-clock seconds, for SRS timestamps
        self.separator = separator
        self.max_depth = max_depth
        self.max_targets = max_targets
        self.default_domain = default_domain
        self.postmaster = postmaster.lower()
        self._domains: dict[str, tuple[float, object]] = {}
        self._expansions: dict[str, tuple[float, bool, _Walk]] = {}
        self._lock = threading.Lock()

    #: Seconds a domain lookup is remembered: domains change rarely (CLI), RCPT runs for every recipient.
    DOMAIN_CACHE_SECONDS = 5.0

    def _domain(self, name: str):
        if not name:
            return None
        name = name.lower()
        now = time.monotonic()
        with self._lock:
            hit = self._domains.get(name)
        if hit is not None and hit[0] > now:
            return hit[1]
        info = self.store.get_domain(name)
        with self._lock:
            if len(self._domains) > 10_000:
                self._domains.clear()
            self._domains[name] = (now + self.DOMAIN_CACHE_SECONDS, info)
        return info

    #: Seconds an expansion (accounts, aliases) is remembered for RCPT: a burst of mail to one address costs one
    #: lookup.  A new or removed account or alias takes effect within this time; quota is checked again at delivery.
    ROUTE_CACHE_SECONDS = 2.0

    def route(self, address: str, *, may_relay: bool, size: int = 0, check_quota: bool = True) -> RouteResult:
        """Route one RCPT address.  ``size`` (from MAIL SIZE=) is used for the quota check.  Blocking (database)."""
        return self._route(address, may_relay, size, check_quota, cached_only=False)

    def route_cached(self, address: str, *, may_relay: bool, size: int = 0, check_quota: bool = True
                     ) -> RouteResult | None:
        """The same answer as :meth:`route` from recent lookups only (no database: safe on the reactor thread);
        None when something would have to be looked up."""
        return self._route(address, may_relay, size, check_quota, cached_only=True)

    def _route(self, address, may_relay, size, check_quota, cached_only):
        local, domain = split_address(address)
        if not domain:
            # RFC 5321 4.1.1.3: <postmaster> without a domain names our own postmaster.
            if local.lower() != "postmaster" or not self.default_domain:
                return RouteResult(error=UNKNOWN)
            local, domain = "postmaster", self.default_domain
            address = f"postmaster@{domain}"
        if self.srs is not None and domain == self.srs.domain and looks_like_srs(local):
            return self._srs_bounce(local)
        now = time.monotonic()
        if cached_only:
            with self._lock:
                hit = self._domains.get(domain.lower())
            if hit is None or hit[0] <= now:
                return None
            info = hit[1]
        else:
            info = self._domain(domain)
        if info is None:
            if not may_relay:
                return RouteResult(error=RELAY_DENIED)
            return RouteResult((Route(OUTGOING, address),))
        if info.mode == "relay":
            return RouteResult((Route(RELAY, address, relay_to=info.relay_to),))
        key = address.lower()
        with self._lock:
            hit = self._expansions.get(key)
        if hit is not None and hit[0] > now:
            found, walk = hit[1], hit[2]
        elif cached_only:
            return None
        else:
            walk = _Walk()
            found = self._expand(key, 0, frozenset(), walk)
            if not found and self.postmaster and local.lower() == "postmaster" and key != self.postmaster:
                # RFC 5321 4.5.1: every domain accepts "postmaster"; without its own, the configured one gets it.
                walk = _Walk()
                found = self._expand(self.postmaster, 0, frozenset(), walk)
            with self._lock:
                if len(self._expansions) > 50_000:
                    self._expansions.clear()
                self._expansions[key] = (now + self.ROUTE_CACHE_SECONDS, found, walk)
        if not found:
            if walk.too_many:
                return RouteResult(error=TOO_MANY_TARGETS)
            return RouteResult(error=LOOP if walk.loop else UNKNOWN)
        routes = tuple(walk.routes.values())
        if check_quota:
            for r in routes:
                if r.kind == LOCAL and r.account_id is not None:
                    usage = walk.usage.get(r.account_id)
                    if usage is None:
                        if cached_only:
                            return None
                        usage = self.store.quota(r.account_id)
                    used, limit = usage
                    if limit and (used >= limit or used + size > limit):
                        return RouteResult(routes, error=OVER_QUOTA, detail=r.address)
        return RouteResult(routes)

    def _srs_bounce(self, local: str) -> RouteResult:
        """RCPT to one of our rewritten senders: back to the original sender, or unknown."""
        try:
            original = self.srs.reverse(local, self.clock())
        except SrsError as e:
            return RouteResult(error=UNKNOWN, detail=f"SRS: {e}")
        if split_address(original)[1] == self.srs.domain:
            return RouteResult(error=UNKNOWN, detail="SRS: points at our own SRS domain")
        return RouteResult((Route(OUTGOING, original),))

    def is_ours(self, domain: str) -> bool:
        """Whether ``domain`` is one we protect (local or relay) or the SRS domain.  Blocking (database)."""
        domain = domain.lower().rstrip(".")
        return (self.srs is not None and domain == self.srs.domain) or self._domain(domain) is not None

    def _add(self, walk: _Walk, route: Route) -> None:
        if len(walk.routes) >= self.max_targets:
            walk.too_many = True
            return
        walk.routes.setdefault((route.kind, route.address), route)

    def _expand(self, address: str, depth: int, path: frozenset[str], walk: _Walk) -> bool:
        """Add the routes of ``address`` to ``walk``; False when it leads nowhere."""
        if address in path:
            walk.loop = True  # an alias cycle: this branch ends here
            return False
        if depth > self.max_depth:
            walk.loop = True  # too deep: treated like a loop (RFC 3463 X.4.6)
            return False
        local, domain = split_address(address)
        info = self._domain(domain)
        if info is None:
            self._add(walk, Route(OUTGOING, address))  # external alias target -> outbound queue
            return True
        if info.mode == "relay":
            self._add(walk, Route(RELAY, address, relay_to=info.relay_to))
            return True
        if self._exact(address, depth, path, walk):
            return True
        if self.separator and self.separator in local:
            base = local.split(self.separator, 1)[0]
            if base and self._exact(f"{base}@{domain}", depth, path, walk):
                return True
        targets = self.store.alias_targets("@" + domain)  # catch-all
        return self._targets(targets, depth, path | {address}, walk)

    def _exact(self, address: str, depth: int, path: frozenset[str], walk: _Walk) -> bool:
        acct = self.store.get_account(address)
        if acct is not None and acct.enabled:
            self._add(walk, Route(LOCAL, acct.address, acct.id))
            walk.usage[acct.id] = (acct.used_bytes, acct.quota_bytes)
            return True
        targets = self.store.alias_targets(address)
        return self._targets(targets, depth, path | {address}, walk)

    def _targets(self, targets: list[str], depth: int, path: frozenset[str], walk: _Walk) -> bool:
        ok = False
        for t in targets:
            if walk.too_many:
                break
            ok = self._expand(t.strip().lower(), depth + 1, path, walk) or ok
        return ok

    # ---------------------------------------------------------------------------------------- senders

    def sender_right(self, account_id: int, sender: str) -> str | None:
        """Under which right the authenticated account may name ``sender`` as a sender: ``OWN`` (its address or
        an alias of it), ``SEND_AS`` or ``SEND_ON_BEHALF`` (a grant, ``storage/sendgrants.py``), or None."""
        return self.right_among(self.store.send_identities(account_id), sender)

    def right_among(self, identities: list[tuple[str, str]], sender: str) -> str | None:
        """The right ``sender`` has among ``identities`` (``Store.send_identities``: (address, kind), own first).
        A subaddress counts as its base address; an exact entry wins over the base's, an own one over a grant."""
        rights: dict[str, str] = {}
        for address, kind in identities:
            rights.setdefault(address.lower(), kind)
        sender = sender.lower()
        if sender in rights:
            return rights[sender]
        local, domain = split_address(sender)
        if self.separator and self.separator in local:
            return rights.get(f"{local.split(self.separator, 1)[0]}@{domain}")
        return None

    def sender_allowed(self, account_id: int, sender: str) -> bool:
        """Whether the authenticated account may use ``sender`` as envelope sender (RFC 6409 6.1): an address of
        its own, an alias of it, or one it was granted send-as on (a subaddress of any counts). Send-on-behalf is
        not enough: that message's envelope sender stays the account's own (the agent, as its ``Sender:``)."""
        return self.sender_right(account_id, sender) in (OWN, SEND_AS)

def build_router(config, store) -> Router:
    """A Router over ``store`` with the configuration's subaddressing, alias limits, postmaster and SRS (its
    generated secret is read from the store, or made there once, when SRS is on).  Blocking."""
    from mailserver.delivery import srs

    local_domains = [d.name for d in config.domain if d.mode == "local"]
    return Router(store, separator=config.smtp.subaddress_separator, max_depth=config.limits.alias_max_depth,
                  max_targets=config.limits.alias_max_targets,
                  default_domain=local_domains[0] if local_domains else "", postmaster=config.smtp.postmaster,
                  srs=srs.from_config(config, store))
