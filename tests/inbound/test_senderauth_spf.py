"""SPF (RFC 7208) for MAIL FROM and HELO through the real MX listener, against a real DNS server on loopback: each
result, and the exact Authentication-Results field each one yields."""

from __future__ import annotations

import pytest

from tests.inbound.senderauth_env import HELO, HOST, Keys, auth_results, message, senderauth_server

IPREV = "iprev=pass (mx.sender.test) policy.iprev=127.0.0.1"
TAIL = "dkim=none;\r\n\tdmarc=none (no DMARC record) header.from=other.test;\r\n\tarc=none"


def expected(spf_mailfrom: str, spf_helo: str = "spf=pass smtp.helo=mx.sender.test", iprev: str = IPREV) -> str:
    return f"{HOST};\r\n\t{iprev};\r\n\t{spf_helo};\r\n\t{spf_mailfrom};\r\n\t{TAIL}"


#: MAIL FROM domain -> the spf clause for it.  The From domain (other.test) has no DMARC record: nothing is refused.
CASES = {
    "sender.test": "spf=pass smtp.mailfrom=bounce@sender.test",
    "fail.sender.test": "spf=fail smtp.mailfrom=bounce@fail.sender.test",
    "soft.sender.test": "spf=softfail smtp.mailfrom=bounce@soft.sender.test",
    "neutral.sender.test": "spf=neutral smtp.mailfrom=bounce@neutral.sender.test",
    "nospf.sender.test": "spf=none smtp.mailfrom=bounce@nospf.sender.test",
    "nx.sender.test": "spf=none smtp.mailfrom=bounce@nx.sender.test",
    "temp.sender.test": "spf=temperror (SPF Temporary Error: DNS server failure) smtp.mailfrom=bounce@temp.sender.test",
    "perm.sender.test": "spf=permerror (SPF Permanent Error: Unknown mechanism found: bogus:x) "
                        "smtp.mailfrom=bounce@perm.sender.test",
    # RFC 7208 4.6.4: an include loop ends at the limit of 10 DNS mechanisms...
    "loop.sender.test": "spf=permerror (SPF Permanent Error: Too many DNS lookups) smtp.mailfrom=bounce@loop.sender.test",
    # ... as do 11 a: mechanisms, one more than the limit ...
    "many.sender.test": "spf=permerror (SPF Permanent Error: Too many DNS lookups) smtp.mailfrom=bounce@many.sender.test",
    # ... and a third lookup that finds nothing, one more than the 2 void lookups allowed.
    "void.sender.test": "spf=permerror (SPF Permanent Error: Void lookup limit of 2 exceeded) "
                        "smtp.mailfrom=bounce@void.sender.test",
    # An answer over 16 KiB (70 TXT records, truncated over UDP, asked again over TCP) is refused as hostile.
    "big.sender.test": "spf=permerror (SPF Permanent Error: TXT answer larger than 16384 bytes) "
                       "smtp.mailfrom=bounce@big.sender.test",
}


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return Keys(tmp_path_factory.mktemp("keys"))


def test_each_spf_result_for_mail_from(tmp_path, keys):
    """pass / fail / softfail / neutral / none / temperror / permerror, each as its own clause."""
    with senderauth_server(tmp_path, keys, servfail={"temp.sender.test"}) as env:
        for domain in CASES:
            env.send(message(sender="alice@other.test", subject=domain), f"bounce@{domain}")
        got = {}
        for stored, _kw in env.messages():
            subject = stored.split(b"Subject: ", 1)[1].split(b"\r\n", 1)[0].decode()
            fields = auth_results(stored)
            assert len(fields) == 1, subject
            got[subject] = fields[0]
        assert got == {domain: expected(clause) for domain, clause in CASES.items()}


def test_spf_for_helo(tmp_path, keys):
    """The HELO identity is checked too (RFC 7208 2.3); a HELO that is an address literal has no SPF (none)."""
    with senderauth_server(tmp_path, keys) as env:
        env.send(message(sender="alice@other.test", subject="h1"), "bounce@sender.test", helo="fail.sender.test")
        env.send(message(sender="alice@other.test", subject="h2"), "bounce@sender.test", helo="[127.0.0.1]")
        first, second = (auth_results(m)[0] for m, _ in env.messages())
        assert first == expected("spf=pass smtp.mailfrom=bounce@sender.test",
                                 spf_helo="spf=fail smtp.helo=fail.sender.test")
        assert second == expected("spf=pass smtp.mailfrom=bounce@sender.test",
                                  spf_helo='spf=none (no domain to check) smtp.helo="[127.0.0.1]"')


def test_null_reverse_path_uses_the_helo_identity(tmp_path, keys):
    """MAIL FROM:<> has no MAIL FROM clause: the HELO result stands for it (RFC 7208 2.4)."""
    with senderauth_server(tmp_path, keys) as env:
        env.send(message(sender="alice@other.test"), "")
        field = auth_results(env.only())[0]
        assert field == (f"{HOST};\r\n\t{IPREV};\r\n\tspf=pass smtp.helo={HELO};\r\n\t{TAIL}")


def test_spf_record_naming_another_address_fails_and_iprev_without_ptr(tmp_path, keys):
    """No PTR for the client: iprev=permerror (RFC 8601 2.7.3), a fact, not a refusal."""
    with senderauth_server(tmp_path, keys, extra_zones={"127.in-addr.arpa": {"1.0.0": []}}) as env:
        env.send(message(sender="alice@other.test"), "bounce@fail.sender.test")
        assert auth_results(env.only())[0] == expected(
            "spf=fail smtp.mailfrom=bounce@fail.sender.test",
            iprev="iprev=permerror (no PTR record) policy.iprev=127.0.0.1")
