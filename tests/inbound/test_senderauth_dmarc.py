"""DMARC policy through the real MX listener: p=reject refused at the end of DATA with 550 5.7.1, p=quarantine
held in the quarantine, each with and without alignment; the per-domain override; mixed recipients."""

from __future__ import annotations

import smtplib

import dkim
import pytest

from storage.queue import QueueStore
from tests.inbound.senderauth_env import (
    HOST,
    IPREV_PASS,
    RCPT,
    Keys,
    auth_results,
    message,
    senderauth_server,
)

HELO_PASS = "spf=pass smtp.helo=mx.sender.test"


def field(spf: str, dmarc: str, dkim_clause: str = "dkim=none") -> str:
    return HOST + ";\r\n\t" + ";\r\n\t".join([IPREV_PASS, HELO_PASS, spf, dkim_clause, dmarc, "arc=none"])


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return Keys(tmp_path_factory.mktemp("keys"))


def test_reject_without_alignment_is_refused_at_end_of_data(tmp_path, keys):
    """SPF passes for other.test (not aligned with From: sender.test, p=reject), no DKIM: 550 5.7.1 to the
    client, nothing stored, no report sent."""
    with senderauth_server(tmp_path, keys) as env:
        with pytest.raises(smtplib.SMTPDataError) as e:
            env.send(message(), "bounce@other.test")
        assert e.value.smtp_code == 550
        assert e.value.smtp_error == b"5.7.1 Rejected by the DMARC policy of sender.test"
        assert env.messages() == []
        assert QueueStore(env.srv.store).list() == []  # no failure report to the (forged) sender


def test_reject_policy_with_alignment_is_delivered(tmp_path, keys):
    """The same From domain passes with an aligned SPF pass (relaxed: a subdomain's MAIL FROM) or DKIM pass."""
    with senderauth_server(tmp_path, keys, extra_zones={"sender.test": {
            "bounces": [("TXT", "v=spf1 ip4:127.0.0.1 -all")]}}) as env:
        env.send(message(subject="spf"), "x@bounces.sender.test")
        raw = message(subject="dkim")
        sig = dkim.sign(raw, b"direct", b"sender.test", keys.direct_pem)
        env.send(sig + raw, "bounce@other.test")
        (spf_msg, kw1), (dkim_msg, kw2) = env.messages()
        assert kw1 == kw2 == ()
        assert auth_results(spf_msg) == [field("spf=pass smtp.mailfrom=x@bounces.sender.test",
                                               "dmarc=pass (p=reject dis=none) header.from=sender.test")]
        assert auth_results(dkim_msg)[0].endswith(
            "dmarc=pass (p=reject dis=none) header.from=sender.test;\r\n\tarc=none")


def test_quarantine_without_alignment_is_held_in_the_quarantine(tmp_path, keys):
    with senderauth_server(tmp_path, keys) as env:
        env.send(message(sender="alice@quar.test", subject="unaligned"), "bounce@other.test")
        env.send(message(sender="alice@quar.test", subject="aligned"), "bounce@quar.test")
        ((account, reason, held),) = env.held()
        assert (account, reason) == (RCPT, "dmarc")
        assert b"Subject: unaligned" in held
        assert auth_results(held) == [field("spf=pass smtp.mailfrom=bounce@other.test",
                                            "dmarc=fail (p=quarantine dis=quarantine) header.from=quar.test")]
        inbox = env.only()
        assert b"Subject: aligned" in inbox
        assert auth_results(inbox) == [field("spf=pass smtp.mailfrom=bounce@quar.test",
                                             "dmarc=pass (p=quarantine dis=none) header.from=quar.test")]
        (item,) = env.srv.store.list_quarantined()[1]
        assert {(f["check"], f["result"]) for f in item.facts} >= {("dmarc", "fail"), ("spf", "pass")}


def test_spf_fail_with_reject_policy_is_refused(tmp_path, keys):
    """MAIL FROM in the From domain's own tree but SPF fails: aligned but not a pass, so DMARC fails."""
    with senderauth_server(tmp_path, keys) as env:
        with pytest.raises(smtplib.SMTPDataError) as e:
            env.send(message(), "bounce@fail.sender.test")
        assert (e.value.smtp_code, e.value.smtp_error[:5]) == (550, b"5.7.1")


def test_domain_override_and_global_action(tmp_path, keys):
    """dmarc_action_by_domain: example.test only quarantines what the sender's policy would refuse."""
    with senderauth_server(tmp_path, keys, senderauth={"dmarc_action_by_domain": {"example.test": "quarantine"}}) as env:
        env.send(message(), "bounce@other.test")
        ((_account, reason, held),) = env.held()
        assert reason == "dmarc"
        assert auth_results(held) == [field("spf=pass smtp.mailfrom=bounce@other.test",
                                            "dmarc=fail (p=reject dis=reject) header.from=sender.test")]
    with senderauth_server(tmp_path / "b", keys, senderauth={"dmarc_action": "none"}) as env:
        env.send(message(), "bounce@other.test")
        assert auth_results(env.only())[0].endswith("dmarc=fail (p=reject dis=reject) header.from=sender.test;"
                                                    "\r\n\tarc=none")


def test_recipients_that_disagree_are_all_quarantined_never_bounced(tmp_path, keys):
    """One recipient's domain refuses, the other's only quarantines: the message is accepted as one (250) and
    both copies are held; no failure report leaves for the (forged) sender."""
    other = "carol@other.example"
    with senderauth_server(tmp_path, keys, rcpts=(RCPT, other), domain=[{"name": "example.test"},
                                                                        {"name": "other.example"}],
                           senderauth={"dmarc_action_by_domain": {"other.example": "quarantine"}}) as env:
        assert env.send(message(), "bounce@other.test", rcpts=(RCPT, other)) == {}
        assert sorted((account, reason) for account, reason, _ in env.held()) == [(RCPT, "dmarc"), (other, "dmarc")]
        assert env.messages(RCPT) == [] and env.messages(other) == []
        assert QueueStore(env.srv.store).list() == []
