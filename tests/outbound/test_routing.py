"""Routing against a real DNS server on 127.0.0.1: MX preference and fallback, implicit MX, null MX, NXDOMAIN,
lookup timeouts, CNAME chains, and never our own listeners."""

from __future__ import annotations

import random
from email import message_from_bytes, policy

from mailserver.config import DnsConfig, parse_address
from mailserver.delivery.mx import RouteError, order_mx, route_domain
from mailserver.dns import DnsResolver, MxRecord
from tests.dnsserver import dns_server
from tests.outbound.helpers import message, outbound, wait_for
from tests.outbound.receiver import closed_port, receiver

ZONES = {
    "remote.test": {
        "": [("MX", 10, "mx1.remote.test"), ("MX", 20, "mx2.remote.test")],
        "mx1": [("A", "127.0.0.1")],
        "mx2": [("A", "127.0.0.1")],
    },
    "implicit.test": {"": [("A", "127.0.0.1")]},
    "nullmx.test": {"": [("MX", 0, ".")]},
    "cname.test": {"": [("MX", 5, "alias.cname.test")], "alias": [("CNAME", "mx2.remote.test.")]},
    "empty.test": {"": [("TXT", "no mail here")]},
}


def _resolver(srv) -> DnsResolver:
    return DnsResolver(DnsConfig((parse_address(srv.address, 53),), 0.5))


def test_mx_order_is_by_preference_and_random_within_one():
    """RFC 5321 5.1: lower preference first; equal preferences shuffled (both orders occur)."""
    recs = [MxRecord(20, "c"), MxRecord(10, "a"), MxRecord(10, "b"), MxRecord(30, "d")]
    seen = set()
    for seed in range(30):
        order = [r.host for r in order_mx(recs, random.Random(seed))]
        assert order[2:] == ["c", "d"] and set(order[:2]) == {"a", "b"}
        seen.add(tuple(order[:2]))
    assert seen == {("a", "b"), ("b", "a")}


def test_route_domain_with_real_dns():
    """MX hosts resolve in preference order, CNAME chains are followed, null MX and NXDOMAIN are permanent."""
    with dns_server(ZONES, hang={"slow.test"}) as srv:
        r = _resolver(srv)
        kw = dict(rng=random.Random(1), port_for=lambda h: 25, is_self=lambda h, ip, p: False)
        hops = route_domain(r, "remote.test", **kw)
        assert [h.host for h in hops] == ["mx1.remote.test", "mx2.remote.test"]
        assert hops[0].addresses == ("127.0.0.1",)
        assert [h.addresses for h in route_domain(r, "cname.test", **kw)] == [("127.0.0.1",)]
        assert [h.host for h in route_domain(r, "implicit.test", **kw)] == ["implicit.test"]
        for domain, code, status in (("nullmx.test", 556, "5.1.10"), ("nosuch.remote.test", 550, "5.1.2"),
                                     ("empty.test", 550, "5.1.2"), ("slow.test", 451, "4.4.3")):
            try:
                route_domain(r, domain, **kw)
            except RouteError as e:
                assert (e.reply.code, e.reply.status) == (code, status), domain
            else:
                raise AssertionError(f"{domain} routed")
        # RFC 5321 5.1: when we are an MX, we and every host of equal or worse preference are dropped.
        hops = route_domain(r, "remote.test", rng=random.Random(1), port_for=lambda h: 25,
                            is_self=lambda h, ip, p: h == "mx2.remote.test")
        assert [h.host for h in hops] == ["mx1.remote.test"]
        try:
            route_domain(r, "remote.test", rng=random.Random(1), port_for=lambda h: 25,
                         is_self=lambda h, ip, p: h == "mx1.remote.test")
        except RouteError as e:
            assert e.reply.status == "5.4.6"
        else:
            raise AssertionError("loop not detected")


def test_mx_fallback_to_second_preference(tmp_path):
    """The best MX refuses connections: the message goes to the next one."""
    with receiver() as rx, outbound(tmp_path, ZONES, runner_kwargs={
            "port_map": {"mx1.remote.test": closed_port(), "mx2.remote.test": 0}}) as ob:
        ob.runner.port_map["mx2.remote.test"] = rx.port
        ob.enqueue(message(), ["bob@remote.test"])
        wait_for(lambda: rx.transactions and not ob.queue_rows())
        assert rx.transactions[0].rcpts == ["bob@remote.test"]
        assert rx.transactions[0].mail_from == "alice@example.test"


def test_implicit_mx(tmp_path):
    """No MX record: the domain's own address record is the mail host (RFC 5321 5.1)."""
    with receiver() as rx, outbound(tmp_path, ZONES) as ob:
        ob.runner.port_map["implicit.test"] = rx.port
        ob.enqueue(message(to="carol@implicit.test"), ["carol@implicit.test"])
        wait_for(lambda: rx.transactions and not ob.queue_rows())
        assert rx.transactions[0].rcpts == ["carol@implicit.test"]


def _report(raw: bytes):
    msg = message_from_bytes(raw, policy=policy.default)
    assert msg.get_content_type() == "multipart/report"
    parts = list(msg.iter_parts())
    status = parts[1]
    assert status.get_content_type() == "message/delivery-status"
    blocks = [dict(h.items()) for h in status.get_payload()]
    return msg, parts, blocks


def test_null_mx_fails_at_once_with_5_1_10(tmp_path):
    """RFC 7505: a null MX fails the recipient without any connection; the sender gets a report."""
    with outbound(tmp_path, ZONES) as ob:
        ob.enqueue(message(to="x@nullmx.test"), ["x@nullmx.test"])
        wait_for(lambda: not ob.queue_rows() and ob.inbox())
        msg, parts, blocks = _report(ob.inbox()[0])
        assert blocks[1]["Final-Recipient"] == "rfc822; x@nullmx.test"
        assert blocks[1]["Action"] == "failed" and blocks[1]["Status"] == "5.1.10"


def test_nxdomain_fails_with_report(tmp_path):
    with outbound(tmp_path, ZONES) as ob:
        ob.enqueue(message(to="x@nosuch.remote.test"), ["x@nosuch.remote.test"])
        wait_for(lambda: not ob.queue_rows() and ob.inbox())
        _, _, blocks = _report(ob.inbox()[0])
        assert blocks[1]["Status"] == "5.1.2"


def test_dns_timeout_defers(tmp_path):
    """A lookup timeout is temporary: the recipient stays queued with a later next attempt, no report."""
    with outbound(tmp_path, ZONES, hang={"slow.test"}) as ob:
        ob.enqueue(message(to="x@slow.test"), ["x@slow.test"])
        rows = wait_for(lambda: [r for q in ob.queue_rows() for r in q.recipients if r.attempts == 1])
        assert rows[0].status == "deferred" and "4.4.3" in rows[0].last_reply
        assert rows[0].next_attempt > ob.clock.seconds() + 200
        assert ob.inbox() == []
