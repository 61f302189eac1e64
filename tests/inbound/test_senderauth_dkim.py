"""DKIM verification (RFC 6376, RSA and Ed25519) of every signature, through the real MX listener: signatures made
by our own outbound signer (``mailserver/delivery/dkim.py``) and by dkimpy directly, good, bad and missing, and the
exact Authentication-Results field each yields."""

from __future__ import annotations

import re

import dkim
import pytest

from tests.inbound.senderauth_env import HOST, IPREV_PASS, Keys, auth_results, message, senderauth_server

SPF_OTHER = "spf=pass smtp.mailfrom=bounce@other.test"  # SPF passes for a domain that is not aligned with From
SPF_ALIGNED = "spf=pass smtp.mailfrom=bounce@sender.test"


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return Keys(tmp_path_factory.mktemp("keys"))


def b_prefix(signature: bytes) -> str:
    """header.b of a DKIM-Signature field: the first 8 characters of b= (RFC 6008), quoted when not a token."""
    value = re.search(rb"\bb=([^;]*)", signature.replace(b"\r\n", b"")).group(1)
    b8 = re.sub(rb"\s", b"", value)[:8].decode()
    return b8 if re.fullmatch(r"[A-Za-z0-9+]+", b8) else f'"{b8}"'


def expected(spf: str, dkim_clauses: list[str], dmarc: str) -> str:
    clauses = [IPREV_PASS, "spf=pass smtp.helo=mx.sender.test", spf, *dkim_clauses, dmarc, "arc=none"]
    return HOST + ";\r\n\t" + ";\r\n\t".join(clauses)


def clause(result: str, selector: str, algorithm: str, sig: bytes | None, comment: str = "") -> str:
    c = f" ({comment})" if comment else ""
    b = f" header.b={b_prefix(sig)}" if sig else ""
    return f"dkim={result}{c} header.d=sender.test header.i=@sender.test header.s={selector} header.a={algorithm}{b}"


DMARC_PASS = "dmarc=pass (p=reject dis=none) header.from=sender.test"


def test_our_outbound_signatures_verify_rsa_and_ed25519(tmp_path, keys):
    """Our signer's two signatures (RSA and Ed25519) both pass; DMARC passes on DKIM alone (SPF not aligned)."""
    with senderauth_server(tmp_path, keys) as env:
        raw = message()
        sigs = keys.signer.signature_headers(raw)
        rsa_sig, ed_sig = re.split(rb"\r\n(?=DKIM-Signature:)", sigs)
        env.send(sigs + raw, "bounce@other.test")
        assert auth_results(env.only()) == [expected(SPF_OTHER, [
            clause("pass", "ours", "rsa-sha256", rsa_sig), clause("pass", "ours-ed25519", "ed25519-sha256", ed_sig)],
            DMARC_PASS)]


def test_dkimpy_signatures_verify_rsa_and_ed25519(tmp_path, keys):
    with senderauth_server(tmp_path, keys) as env:
        raw = message()
        rsa_sig = dkim.sign(raw, b"direct", b"sender.test", keys.direct_pem)
        ed_sig = dkim.sign(raw, b"ed", b"sender.test", keys.ed_seed, signature_algorithm=b"ed25519-sha256")
        env.send(ed_sig + rsa_sig + raw, "bounce@other.test")
        assert auth_results(env.only()) == [expected(SPF_OTHER, [
            clause("pass", "ed", "ed25519-sha256", ed_sig), clause("pass", "direct", "rsa-sha256", rsa_sig)],
            DMARC_PASS)]


def test_bad_and_missing_signatures(tmp_path, keys):
    """A changed body fails, a signature whose key is not published is a permerror, no signature is dkim=none;
    DMARC then needs the aligned SPF pass."""
    with senderauth_server(tmp_path, keys) as env:
        raw = message(subject="bad")
        sig = dkim.sign(raw, b"direct", b"sender.test", keys.direct_pem)
        env.send(sig + raw.replace(b"Hello there.", b"Hello forged"), "bounce@sender.test")
        raw = message(subject="gone")
        gone = dkim.sign(raw, b"gone", b"sender.test", keys.direct_pem)
        env.send(gone + raw, "bounce@sender.test")
        env.send(message(subject="unsigned"), "bounce@sender.test")
        bad, nokey, unsigned = (auth_results(m)[0] for m, _ in env.messages())
        assert bad == expected(SPF_ALIGNED, [clause("fail", "direct", "rsa-sha256", sig, "body hash mismatch")],
                               DMARC_PASS)
        assert nokey == expected(SPF_ALIGNED, [clause("permerror", "gone", "rsa-sha256", gone, "no key record")],
                                 DMARC_PASS)
        assert unsigned == expected(SPF_ALIGNED, ["dkim=none"], DMARC_PASS)


def test_signature_over_a_changed_header_fails(tmp_path, keys):
    with senderauth_server(tmp_path, keys) as env:
        raw = message(subject="original")
        sig = dkim.sign(raw, b"direct", b"sender.test", keys.direct_pem)
        env.send(sig + raw.replace(b"Subject: original", b"Subject: changed!"), "bounce@sender.test")
        assert auth_results(env.only()) == [expected(SPF_ALIGNED, [
            clause("fail", "direct", "rsa-sha256", sig, "signature did not verify")], DMARC_PASS)]
