"""DNS block and allow lists (RFC 5782) over a real DNS server on loopback and the real MX listener.

Each scenario is a client address of its own: the test connects from 127.0.0.N (any address of 127/8 is this
host's), and the zones list those addresses (``N.0.0.127.bl.test``).  The score a listing adds is decided by the
spam policy's default thresholds (tag 5, junk 6, refuse 15).
"""

from __future__ import annotations

import smtplib
import threading

import pytest

from mailserver import config as cfgmod
from mailserver.config import DnsConfig, DnsListConfig, parse_address
from mailserver.dns import DnsResolver
from mailserver.inbound import dnsbl
from mailserver.inbound.dnsbl import DnsLists, interpret, query_name
from mailserver.inbound.policy import JUNK_KEYWORD
from tests import harness
from tests.dnsserver import dns_server
from tests.inbound.mail import PW, copies, message

V6_NAME = ".".join(reversed("0" * 31 + "1"))  # ::1, RFC 5782 2.4 nibbles

ZONES = {
    "bl.test": {
        "2.0.0.127": [("A", "127.0.0.2")],  # listed
        "3.0.0.127": [("A", "127.0.0.2"), ("A", "127.0.0.4")],  # listed with two codes
        "4.0.0.127": [("A", "127.255.255.254")],  # the list's error code: not a listing
        "5.0.0.127": [("A", "192.0.2.1")],  # outside 127/8: not a listing
        "8.0.0.127": [("A", "127.0.0.2")],  # listed here and in the allow list
        "9.0.0.127": [("A", f"127.0.{i // 250}.{i % 250 + 1}") for i in range(3000)],  # ~48 KiB over TCP
        "10.0.0.127": [("A", f"127.{i // 62500}.{i // 250 % 250}.{i % 250 + 1}") for i in range(10_000)],
        V6_NAME: [("A", "127.0.0.2")],
        "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2": [("A", "127.0.0.2")],  # 2001:db8::1
    },
    "codes.test": {
        "3.0.0.127": [("A", "127.0.0.4")],  # a code with its own weight: refused
        "11.0.0.127": [("A", "127.0.0.9")],  # a code not in returncodes: ignored
    },
    "wl.test": {"8.0.0.127": [("A", "127.0.10.2")]},
    "rhs.test": {"spammer.test": [("A", "127.0.0.2")]},
}
HANG = {"6.0.0.127.bl.test"}

LISTS = {
    "dnsbl": [{"zone": "bl.test", "weight": 6.0},
              {"zone": "codes.test", "name": "CODES", "returncodes": {"127.0.0.4": 20.0, "127.0.0.5": 1.0}}],
    "dnswl": [{"zone": "wl.test", "weight": -4.0}],
    "rhsbl": [{"zone": "rhs.test", "weight": 2.5}],
    "dnsbl_timeout": 10.0,  # a bound only: the zone that never answers has a server of its own with 1 s
}


@pytest.fixture(scope="module")
def dns():
    with dns_server(ZONES, hang=HANG) as srv:
        yield srv


@pytest.fixture(scope="module")
def srv(dns, tmp_path_factory):
    with harness.running_server(tmp_path_factory.mktemp("dnsbl"), listeners=("smtp",),
                                dns={"nameservers": [dns.address], "timeout": 2.0}, antispam=LISTS) as s:
        s.add_user("bob@example.test", PW)
        yield s


def send_from(srv, source: str, raw: bytes, sender: str = "someone@remote.test", host: str = "127.0.0.1",
              port: int | None = None):
    """(code, text) of the reply to DATA, sent from the client address ``source``."""
    with smtplib.SMTP(host, port or srv.port("smtp"), timeout=60, source_address=(source, 0)) as c:
        c.ehlo("mx.remote.test")
        assert c.mail(sender)[0] == 250
        assert c.rcpt("bob@example.test")[0] == 250
        return c.data(raw)


def last(srv, mailbox: str = "INBOX"):
    return copies(srv, "bob@example.test", mailbox)[-1]


def lists(dns, **antispam) -> DnsLists:
    """DnsLists over the loopback server, its lookups run inline (this thread)."""
    from twisted.internet import defer

    cfg = cfgmod.load_dict({"hostname": "mx.example.test", "data_dir": "/tmp/unused",
                            "antispam": {**LISTS, **antispam}})
    resolver = DnsResolver(DnsConfig((parse_address(dns.address, 53),), 2.0))
    return DnsLists(cfg, resolver, lambda f, *a: defer.maybeDeferred(f, *a))


def result_of(d):
    out = []
    d.addBoth(out.append)
    assert out, "an inline lookup fires at once"
    return out[0]


# --------------------------------------------------------------------------------------------- names, answers

@pytest.mark.parametrize("ip, name", [
    ("192.0.2.99", "99.2.0.192.bl.test"),  # RFC 5782 2.1
    ("2001:db8:1:2:3:4:567:89ab", "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.bl.test"),  # 2.4
    ("::ffff:192.0.2.1", "1.2.0.192.bl.test"),  # an IPv4-mapped client is asked as its IPv4 address
])
def test_query_names(ip, name):
    assert query_name(ip, "bl.test.") == name


def test_query_name_of_something_else_is_refused():
    with pytest.raises(ValueError):
        query_name("not-an-ip", "bl.test")


E = DnsListConfig("bl.test", weight=3.0)
CODES = DnsListConfig("bl.test", name="SBL", returncodes={"127.0.0.2": 4.0, "127.0.0.4": -1.0, "127.0.0.9": 9.0})


@pytest.mark.parametrize("entry, answers, expect", [
    (E, ["127.0.0.2"], ("DNSBL_BL_TEST", 3.0, ("127.0.0.2",))),
    (E, ["127.0.0.4", "127.0.0.2", "127.0.0.2"], ("DNSBL_BL_TEST", 3.0, ("127.0.0.2", "127.0.0.4"))),
    (E, ["127.255.255.254"], None),  # error code: "public resolver", not a listing
    (E, ["127.255.255.252", "127.0.0.3"], ("DNSBL_BL_TEST", 3.0, ("127.0.0.3",))),  # the listing counts
    (E, ["192.0.2.1"], None),  # outside 127/8
    (E, ["10.0.0.2", "127.1.2.3"], ("DNSBL_BL_TEST", 3.0, ("127.1.2.3",))),
    (E, ["garbage"], None),
    (CODES, ["127.0.0.2", "127.0.0.4"], ("SBL", 4.0, ("127.0.0.2", "127.0.0.4"))),  # the heaviest code's weight
    (CODES, ["127.0.0.9", "127.0.0.4"], ("SBL", 9.0, ("127.0.0.4", "127.0.0.9"))),
    (CODES, ["127.0.0.3"], None),  # not one of its codes
])
def test_answers_and_what_they_mean(entry, answers, expect):
    got = interpret("dnsbl", entry, answers)
    assert (None if got is None else (got.symbol, got.weight, got.codes)) == expect


def test_only_the_first_codes_of_a_huge_answer_are_read():
    got = interpret("dnsbl", E, [f"127.0.{i // 250}.{i % 250 + 1}" for i in range(10_000)])
    assert len(got.codes) == dnsbl.MAX_CODES and got.weight == 3.0


# --------------------------------------------------------------------------------------------- lookups on loopback

def test_listed_client_has_one_symbol_per_zone_with_zone_and_code(dns):
    r = result_of(lists(dns).client("127.0.0.3"))
    assert [(x.kind, x.symbol, x.weight, x.detail) for x in r.listings] == [
        ("dnsbl", "DNSBL_BL_TEST", 6.0, "bl.test 127.0.0.2,127.0.0.4"),
        ("dnsbl", "CODES", 20.0, "codes.test 127.0.0.4")]
    assert r.failed == [] and not r.allowed


def test_ipv6_client_is_asked_by_nibbles(dns):
    r = result_of(lists(dns).client("2001:db8::1"))
    assert [(x.symbol, x.codes) for x in r.listings] == [("DNSBL_BL_TEST", ("127.0.0.2",))]


def test_allow_list_listing(dns):
    r = result_of(lists(dns).client("127.0.0.8"))
    assert [(x.kind, x.weight) for x in r.listings] == [("dnsbl", 6.0), ("dnswl", -4.0)] and r.allowed


def test_sender_domain_list(dns):
    ls = lists(dns)
    assert [(x.symbol, x.detail) for x in result_of(ls.domain("Spammer.Test")).listings] == [
        ("RHSBL_RHS_TEST", "rhs.test 127.0.0.2")]
    assert result_of(ls.domain("fine.test")).listings == []
    assert result_of(ls.domain("x" * 63 + "." + "y" * 63 + "." + "z" * 63 + "." + "w" * 63)).listings == []


def test_all_zones_are_asked_at_once_and_answers_are_kept(dns):
    """One job per zone (each its own thread in the server); a second message of the client asks nothing."""
    ls = lists(dns)
    before = len(dns.queries)
    result_of(ls.client("127.0.0.2"))
    asked = dns.queries[before:]
    assert sorted(n for n, _t in asked) == ["2.0.0.127.bl.test", "2.0.0.127.codes.test", "2.0.0.127.wl.test"]
    result_of(ls.client("127.0.0.2"))
    assert len(dns.queries) == before + 3


# --------------------------------------------------------------------------------------------- over SMTP

def test_not_listed_client_gets_no_spam_fields(srv):
    code, _ = send_from(srv, "127.0.0.1", message("clean"))
    assert code == 250
    msg, keywords = last(srv)
    assert msg["X-Spam-Score"] is None and msg["X-Spam-Status"] is None and JUNK_KEYWORD not in keywords


def test_listed_client_goes_to_junk_with_the_symbol(srv):
    code, _ = send_from(srv, "127.0.0.2", message("listed"))
    assert code == 250
    msg, keywords = last(srv, "Junk")
    assert msg["Subject"] == "listed" and JUNK_KEYWORD in keywords
    assert msg["X-Spam-Score"] == "6.00" and msg["X-Spam-Symbols"] == "DNSBL_BL_TEST(6.00)"


def test_weighty_return_code_is_refused_at_data(srv):
    code, text = send_from(srv, "127.0.0.3", message("very listed"))
    assert code == 550 and text.startswith(b"5.7.1 Message refused as spam (CODES")


def test_error_code_is_not_a_listing(srv):
    code, _ = send_from(srv, "127.0.0.4", message("error code"))
    assert code == 250
    msg, _ = last(srv)
    assert msg["Subject"] == "error code" and msg["X-Spam-Score"] is None


def test_answer_outside_loopback_is_not_a_listing(srv):
    code, _ = send_from(srv, "127.0.0.5", message("rewritten nxdomain"))
    assert code == 250 and last(srv)[0]["X-Spam-Score"] is None


def test_code_not_in_returncodes_is_ignored(srv):
    code, _ = send_from(srv, "127.0.0.11", message("odd code"))
    assert code == 250 and last(srv)[0]["X-Spam-Score"] is None


def test_zone_that_does_not_answer_is_skipped_and_named(dns, tmp_path):
    """The zone's name never answers: after dnsbl_timeout the message goes on, marked as not checked by it."""
    with harness.running_server(tmp_path, listeners=("smtp",), dns={"nameservers": [dns.address], "timeout": 2.0},
                                antispam={**LISTS, "dnsbl_timeout": 1.0}) as s:
        s.add_user("bob@example.test", PW)
        code, _ = send_from(s, "127.0.0.6", message("slow zone"))
        assert code == 250
        msg, _ = last(s)
    status = msg["X-Spam-Status"]
    assert msg["Subject"] == "slow zone" and status.startswith("unchecked (") and "dnsbl bl.test" in status
    assert msg["X-Spam-Score"] is None


def test_allow_list_lowers_the_score(srv):
    code, _ = send_from(srv, "127.0.0.8", message("listed and allowed"))
    assert code == 250
    msg, keywords = last(srv)
    assert msg["Subject"] == "listed and allowed" and JUNK_KEYWORD not in keywords and msg["X-Spam"] is None
    assert msg["X-Spam-Score"] == "2.00" and msg["X-Spam-Symbols"] == "DNSBL_BL_TEST(6.00) DNSWL_WL_TEST(-4.00)"


def test_sender_domain_listing_is_scored(srv):
    raw = message("rhsbl").replace(b"someone@remote.test", b"x@spammer.test")
    code, _ = send_from(srv, "127.0.0.1", raw, sender="x@spammer.test")
    assert code == 250
    msg, _ = last(srv)
    assert msg["X-Spam-Score"] == "2.50" and msg["X-Spam-Symbols"] == "RHSBL_RHS_TEST(2.50)"


def test_ipv6_client_over_smtp(dns, tmp_path):
    with harness.running_server(tmp_path, listeners=("smtp",), listen={"smtp": ["[::1]:0"]},
                                dns={"nameservers": [dns.address], "timeout": 2.0}, antispam=LISTS) as s:
        s.add_user("bob@example.test", PW)
        code, _ = send_from(s, "::1", message("over ipv6"), host="::1")
        assert code == 250
        msg, keywords = last(s, "Junk")
        assert msg["X-Spam-Symbols"] == "DNSBL_BL_TEST(6.00)" and JUNK_KEYWORD in keywords


def test_submission_and_trusted_clients_are_not_looked_up(dns, tmp_path):
    with harness.running_server(tmp_path, listeners=("smtp",), smtp={"trusted_networks": ["127.0.0.2/32"]},
                                dns={"nameservers": [dns.address], "timeout": 2.0}, antispam=LISTS) as s:
        s.add_user("bob@example.test", PW)
        before = len(dns.queries)
        assert send_from(s, "127.0.0.2", message("trusted"))[0] == 250
        assert last(s)[0]["X-Spam-Score"] is None
        assert [q for q in dns.queries[before:] if q[0].endswith(("bl.test", "wl.test", "codes.test"))] == []


# --------------------------------------------------------------------------------------------- hostile answers

def test_three_thousand_answers_are_one_listing(srv):
    """~48 KiB of A records (over TCP after a truncated UDP answer): the first codes are read, one symbol."""
    code, _ = send_from(srv, "127.0.0.9", message("many codes"))
    assert code == 250
    msg, _ = last(srv, "Junk")
    assert msg["Subject"] == "many codes" and msg["X-Spam-Symbols"] == "DNSBL_BL_TEST(6.00)"


def test_ten_thousand_answers_give_a_clear_verdict_and_the_reactor_serves_meanwhile(srv):
    """10,000 A records do not fit a DNS message (64 KiB): the zone fails for this client and is named, the
    message is accepted, and another session is served while the lookup is under way."""
    result = {}

    def slow():
        result["reply"] = send_from(srv, "127.0.0.10", message("ten thousand"))

    t = threading.Thread(target=slow)
    t.start()
    with smtplib.SMTP("127.0.0.1", srv.port("smtp"), timeout=10) as c:
        assert c.noop()[0] == 250
    t.join(60)
    assert not t.is_alive()
    assert result["reply"][0] == 250
    found = [m for m, _k in copies(srv, "bob@example.test") + copies(srv, "bob@example.test", "Junk")
             if m["Subject"] == "ten thousand"]
    assert len(found) == 1
    # No DNS message can carry the answer (a TCP message is at most 65,535 bytes): the zone is named unchecked.
    assert found[0]["X-Spam-Status"] == "unchecked (dnsbl bl.test)" and found[0]["X-Spam-Score"] is None


# --------------------------------------------------------------------------------------------- configuration

@pytest.mark.parametrize("antispam, key", [
    ({"dnswl": [{"zone": "wl.test", "weight": 1.0}]}, "antispam.dnswl[0].weight"),
    ({"dnsbl": [{"zone": "bl..test"}]}, "antispam.dnsbl[0].zone"),
    ({"dnsbl": [{"weight": 1.0}]}, "antispam.dnsbl[0].zone"),
    ({"dnsbl": [{"zone": "bl.test", "returncodes": {"127.255.255.1": 1.0}}]}, "antispam.dnsbl[0].returncodes"),
    ({"dnsbl": [{"zone": "bl.test", "returncodes": {"10.0.0.1": 1.0}}]}, "antispam.dnsbl[0].returncodes"),
    ({"dnsbl": [{"zone": "bl.test", "name": "bad name"}]}, "antispam.dnsbl[0].name"),
    ({"dnsbl": [{"zone": "bl.test", "weight": "x"}]}, "antispam.dnsbl[0].weight"),
    ({"dnsbl": [{"zone": "bl.test", "bogus": 1}]}, "antispam.dnsbl[0].bogus"),
    ({"dnsbl_timeout": 0}, "antispam.dnsbl_timeout"),
])
def test_bad_list_configuration_is_refused_naming_the_key(antispam, key):
    with pytest.raises(cfgmod.ConfigError) as e:
        cfgmod.load_dict({"hostname": "mx.example.test", "data_dir": "/tmp/x", "antispam": antispam})
    assert key in str(e.value)
