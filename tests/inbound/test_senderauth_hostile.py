"""Hostile input for each parser of the sender authentication checks: a clear verdict, never a crash, never a hang.

The checks run over a real DNS server on loopback (our resolver, our Lookups), as the stage runs them; the last
tests go through the listener and show the reactor keeps serving while a check waits on a name that never answers.
"""

from __future__ import annotations

import smtplib
import threading

import dkim
import pytest

from mailserver.config import DnsConfig, parse_address
from mailserver.dns import DnsResolver
from mailserver.inbound import arc, authresults, dkimcheck, dmarc, iprev, spf
from mailserver.inbound.lookups import MAX_ANSWER_BYTES, Lookups
from tests.dnsserver import dns_server
from tests.inbound.senderauth_env import Keys, auth_results, message, senderauth_server, txt


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return Keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def dns(keys):
    short_p = public_key_p((1 << 511) | 0x10001, 65537)  # 512 bits: cryptography makes no such private key
    big_key = "v=DKIM1; k=rsa; p=" + "A" * (MAX_ANSWER_BYTES + 1)
    zone = {
        **keys.records(),
        "short._domainkey": [txt(f"v=DKIM1; k=rsa; p={short_p}")],
        "huge._domainkey": [txt(big_key)],
        "junk._domainkey": [txt("v=DKIM1; k=rsa; p=!!!not base64!!!")],
        "edbad._domainkey": [txt("v=DKIM1; k=ed25519; p=AAAA")],
        "unknown._domainkey": [txt(f"v=DKIM1; k=dsa; p={keys.direct_p}")],
        "revoked._domainkey": [txt("v=DKIM1; k=rsa; p=")],
        "redirloop": [txt("v=spf1 redirect=redirloop.sender.test")],
        "_dmarc": [txt("v=DMARC1; p=reject")],
        "_dmarc.lower": [txt("v=dmarc1; p=reject")],
        "_dmarc.badp": [txt("v=DMARC1; p=bogus")],
        "_dmarc.badprua": [txt("v=DMARC1; p=bogus; rua=mailto:x@sender.test")],
        "_dmarc.two": [txt("v=DMARC1; p=reject"), txt("v=DMARC1; p=none")],
        "_dmarc.long": [txt("v=DMARC1; p=reject; x=" + "y" * 5000)],
        "_dmarc.garbage": [txt("v=DMARC1;;; p = quarantine ; pct=abc; adkim=q; sp=; ===; np")],
    }
    with dns_server({"sender.test": zone}, hang={"hang._domainkey.sender.test"}) as srv:
        yield srv


def public_key_p(n: int, e: int) -> str:
    """The p= of an RSA public key record with modulus ``n`` and exponent ``e``."""
    import base64

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    der = rsa.RSAPublicNumbers(e, n).public_key().public_bytes(serialization.Encoding.DER,
                                                                serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode()


def lookups(dns, timeout: float = 5.0, max_queries: int = 50) -> Lookups:
    return Lookups(DnsResolver(DnsConfig((parse_address(dns.address, 53),), 1.0)), timeout=timeout,
                   max_queries=max_queries)


def signed(keys, selector: bytes = b"direct", **kw) -> bytes:
    raw = message()
    return dkim.sign(raw, selector, b"sender.test", keys.direct_pem, **kw) + raw


# --------------------------------------------------------------------------------------------- DKIM

@pytest.mark.parametrize("selector, reason", [
    (b"short", "RSA key of 512 bits is too short (RFC 8301)"),
    (b"huge", f"key lookup: TXT answer larger than {MAX_ANSWER_BYTES} bytes"),
    (b"junk", "bad key record: Invalid base64"),
    (b"unknown", "bad key record: unknown algorithm in k= tag: b'dsa'"),
    (b"revoked", "key revoked (empty p=)"),
    (b"nokey", "no key record"),
])
def test_dkim_bad_keys_are_permerrors(dns, keys, selector, reason):
    (r,) = dkimcheck.verify(lookups(dns), signed(keys, selector))
    assert r.result == "permerror" and r.reason.startswith(reason), r.reason


def test_dkim_huge_rsa_exponent_is_refused_before_any_arithmetic(dns, keys):
    """An exponent of thousands of bits would cost seconds of CPU in a thread nothing can stop."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    n = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key().public_numbers().n
    record = f"v=DKIM1; k=rsa; p={public_key_p(n, (1 << 1023) + 1)}"
    with dns_server({"sender.test": {"bige._domainkey": [txt(record)]}}) as srv:
        (r,) = dkimcheck.verify(lookups(srv), signed(keys, b"bige"))
    assert (r.result, r.reason) == ("permerror", "RSA public exponent is too large")


def test_dkim_ed25519_key_of_wrong_length(dns, keys):
    raw = message()
    sig = dkim.sign(raw, b"edbad", b"sender.test", keys.ed_seed, signature_algorithm=b"ed25519-sha256")
    (r,) = dkimcheck.verify(lookups(dns), sig + raw)
    assert r.result == "permerror" and r.reason.startswith("bad key record")


MALFORMED = [
    b"DKIM-Signature: ;;;===\r\n",
    b"DKIM-Signature: v=1; a=rsa-sha256; d=sender.test; s=direct; h=from; bh=AAAA; b=AAAA\r\n",  # ok tags, bad b
    b"DKIM-Signature: v=1; a=rsa-md5; d=sender.test; s=direct; h=from; bh=AAAA; b=AAAA\r\n",
    b"DKIM-Signature: v=1; a=rsa-sha256; s=direct; h=from; bh=AAAA; b=AAAA\r\n",  # no d=
    b"DKIM-Signature: v=1; a=rsa-sha256; d=sender.test; s=direct; h=from; bh=!!; b=!!\r\n",
    b"DKIM-Signature: v=1; a=rsa-sha256; d=sender.test; s=direct; h=from; l=abc; bh=AAAA; b=AAAA\r\n",
    b"DKIM-Signature: v=1; a=rsa-sha256; d=sender.test; s=direct; h=from; x=1; bh=AAAA; b=AAAA\r\n",  # expired
    b"DKIM-Signature: v=1; a=rsa-sha256; d=sender.test; s=direct; h=from; c=odd/odd; bh=AAAA; b=AAAA\r\n",
    b"DKIM-Signature: v=1; v=1; a=rsa-sha256; d=sender.test; s=direct; h=from; bh=AAAA; b=AAAA\r\n",
    b"DKIM-Signature: v=1; a=rsa-sha256; d=(bad); s=direct; h=from; bh=AAAA; b=AAAA\r\n",
    b"DKIM-Signature: v=1; a=rsa-sha256; d=" + b"a" * 300 + b"; s=x; h=from; bh=AAAA; b=AAAA\r\n",
    b"DKIM-Signature: " + b"x=" + b"y" * 60000 + b"\r\n",
    b"DKIM-Signature: v=1; a=rsa-sha256; d=sender.test; s=direct; h=from; i=@evil.test; bh=AAAA; b=AAAA\r\n",
    b"DKIM-Signature: v=1; a=rsa-sha256; d=sender.test; s=a..b; h=from; bh=AAAA; b=AAAA\r\n",
    b"DKIM-Signature: v=1; a=ed25519-sha256; d=sender.test; s=direct; h=from; bh=AAAA; b=AAAA\r\n",  # rsa key
]


@pytest.mark.parametrize("field", MALFORMED, ids=range(len(MALFORMED)))
def test_dkim_malformed_tags_give_a_verdict(dns, field):
    (r,) = dkimcheck.verify(lookups(dns), field + message())
    assert r.result in ("permerror", "fail"), r
    assert all(32 <= ord(c) < 127 for c in r.reason)


def test_dkim_unparsable_header_and_too_many_signatures(dns, keys):
    assert dkimcheck.verify(lookups(dns), b" continuation first\r\nFrom: a@b\r\n\r\nx")[0].result == "permerror"
    assert dkimcheck.verify(lookups(dns), b"no colon here\r\nFrom: a@b\r\n\r\nx")[0].result == "permerror"
    raw = message()
    sigs = b"".join(dkim.sign(raw, b"direct", b"sender.test", keys.direct_pem) for _ in range(12))
    results = dkimcheck.verify(lookups(dns), sigs + raw)
    assert [r.result for r in results] == ["pass"] * dkimcheck.MAX_SIGNATURES + ["neutral"] * 4


def test_dkim_key_that_never_answers_is_a_temperror_within_the_check_limit(dns, keys):
    (r,) = dkimcheck.verify(lookups(dns, timeout=1.0), signed(keys, b"hang"))
    assert (r.result, r.reason) == ("temperror", "key lookup: DNS timeout")


def test_query_budget_ends_a_check(dns, keys):
    raw = message()
    sigs = b"".join(dkim.sign(raw, b"direct", b"sender.test", keys.direct_pem) for _ in range(3))
    results = dkimcheck.verify(lookups(dns, max_queries=2), sigs + raw)
    assert [r.result for r in results] == ["pass", "pass", "permerror"]
    assert results[2].reason == "key lookup: more than 2 DNS queries in one check"


# --------------------------------------------------------------------------------------------- SPF

def test_spf_redirect_loop_and_malformed_names(dns):
    r = spf.check(lookups(dns), "127.0.0.1", "a@redirloop.sender.test", "h.sender.test", "mx", spf.MAILFROM)
    assert r.result == "permerror"
    for sender in ("a@" + "x" * 70 + ".sender.test", "a@..sender.test", "a@sender.test.", "a@[127.0.0.1]", "a@"):
        r = spf.check(lookups(dns), "127.0.0.1", sender, "h.sender.test", "mx", spf.MAILFROM)
        assert r.result in ("none", "permerror", "pass"), (sender, r)


def test_spf_outside_a_check_never_uses_the_system_resolver():
    import spf as pyspf

    q = pyspf.query(i="127.0.0.1", s="a@sender.test", h="h.sender.test")
    assert q.check()[0] == "temperror"  # our driver refuses to answer without a check's Lookups


# --------------------------------------------------------------------------------------------- DMARC

@pytest.mark.parametrize("domain, result", [
    ("lower.sender.test", "fail"),  # "v=dmarc1" is not a record there: the walk finds sender.test's
    ("badp.sender.test", "fail"),  # p=bogus without rua: not a record; sender.test's applies (sp/p=reject)
    ("two.sender.test", "fail"),  # two records at one name count as none there
    ("long.sender.test", "fail"),  # a record over 4 KiB is not a record
])
def test_dmarc_bad_records_are_skipped_on_the_walk(dns, domain, result):
    r = dmarc.evaluate(lookups(dns), domain, "other.test", True, [])
    assert (r.result, r.record_domain, r.disposition) == (result, "sender.test", "reject")


def test_dmarc_record_with_bad_p_and_rua_is_p_none_and_garbage_tags_are_ignored(dns):
    r = dmarc.evaluate(lookups(dns), "badprua.sender.test", "other.test", True, [])
    assert (r.result, r.record_domain, r.policy) == ("fail", "badprua.sender.test", "none")
    r = dmarc.evaluate(lookups(dns), "garbage.sender.test", "other.test", True, [])
    assert (r.result, r.policy, r.disposition) == ("fail", "quarantine", "quarantine")


def test_dmarc_tree_walk_asks_at_most_eight_names(dns):
    deep = ".".join(f"l{i}" for i in range(20)) + ".sender.test"
    before = len(dns.queries)
    r = dmarc.evaluate(lookups(dns), deep, "other.test", True, [])
    asked = [n for n, t in dns.queries[before:] if n.startswith("_dmarc.")]
    assert r.record_domain == "sender.test"
    assert asked == ["_dmarc." + deep] + ["_dmarc." + ".".join(deep.split(".")[-k:]) for k in range(7, 1, -1)]
    assert dmarc.walk_names(deep)[-1] == "test" and len(dmarc.walk_names(deep)) == dmarc.MAX_WALK


def test_dmarc_parse_record_table():
    assert dmarc.parse_record("v=DMARC1; p=reject") == dmarc.Record("reject")
    assert dmarc.parse_record("v=DMARC1;p=none;sp=reject;np=quarantine;adkim=s;aspf=s;pct=50;t=y;psd=n") == \
        dmarc.Record("none", "reject", "quarantine", "s", "s", 50, True, "n")
    for bad in ("", "v=DMARC1", "p=reject; v=DMARC1", "v=DMARC2; p=reject", "v=dmarc1; p=reject", ";;;",
                "v=DMARC1; p=" + "x" * 5000, "\x00\xff", "v = DMARC1 ; p = bogus"):
        assert dmarc.parse_record(bad) is None, bad
    assert dmarc.parse_record(b"v=DMARC1; p=reject; x=\xff\xfe; sp=none") == dmarc.Record("reject", "none")
    assert dmarc.parse_record(b"v=DMARC1; p=reject\xff") is None  # not a valid p, no rua


# --------------------------------------------------------------------------------------------- ARC

@pytest.mark.parametrize("header", [
    b"ARC-Seal: i=99999999999; a=rsa-sha256; cv=none; d=fwd.test; s=arc; b=AAAA\r\n",
    b"ARC-Seal:i=1;a=rsa-sha256;cv=none;d=fwd.test;s=arc;b=AAAA\r\n"
    b"ARC-Message-Signature:i=1;a=rsa-sha256;d=fwd.test;s=arc;h=from;bh=AAAA;b=AAAA\r\n"
    b"ARC-Authentication-Results:i=1;fwd.test;none\r\n",
    b"ARC-Seal: i=1; cv=none; d=fwd.test; s=arc; b=AAAA\r\n",  # incomplete set
    b"ARC-Seal: i=2; a=rsa-sha256; cv=pass; d=fwd.test; s=arc; b=AAAA\r\n"
    b"ARC-Seal: i=2; a=rsa-sha256; cv=pass; d=fwd.test; s=arc; b=AAAA\r\n",
    b"ARC-Seal: i=1; a=rsa-sha256; cv=bogus; d=fwd.test; s=arc; b=!!\r\n"
    b"ARC-Message-Signature: i=1; a=rsa-sha256; d=fwd.test; s=arc; h=arc-seal; bh=AAAA; b=AAAA\r\n"
    b"ARC-Authentication-Results: i=1; ((((\r\n",
])
def test_arc_hostile_chains_fail(dns, header):
    raw = header + message()
    r = arc.verify(lookups(dns), raw, raw.split(b"\r\n\r\n")[0])
    assert r.result == "fail", r
    assert all(32 <= ord(c) < 127 for c in r.reason)


def test_arc_trusted_pass_needs_the_sealer_to_vouch_for_this_from_domain():
    aar = "i=1; fwd.test; dkim=pass header.d=sender.test; dmarc=pass header.from=sender.test"
    chain = arc.ArcResult("pass", (arc.ArcSet(1, "fwd.test", aar),))
    assert arc.trusted_pass(chain, frozenset({"fwd.test"}), "sender.test") == "fwd.test"
    assert arc.trusted_pass(chain, frozenset({"fwd.test"}), "bank.test") == ""
    assert arc.trusted_pass(chain, frozenset({"other.test"}), "sender.test") == ""
    assert arc.trusted_pass(arc.ArcResult("fail", chain.sets), frozenset({"fwd.test"}), "sender.test") == ""
    said_fail = arc.ArcResult("pass", (arc.ArcSet(1, "fwd.test", aar.replace("dmarc=pass", "dmarc=fail")),))
    assert arc.trusted_pass(said_fail, frozenset({"fwd.test"}), "sender.test") == ""


# --------------------------------------------------------------------------------------------- iprev, A-R

def test_iprev_without_records_and_bad_addresses(dns):
    assert iprev.iprev(lookups(dns), "192.0.2.99").result == "permerror"  # outside every zone: REFUSED/NX
    assert iprev.iprev(lookups(dns), "not-an-ip").result == "permerror"
    facts = iprev.helo_facts(lookups(dns), "x" * 300, "127.0.0.1", "", frozenset())
    assert (facts.fqdn, facts.matches_client) == (False, False)
    assert iprev.helo_facts(lookups(dns), "[IPv6:::1]", "::1", "", frozenset()).matches_client is True
    assert iprev.helo_facts(lookups(dns), "mail.example.test", "127.0.0.1", "",
                            frozenset({"mail.example.test"})).ours is True


@pytest.mark.parametrize("value", [
    "", ";", ";;;", "(", "((((", '"', "a; b=", "a; =b", "a; b=c d=", "a; b=c (unterminated",
    'a; b="unterminated', "a (x\\", "\x00\xff; spf=pass", "a; " + "b=c; " * 5000,
])
def test_authentication_results_parser_never_raises(value):
    authserv, results = authresults.parse(value)
    assert isinstance(authserv, str) and isinstance(results, list)
    assert authresults.authserv_id(value.encode("utf-8", "replace")) is not None


def test_written_comments_and_values_cannot_break_out():
    c = authresults.Clause("spf", "fail", "evil) dkim=pass (x\\", properties=(("smtp.mailfrom", 'a"b;c@d'),))
    assert str(c) == 'spf=fail (evil? dkim=pass ?x?) smtp.mailfrom="a\\"b;c@d"'
    authserv, (r,) = authresults.parse(authresults.header_value("mx.example", [c]))
    assert (authserv, r.method, r.result, r.properties) == ("mx.example", "spf", "fail",
                                                            {"smtp.mailfrom": 'a"b;c@d'})


# --------------------------------------------------------------------------------------------- the reactor

def test_hanging_dns_is_bounded_and_others_are_served(tmp_path, keys):
    """The key lookup never answers: the message waits at most the check's limit (dkim=temperror, delivered);
    meanwhile another client is served at once."""
    raw = message()
    sig = dkim.sign(raw, b"hang", b"sender.test", keys.direct_pem)
    with senderauth_server(tmp_path, keys, hang={"hang._domainkey.sender.test"}, senderauth={"timeout": 2.0}) as env:
        done = threading.Event()
        errors = []

        def slow():
            try:
                env.send(sig + raw, "bounce@sender.test")
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)
            done.set()

        t = threading.Thread(target=slow)
        t.start()
        with smtplib.SMTP("127.0.0.1", env.srv.port("smtp"), timeout=30) as other:
            for _ in range(5):
                assert other.noop()[0] == 250
        assert done.wait(60), "the message waited longer than its checks may"
        t.join()
        assert errors == []
        (field,) = auth_results(env.only())
        assert "dkim=temperror (key lookup: DNS timeout) header.d=sender.test" in field
        assert "dmarc=pass" in field  # the aligned SPF pass still counts


def test_dkim_rsa_sha1_is_not_accepted(dns, keys):
    """RFC 8301 3.1: rsa-sha1 signatures are not valid, even when they verify."""
    (r,) = dkimcheck.verify(lookups(dns), signed(keys, signature_algorithm=b"rsa-sha1"))
    assert (r.result, r.reason) == ("permerror", "rsa-sha1 is not accepted (RFC 8301)")
