"""TLS for every listener: the configured certificate, or a self-signed one generated once in data_dir; SNI.

``server_context_factory(config)`` returns a Twisted ``CertificateOptions`` usable both for implicit-TLS listeners
(``SSL4ServerEndpoint``/``TLSMemoryBIOFactory``) and for ``transport.startTLS()`` after STARTTLS/STLS.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import ssl
from twisted.internet.interfaces import IProtocolNegotiationFactory

from mailserver.config import Config

SELF_SIGNED_CERT = "tls/selfsigned-cert.pem"
SELF_SIGNED_KEY = "tls/selfsigned-key.pem"


def generate_self_signed(hostname: str, cert_path: Path, key_path: Path, days: int = 3650) -> None:
    """Write a self-signed EC P-256 certificate with ``hostname`` (and localhost/loopback) in its SAN."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.timezone.utc)
    sans: list[x509.GeneralName] = [x509.DNSName(hostname), x509.DNSName("localhost"),
                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                    x509.IPAddress(ipaddress.ip_address("::1"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_key = key_path.with_suffix(".tmp")
    fd = os.open(tmp_key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    os.replace(tmp_key, key_path)
    tmp_cert = cert_path.with_suffix(".tmp")
    tmp_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    os.replace(tmp_cert, cert_path)


def certificate_paths(config: Config) -> tuple[Path, Path, bool]:
    """(cert, key, generated): the configured pair, or the self-signed pair in data_dir (created if missing)."""
    if config.tls.cert:
        return Path(config.tls.cert), Path(config.tls.key), False
    cert = Path(config.data_dir) / SELF_SIGNED_CERT
    key = Path(config.data_dir) / SELF_SIGNED_KEY
    generated = False
    if not (cert.exists() and key.exists()):
        generate_self_signed(config.hostname, cert, key)
        generated = True
    return cert, key, generated


def _alpn_select(conn, offered):
    """ALPN (RFC 7301): pick our first protocol the client offered; with no overlap, continue without ALPN.

    Twisted's own callback answers an empty protocol name when nothing overlaps, which aborts the handshake (alert
    80): a mail client that offers ALPN our listener does not list (or any ALPN at all to IMAPS) would fail.
    """
    from OpenSSL import SSL

    try:
        tls_proto = conn.get_app_data()
        inner = tls_proto.factory.wrappedFactory
        negotiation = IProtocolNegotiationFactory(inner, None)
        ours = list(negotiation.acceptableProtocols()) if negotiation is not None else []
    except Exception:
        ours = []
    for p in ours:
        if p in offered:
            return p
    return SSL.NO_OVERLAPPING_PROTOCOLS


class ServerTLSOptions(ssl.CertificateOptions):
    """CertificateOptions whose contexts negotiate ALPN without failing on no overlap."""

    def getContext(self):
        ctx = super().getContext()
        if not getattr(self, "_alpn_installed", False):
            ctx.set_alpn_select_callback(_alpn_select)
            self._alpn_installed = True
        return ctx


def _options(cert_path: Path, key_path: Path, min_version: str, sni=None) -> ssl.CertificateOptions:
    try:
        cert_pem = cert_path.read_bytes()
        key_pem = key_path.read_bytes()
    except OSError as e:
        raise ValueError(f"cannot read TLS certificate/key {e.filename}: {e.strerror}") from None
    try:
        certs = x509.load_pem_x509_certificates(cert_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
    except Exception as e:
        raise ValueError(f"bad TLS certificate or key ({cert_path}, {key_path}): {e}") from None
    if certs[0].public_key().public_numbers() != key.public_key().public_numbers():
        raise ValueError(f"TLS key {key_path} does not match certificate {cert_path}")
    chain = certs[1:]  # extra certificates in the file form the chain
    minimum = ssl.TLSVersion.TLSv1_3 if min_version == "1.3" else ssl.TLSVersion.TLSv1_2
    return ServerTLSOptions(
        privateKey=key,
        certificate=certs[0],
        extraCertChain=chain or None,
        raiseMinimumTo=minimum,
        contextForServerName=sni,
    )


def server_context_factory(config: Config) -> ssl.CertificateOptions:
    """Build the server-side TLS context factory (validates files; raises ValueError with a clear message)."""
    cert, key, _ = certificate_paths(config)
    per_name: dict[bytes, ssl.CertificateOptions] = {}
    for domain, pair in config.tls.sni.items():
        opts = _options(Path(pair.cert), Path(pair.key), config.tls.min_version)
        per_name[domain.lower().encode("idna")] = opts

    def for_name(server_name: bytes | None):
        if not server_name:
            return None
        name = server_name.lower()
        opts = per_name.get(name)
        if opts is None and b"." in name:  # a certificate for the domain also serves its subdomains' hosts
            opts = per_name.get(name.split(b".", 1)[1])
        return opts.getContext() if opts is not None else None

    return _options(cert, key, config.tls.min_version, sni=for_name if per_name else None)
