"""TLS: the self-signed certificate, its reuse, SNI, and ALPN that never breaks a handshake."""

from __future__ import annotations

import socket
import ssl

from cryptography import x509

from tests.harness import running_server


def _handshake(port: int, server_name: str = "mail.example.test", alpn=None):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(alpn)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=server_name) as s:
            der = s.getpeercert(binary_form=True)
            return x509.load_der_x509_certificate(der), s.selected_alpn_protocol(), s.version()


def test_self_signed_certificate_generated_once_and_reused(tmp_path):
    with running_server(tmp_path, listeners=("submissions",)) as srv:
        cert, _, version = _handshake(srv.port("submissions"))
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert "mail.example.test" in san.get_values_for_type(x509.DNSName)
        assert version in ("TLSv1.2", "TLSv1.3")
        first = cert.fingerprint(cert.signature_hash_algorithm)
    with running_server(tmp_path, listeners=("submissions",)) as srv:
        cert, _, _ = _handshake(srv.port("submissions"))
        assert cert.fingerprint(cert.signature_hash_algorithm) == first


def test_alpn_offer_without_overlap_still_connects(tmp_path):
    """A client offering ALPN protocols we do not speak still gets a TLS session (no alert 80)."""
    with running_server(tmp_path, listeners=("submissions",)) as srv:
        _, selected, _ = _handshake(srv.port("submissions"), alpn=["h2", "imap"])
        assert selected is None


def test_sni_selects_per_domain_certificate(tmp_path):
    from mailserver.tls import generate_self_signed

    other_cert, other_key = tmp_path / "other.pem", tmp_path / "other.key"
    generate_self_signed("mail.other.test", other_cert, other_key)
    sni = {"other.test": {"cert": str(other_cert), "key": str(other_key)}}
    with running_server(tmp_path, listeners=("submissions",), tls={"sni": sni}) as srv:
        port = srv.port("submissions")
        cert, _, _ = _handshake(port, "mail.other.test")
        assert cert.subject.rfc4514_string() == "CN=mail.other.test"
        cert, _, _ = _handshake(port, "mail.example.test")
        assert cert.subject.rfc4514_string() == "CN=mail.example.test"
