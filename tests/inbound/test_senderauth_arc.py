"""ARC (RFC 8617): a forward that breaks the author's DKIM signature and is sealed by the forwarder (dkimpy's
arc_sign) is delivered when the sealer is trusted, and refused under p=reject when it is not."""

from __future__ import annotations

import smtplib

import dkim
import pytest

from tests.inbound.senderauth_env import HOST, IPREV_PASS, Keys, auth_results, message, senderauth_server


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return Keys(tmp_path_factory.mktemp("keys"))


def forwarded(keys: Keys) -> tuple[bytes, bytes]:
    """(the sealed forward, the author's signature): the list fwd.test verified the author's mail, recorded it in
    its Authentication-Results, added a footer (breaking the signature) and sealed it."""
    raw = message(subject="to the list")
    sig = dkim.sign(raw, b"direct", b"sender.test", keys.direct_pem)
    received = (b"Authentication-Results: fwd.test; dkim=pass header.d=sender.test header.s=direct;\r\n"
                b" spf=pass smtp.mailfrom=alice@sender.test; dmarc=pass header.from=sender.test\r\n")
    changed = received + sig + raw + b"--\r\nThe list footer\r\n"
    seal = dkim.arc_sign(changed, b"arc", b"fwd.test", keys.arc_pem, b"fwd.test")
    return b"".join(seal) + changed, sig


def expected(sig: bytes, dmarc: str, arc: str) -> str:
    from tests.inbound.test_senderauth_dkim import b_prefix

    return HOST + ";\r\n\t" + ";\r\n\t".join([
        IPREV_PASS, "spf=pass smtp.helo=mx.sender.test", "spf=pass smtp.mailfrom=list@fwd.test",
        "dkim=fail (body hash mismatch) header.d=sender.test header.i=@sender.test header.s=direct "
        f"header.a=rsa-sha256 header.b={b_prefix(sig)}", dmarc, arc])


def test_forward_sealed_by_a_trusted_sealer_passes(tmp_path, keys):
    with senderauth_server(tmp_path, keys, senderauth={"arc_trusted_sealers": ["fwd.test"]}) as env:
        sealed, sig = forwarded(keys)
        assert env.send(sealed, "list@fwd.test") == {}
        stored, kw = env.messages()[0]
        assert kw == ()
        assert auth_results(stored) == [
            expected(sig, "dmarc=fail (p=reject dis=none; overridden: ARC sealed by trusted fwd.test) "
                          "header.from=sender.test",
                     "arc=pass (i=1 d=fwd.test) smtp.remote-ip=127.0.0.1"),
            # the forwarder's own field is not ours: it stays, below ours
            "fwd.test; dkim=pass header.d=sender.test header.s=direct;\r\n spf=pass smtp.mailfrom=alice@sender.test;"
            " dmarc=pass header.from=sender.test"]


def test_forward_sealed_by_an_untrusted_sealer_is_refused(tmp_path, keys):
    with senderauth_server(tmp_path, keys, senderauth={"arc_trusted_sealers": ["other.test"]}) as env:
        sealed, _sig = forwarded(keys)
        with pytest.raises(smtplib.SMTPDataError) as e:
            env.send(sealed, "list@fwd.test")
        assert (e.value.smtp_code, e.value.smtp_error) == (550, b"5.7.1 Rejected by the DMARC policy of sender.test")


def test_broken_seal_fails_the_chain(tmp_path, keys):
    """A body changed after sealing: arc=fail, and no override even from a trusted sealer."""
    with senderauth_server(tmp_path, keys, senderauth={"arc_trusted_sealers": ["fwd.test"],
                                                       "dmarc_action": "quarantine"}) as env:
        sealed, sig = forwarded(keys)
        env.send(sealed.replace(b"The list footer", b"Changed after sealing"), "list@fwd.test")
        ((_account, reason, stored),) = env.held()
        assert reason == "dmarc"
        assert auth_results(stored)[0] == expected(
            sig, "dmarc=fail (p=reject dis=reject) header.from=sender.test",
            "arc=fail (Most recent ARC-Message-Signature did not validate) smtp.remote-ip=127.0.0.1")
