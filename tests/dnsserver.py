"""A real authoritative DNS server on 127.0.0.1 (twisted.names) serving test zones, for any test that resolves names.

Usage (the server runs on the harness reactor; ``start``/``stop`` are called through ``tests.harness.call``)::

    zones = {"example.net": {"": [("MX", 10, "mx1.example.net")], "mx1": [("A", "127.0.0.1")]}}
    with dns_server(zones) as srv:
        cfg = make_config(tmp_path, dns={"nameservers": [srv.address], "timeout": 1.0})

Records are tuples: ``("A", "127.0.0.1")``, ``("AAAA", "::1")``, ``("MX", pref, "host")`` (host "." = null MX),
``("CNAME", "target")``, ``("TXT", "text", ...)``, ``("SRV", prio, weight, port, "target")``, ``("PTR", "name")``.
Owner names are relative to the zone ("" = the apex) or absolute when they end with ".".  Names listed in ``hang`` are
never answered (the query times out): the way to test a lookup timeout; names in ``servfail`` are answered SERVFAIL
(a temporary failure without waiting).  ``srv.queries`` lists every (name, type) asked, in order.  UDP and TCP
listen on one port; a UDP answer larger than the client's EDNS size is truncated and asked again over TCP.
"""

from __future__ import annotations

from contextlib import contextmanager

from twisted.internet import defer
from twisted.names import authority, dns, server

from tests import harness


def _record(rec: tuple, ttl: int = 60):
    kind, *args = rec
    if kind == "A":
        return dns.Record_A(args[0], ttl=ttl)
    if kind == "AAAA":
        return dns.Record_AAAA(args[0], ttl=ttl)
    if kind == "MX":
        return dns.Record_MX(args[0], args[1].rstrip(".").encode() if args[1] != "." else b"", ttl=ttl)
    if kind == "CNAME":
        return dns.Record_CNAME(args[0].rstrip(".").encode(), ttl=ttl)
    if kind == "TXT":
        return dns.Record_TXT(*[a.encode() if isinstance(a, str) else a for a in args], ttl=ttl)
    if kind == "SRV":
        return dns.Record_SRV(args[0], args[1], args[2], args[3].rstrip(".").encode(), ttl=ttl)
    if kind == "PTR":
        return dns.Record_PTR(args[0].rstrip(".").encode(), ttl=ttl)
    raise ValueError(f"unsupported record type {kind}")


class ZoneAuthority(authority.FileAuthority):
    """One zone built from Python data instead of a zone file."""

    def __init__(self, origin: str, names: dict[str, list[tuple]], hang: set[str], servfail: set[str] = frozenset(),
                 queries: list | None = None):
        self._origin, self._names, self._hang, self._servfail = origin.rstrip("."), names, hang, servfail
        self._queries = queries if queries is not None else []
        super().__init__(None)

    def loadFile(self, filename):  # noqa: N802 - twisted API
        origin = self._origin.encode()
        self.soa = (origin, dns.Record_SOA(mname=b"ns." + origin, rname=b"hostmaster." + origin, serial=1,
                                           refresh=60, retry=60, expire=60, minimum=60, ttl=60))
        self.records = {origin.lower(): [self.soa[1]]}
        for owner, recs in self._names.items():
            if owner.endswith("."):
                full = owner.rstrip(".")
            else:
                full = f"{owner}.{self._origin}" if owner else self._origin
            self.records.setdefault(full.lower().encode(), []).extend(_record(r) for r in recs)

    def _lookup(self, name, cls, type, timeout=None):
        key = name.decode().lower().rstrip(".")
        if key == self._origin.lower() or key.endswith("." + self._origin.lower()):
            self._queries.append((key, dns.QUERY_TYPES.get(type, str(type))))
        if key in self._hang:
            return defer.Deferred()  # never answered: the client times out
        if key in self._servfail:
            return defer.fail(RuntimeError("SERVFAIL for the test"))  # the server answers SERVFAIL
        return super()._lookup(name, cls, type, timeout)


class _TruncatingDatagramProtocol(dns.DNSDatagramProtocol):
    """UDP answers larger than the client's EDNS payload size (512 without EDNS) go out empty with TC set, as a
    real server's would (RFC 1035 4.2.1, RFC 6891 6.2.5): the client asks again over TCP."""

    def writeMessage(self, message, address):  # noqa: N802 - twisted API
        data = message.toStr()
        limit = max(getattr(message, "maxSize", 0) or 512, 512)
        if len(data) > limit:
            message.answers, message.authority, message.additional = [], [], []
            message.trunc = 1
            data = message.toStr()
        self.transport.write(data, address)


class DnsTestServer:
    def __init__(self, zones: dict[str, dict[str, list[tuple]]], hang: set[str] | frozenset[str] = frozenset(),
                 servfail: set[str] | frozenset[str] = frozenset()):
        hang = {h.lower().rstrip(".") for h in hang}
        servfail = {h.lower().rstrip(".") for h in servfail}
        self.queries: list[tuple[str, str]] = []
        self.authorities = [ZoneAuthority(origin, names, hang, servfail, self.queries) for origin, names in zones.items()]
        self.port = 0
        self._udp = self._tcp = None

    @property
    def address(self) -> str:
        """The ``[dns] nameservers`` entry for this server."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        """Listen (call on the reactor thread)."""
        from twisted.internet import reactor

        factory = server.DNSServerFactory(authorities=self.authorities)
        for _ in range(20):
            self._udp = reactor.listenUDP(0, _TruncatingDatagramProtocol(factory), interface="127.0.0.1")
            self.port = self._udp.getHost().port
            try:
                self._tcp = reactor.listenTCP(self.port, factory, interface="127.0.0.1")
                return
            except Exception:
                self._udp.stopListening()
        raise RuntimeError("no free port for UDP and TCP")

    def stop(self):
        return defer.gatherResults([defer.maybeDeferred(p.stopListening) for p in (self._udp, self._tcp) if p])


@contextmanager
def dns_server(zones: dict[str, dict[str, list[tuple]]], hang=frozenset(), servfail=frozenset()):
    srv = DnsTestServer(zones, hang, servfail)
    harness.call(srv.start)
    try:
        yield srv
    finally:
        harness.call(srv.stop)
