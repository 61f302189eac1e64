"""What the checks leave for later stages (``message.memo["senderauth"]``: reverse DNS, HELO sanity, every
result), and that the field we write is valid RFC 8601 to an independent parser (the authres package)."""

from __future__ import annotations

import authres
import authres.arc
import authres.dkim_b
import authres.dmarc
import dkim
import pytest

from mailserver.inbound import senderauth
from tests import harness
from tests.inbound.senderauth_env import Keys, auth_results, message, senderauth_server


class Recorder:
    """A later check stage (a scorer would be one): records what it finds in the message's memo."""

    name = "test:recorder"
    exact_mailbox = False

    def __init__(self):
        self.facts = []

    def check(self, message, target):
        self.facts.append(message.memo.get(senderauth.FACTS_KEY))


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return Keys(tmp_path_factory.mktemp("keys"))


def test_facts_for_later_stages(tmp_path, keys):
    with senderauth_server(tmp_path, keys) as env:
        rec = Recorder()
        harness.call(env.srv.services.pipeline.register, rec)
        raw = message()
        env.send(dkim.sign(raw, b"direct", b"sender.test", keys.direct_pem) + raw, "bounce@sender.test")
        env.send(message(sender="alice@other.test"), "bounce@other.test", helo="mail.example.test")
        good, forged = rec.facts
        assert (good.iprev.result, good.iprev.names, good.iprev.confirmed) == ("pass", ("mx.sender.test",),
                                                                               "mx.sender.test")
        assert (good.helo.fqdn, good.helo.literal, good.helo.ours, good.helo.matches_client,
                good.helo.matches_ptr) == (True, False, False, True, True)
        assert (good.spf_helo.result, good.spf_mailfrom.result, good.spf.domain) == ("pass", "pass", "sender.test")
        assert [(d.result, d.domain, d.selector) for d in good.dkim] == [("pass", "sender.test", "direct")]
        assert [(m.result, m.from_domain, m.policy, m.spf_aligned, m.dkim_aligned) for m in good.dmarc] == [
            ("pass", "sender.test", "reject", True, True)]
        assert (good.disposition, good.arc.result) == ("none", "none")
        # A client calling itself by our host name: a fact for scoring, not a refusal (it was delivered).
        assert (forged.helo.ours, forged.helo.matches_client, forged.helo.matches_ptr) == (True, False, False)
        assert forged.spf_helo.result == "none"
        assert len(env.messages()) == 2


def test_our_field_parses_with_an_independent_parser(tmp_path, keys):
    with senderauth_server(tmp_path, keys, servfail={"temp.sender.test"}) as env:
        raw = message(extra='Comments: a "quoted" (commented) header\r\n')
        sig = dkim.sign(raw, b"direct", b"sender.test", keys.direct_pem)
        env.send(sig + raw, "odd.local+part@sender.test")
        env.send(message(sender="alice@other.test"), "bounce@temp.sender.test", helo="[127.0.0.1]")
        features = authres.FeatureContext(authres.dkim_b, authres.dmarc, authres.arc)
        for stored, _kw in env.messages():
            (value,) = auth_results(stored)
            header = features.parse("Authentication-Results: " + value.replace("\r\n\t", " "))
            assert header.authserv_id == "mail.example.test"
            methods = [r.method for r in header.results]
            assert methods == ["iprev", "spf", "spf", "dkim", "dmarc", "arc"]
            assert [str(r.result) for r in header.results][:3] in (["pass", "pass", "pass"],
                                                                   ["pass", "none", "temperror"])
