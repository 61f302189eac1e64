"""Forwarding to another domain over real SMTP: an alias of ours with an external target and a Sieve redirect reach
a receiving server on loopback with an SRS envelope sender and an ARC set that dkimpy's arc_verify accepts; bounces
to the SRS address go back to the original sender; forged and stale SRS addresses are refused at RCPT."""

from __future__ import annotations

import re

import dkim
import pytest

from mailserver.delivery import srs as srs_mod
from tests import harness
from tests.forwarding.env import ALIAS, TARGET, forwarding_server
from tests.inbound.senderauth_env import Keys, message
from tests.inbound.test_senderauth_arc import forwarded


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return Keys(tmp_path_factory.mktemp("keys"))


def header(raw: bytes, name: str) -> list[str]:
    """The values of the ``name`` fields, unfolded."""
    head = raw.split(b"\r\n\r\n", 1)[0].decode().replace("\r\n ", " ").replace("\r\n\t", " ")
    return [line.split(":", 1)[1].strip() for line in head.split("\r\n") if line.lower().startswith(name.lower() + ":")]


def signed(keys: Keys, subject: str = "hello") -> bytes:
    raw = message(subject=subject)
    return dkim.sign(raw, b"direct", b"sender.test", keys.direct_pem) + raw


def test_alias_forward_gets_srs_sender_and_a_valid_arc_set(tmp_path, keys):
    with forwarding_server(tmp_path, keys) as env:
        assert env.send(signed(keys), "alice@sender.test") == {}
        (tx,) = env.received()
        assert tx.rcpts == [TARGET]
        local, _, domain = tx.mail_from.rpartition("@")
        assert local.startswith("SRS0=") and local.endswith("=sender.test=alice") and domain == "example.test"
        assert env.srs.reverse(local, harness.call(env.srv.services.reactor.seconds)) == "alice@sender.test"
        cv, results, why = dkim.arc_verify(tx.data, dnsfunc=env.dnsfunc())
        assert cv == dkim.CV_Pass, why
        (aar,) = header(tx.data, "ARC-Authentication-Results")
        assert aar.startswith("i=1; mail.example.test;") and "dkim=pass" in aar and "arc=none" in aar
        (seal,) = header(tx.data, "ARC-Seal")
        assert "i=1" in seal and "cv=none" in seal and "d=example.test" in seal and "s=mail" in seal
        # the set is at the top, above our Authentication-Results and Received
        assert tx.data.startswith(b"ARC-Seal:")
        # the author's own signature still verifies (nothing but fields at the top was added)
        assert dkim.verify(tx.data, dnsfunc=env.dnsfunc())


def test_a_sealed_forward_gets_the_next_instance_over_its_chain(tmp_path, keys):
    """A message sealed by fwd.test (i=1) and forwarded by us: i=2, cv=pass, and the whole chain verifies."""
    with forwarding_server(tmp_path, keys, senderauth={"arc_trusted_sealers": ["fwd.test"]}) as env:
        sealed, _sig = forwarded(keys)
        assert env.send(sealed, "list@fwd.test") == {}
        (tx,) = env.received()
        cv, results, why = dkim.arc_verify(tx.data, dnsfunc=env.dnsfunc())
        assert cv == dkim.CV_Pass, why
        assert [int(r["instance"]) for r in results] == [2, 1]
        seals = header(tx.data, "ARC-Seal")
        assert "i=2" in seals[0] and "cv=pass" in seals[0] and "d=example.test" in seals[0]
        assert tx.mail_from.startswith("SRS0=") and tx.mail_from.endswith("=fwd.test=list@example.test")


def test_sieve_redirect_to_another_domain_is_rewritten_and_sealed(tmp_path, keys):
    with forwarding_server(tmp_path, keys) as env:
        acct = env.srv.add_user("bob@example.test", "pw")
        env.srv.store.put_sieve_script(acct.id, "main", f'redirect "{TARGET}";')
        env.srv.store.activate_sieve_script(acct.id, "main")
        harness.call(env.srv.services.pipeline.filter.invalidate)
        assert env.send(signed(keys), "alice@sender.test", rcpts=["bob@example.test"]) == {}
        (tx,) = env.received()
        assert tx.rcpts == [TARGET] and tx.mail_from.startswith("SRS0=")
        assert tx.mail_from.endswith("=sender.test=alice@example.test")
        cv, _results, why = dkim.arc_verify(tx.data, dnsfunc=env.dnsfunc())
        assert cv == dkim.CV_Pass, why
        assert b"X-Sieve-Redirected-By: <bob@example.test>" in tx.data


def test_null_sender_and_own_domains_are_not_rewritten(tmp_path, keys):
    with forwarding_server(tmp_path, keys, senderauth={"enabled": False}) as env:
        raw = message(sender="postmaster@example.test", subject="own")
        env.send(raw, "postmaster@example.test")
        env.send(message(subject="bounce"), "")
        a, b = sorted(env.received(2), key=lambda t: t.mail_from)
        assert (a.mail_from, b.mail_from) == ("", "postmaster@example.test")
        # nothing verified them (sender authentication off): no Authentication-Results of ours, so no ARC set
        assert b"ARC-Seal" not in a.data and b"ARC-Seal" not in b.data


def test_without_a_key_the_forward_is_rewritten_but_not_sealed(tmp_path, keys):
    with forwarding_server(tmp_path, keys, arc_key=False) as env:
        env.send(signed(keys), "alice@sender.test")
        (tx,) = env.received()
        assert tx.mail_from.startswith("SRS0=") and b"ARC-Seal" not in tx.data


def test_bounce_to_the_srs_address_reaches_the_original_sender(tmp_path, keys):
    """The target refuses at RCPT: our failure report goes to the SRS address, which routes it back to the
    original sender (dave@remote.test, the same loopback receiver); a bounce sent to it over SMTP does too."""
    refuse = {TARGET}
    with forwarding_server(tmp_path, keys, senderauth={"enabled": False},
                           rcpt=lambda a: "550 5.1.1 no such user" if a in refuse else "250 2.1.5 OK") as env:
        env.send(message(sender="dave@remote.test", subject="to be bounced"), "dave@remote.test")
        first = env.received(1)
        assert first[0].mail_from == "" and first[0].rcpts == ["dave@remote.test"]
        assert b"to be bounced" in first[0].data and b"5.1.1" in first[0].data
        # the report was addressed to the forward's SRS sender (its To: field names it)
        m = re.search(rb"SRS0=[^>\s]+@example\.test", first[0].data)
        assert m, first[0].data[:600]
        srs_address = m.group(0).decode()
        assert env.srs.reverse(srs_address.rpartition("@")[0], harness.call(env.srv.services.reactor.seconds)) \
            == "dave@remote.test"
        # a bounce from elsewhere to that address: accepted and routed back
        dsn = b"From: MAILER-DAEMON@remote.test\r\nSubject: Undelivered\r\n\r\nsorry\r\n"
        assert env.send(dsn, "", rcpts=[srs_address.lower()]) == {}
        second = env.received(2)[1]
        assert second.mail_from == "" and second.rcpts == ["dave@remote.test"] and b"sorry" in second.data


def test_forged_and_expired_srs_addresses_are_refused_at_rcpt(tmp_path, keys):
    with forwarding_server(tmp_path, keys, senderauth={"enabled": False}, srs={"max_age_days": 10}) as env:
        now = harness.call(env.srv.services.reactor.seconds)
        good = env.srs.forward("dave@remote.test", now)
        assert env.rcpt(good)[0] == 250
        long_good = env.srs.forward("a" * 60 + "@remote.test", now)  # an SRS local part past 64 octets
        assert len(long_good.rpartition("@")[0]) > 64 and env.rcpt(long_good)[0] == 250
        local = good.rpartition("@")[0]
        tampered = local.replace("=dave", "=mallory") + "@example.test"
        stale = env.srs.forward("dave@remote.test", now - 11 * 86400)
        other_key = srs_mod.Srs("example.test", (b"not our secret",)).forward("dave@remote.test", now)
        bad_stamp = re.sub(r"^(SRS0=[^=]+=)..", r"\g<1>1!", local) + "@example.test"
        overlong = "SRS0=" + "a" * 230 + "@example.test"  # (longer paths are refused by the SMTP parser: 501)
        for address in (tampered, stale, other_key, bad_stamp, overlong, "SRS0=x@example.test",
                        "srs1=abcdefgh=fwd.test==x@example.test"):
            assert env.rcpt(address) == (550, b"5.1.1 Mailbox does not exist"), address
        assert env.rcpt("SRS0=" + "a" * 300 + "@example.test")[0] == 501
        # our own SRS domain, other local parts: routed as usual (unknown here)
        assert env.rcpt("nobody@example.test")[0] == 550
        assert env.rcpt(ALIAS)[0] == 250


@pytest.mark.parametrize("chain", [
    b"ARC-Seal: i=99999999999; a=rsa-sha256; cv=none; d=fwd.test; s=arc; b=AAAA\r\n",
    b"ARC-Seal: i=50; a=rsa-sha256; cv=pass; d=fwd.test; s=arc; b=AAAA\r\n"
    b"ARC-Message-Signature: i=50; a=rsa-sha256; d=fwd.test; s=arc; h=from; bh=AAAA; b=AAAA\r\n"
    b"ARC-Authentication-Results: i=50; fwd.test; arc=pass\r\n",
    b"ARC-Seal: i=1; cv=none; d=fwd.test; s=arc; b=!!\r\n",  # incomplete set, bad base64
])
def test_a_hostile_chain_is_forwarded_never_lost(tmp_path, keys, chain):
    """A broken or overlong incoming chain: our verdict is arc=fail; the forward is delivered (sealed over a failed
    chain, or unsealed where dkimpy refuses to continue it, as at i=50), never refused or lost."""
    with forwarding_server(tmp_path, keys, senderauth={"dmarc_action": "none"}) as env:
        assert env.send(chain + signed(keys), "alice@sender.test") == {}
        (tx,) = env.received()
        assert tx.mail_from.startswith("SRS0=") and chain in tx.data
        seals = header(tx.data, "ARC-Seal")
        if len(seals) > 1:  # we sealed: over a failed chain, cv=fail
            assert "cv=fail" in seals[0]


def test_an_srs0_sender_of_another_forwarder_becomes_srs1(tmp_path, keys):
    """Re-forwarding: the sender is already fwd.test's SRS0 address; we send SRS1=HHH=fwd.test==… and a bounce to
    it goes back to fwd.test's own SRS0 address unchanged."""
    with forwarding_server(tmp_path, keys, senderauth={"enabled": False}) as env:
        theirs = srs_mod.Srs("fwd.test", (b"their secret",)).forward("dave@remote.test", 1_800_000_000.0)
        env.send(message(sender="dave@remote.test", subject="again"), theirs)
        (tx,) = env.received()
        local = tx.mail_from.rpartition("@")[0]
        assert local.startswith("SRS1=") and local.endswith("=fwd.test=" + theirs.rpartition("@")[0][4:])
        now = harness.call(env.srv.services.reactor.seconds)
        assert env.srs.reverse(local, now) == theirs


def test_secret_rotation_accepts_the_old_secret(tmp_path, keys):
    """[srs] secrets: the first signs, the others (and the generated one) are still accepted for bounces."""
    old = "an old secret of ours"
    with forwarding_server(tmp_path, keys, senderauth={"enabled": False},
                           srs={"secrets": ["the new secret, first", old]}) as env:
        now = harness.call(env.srv.services.reactor.seconds)
        by_old = srs_mod.Srs("example.test", (old.encode(),)).forward("dave@remote.test", now)
        assert env.rcpt(by_old)[0] == 250
        env.send(message(sender="dave@remote.test", subject="signed by the new one"), "dave@remote.test")
        (tx,) = env.received()
        new_only = srs_mod.Srs("example.test", (b"the new secret, first",))
        assert new_only.reverse(tx.mail_from.rpartition("@")[0], now) == "dave@remote.test"
