"""TLS for every listener: the configured certificate, or a self-signed one generated once for the cluster; SNI.

The self-signed pair lives in the database (``tls_certificates``, storage/keyring.py), so every node sharing it
serves the same certificate and a client that trusts it once trusts all of them.  The first process to start makes
it (a pair left in ``data_dir/tls`` by an earlier version is imported instead); every start writes the certificate
(public) to ``data_dir/tls/selfsigned-cert.pem`` for clients to trust; the key stays in the database.  A configured
``[tls] cert``/``key`` (and SNI pairs) are read from their files: the operator (or their ACME client) keeps those
files on every node.

``server_context_factory(config, store)`` returns a Twisted ``CertificateOptions`` usable both for implicit-TLS listeners
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


#: The name of the self-signed pair in ``tls_certificates``.
SELF_SIGNED_NAME = "selfsigned"


def make_self_signed(hostname: str, days: int = 3650) -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM): a self-signed EC P-256 certificate with ``hostname`` (and localhost/loopback)
    in its SAN."""
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
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def generate_self_signed(hostname: str, cert_path: Path, key_path: Path, days: int = 3650) -> None:
    """Write a self-signed pair (:func:`make_self_signed`) to two files (the key readable by its owner only)."""
    cert_pem, key_pem = make_self_signed(hostname, days)
    _write_private(key_path, key_pem)
    _write_public(cert_path, cert_pem)


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _write_public(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.read_bytes() == data:
        return
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def self_signed_pair(config: Config, store) -> tuple[bytes, bytes]:
    """The cluster's self-signed (certificate PEM, key PEM) from the database; made (or imported from the files
    of an earlier version in data_dir) by the first process that asks.  Also refreshes the public copy in
    ``data_dir/tls/selfsigned-cert.pem`` (blocking)."""
    from storage import keyring

    pair = keyring.tls_pair(store, SELF_SIGNED_NAME)
    if pair is None:
        cert_file = Path(config.data_dir) / SELF_SIGNED_CERT
        key_file = Path(config.data_dir) / SELF_SIGNED_KEY
        try:
            candidate = cert_file.read_bytes(), key_file.read_bytes()
            _check_pair(*candidate, f"{cert_file}, {key_file}")
        except (OSError, ValueError):
            candidate = make_self_signed(config.hostname)
        pair = keyring.put_tls_pair_if_absent(store, SELF_SIGNED_NAME, *candidate)
    _write_public(Path(config.data_dir) / SELF_SIGNED_CERT, pair[0])
    return pair


def certificate_pem(config: Config, store=None) -> tuple[bytes, bytes, str]:
    """(certificate PEM, key PEM, where from): the configured files, or the cluster's self-signed pair (``store``
    needed then)."""
    if config.tls.cert:
        return (*_read_pair(Path(config.tls.cert), Path(config.tls.key)), f"{config.tls.cert}, {config.tls.key}")
    if store is None:
        raise ValueError("no [tls] cert configured and no store to keep the self-signed certificate in")
    return (*self_signed_pair(config, store), "the self-signed certificate in the database")


def _read_pair(cert_path: Path, key_path: Path) -> tuple[bytes, bytes]:
    try:
        return cert_path.read_bytes(), key_path.read_bytes()
    except OSError as e:
        raise ValueError(f"cannot read TLS certificate/key {e.filename}: {e.strerror}") from None


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


def _check_pair(cert_pem: bytes, key_pem: bytes, where: str):
    """(certificates, key) parsed; ValueError naming ``where`` when they do not parse or do not match."""
    try:
        certs = x509.load_pem_x509_certificates(cert_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
    except Exception as e:
        raise ValueError(f"bad TLS certificate or key ({where}): {e}") from None
    if certs[0].public_key().public_numbers() != key.public_key().public_numbers():
        raise ValueError(f"TLS key does not match certificate ({where})")
    return certs, key


def _options(cert_pem: bytes, key_pem: bytes, where: str, min_version: str, sni=None) -> ssl.CertificateOptions:
    certs, key = _check_pair(cert_pem, key_pem, where)
    chain = certs[1:]  # extra certificates in the file form the chain
    minimum = ssl.TLSVersion.TLSv1_3 if min_version == "1.3" else ssl.TLSVersion.TLSv1_2
    return ServerTLSOptions(
        privateKey=key,
        certificate=certs[0],
        extraCertChain=chain or None,
        raiseMinimumTo=minimum,
        contextForServerName=sni,
    )


def check_configured(config: Config) -> None:
    """Validate the configured certificate files (``[tls] cert`` and every SNI pair); ValueError if one is bad."""
    pairs = [(config.tls.cert, config.tls.key)] if config.tls.cert else []
    pairs += [(pair.cert, pair.key) for pair in config.tls.sni.values()]
    for cert, key in pairs:
        _check_pair(*_read_pair(Path(cert), Path(key)), f"{cert}, {key}")


def server_context_factory(config: Config, store=None) -> ssl.CertificateOptions:
    """Build the server-side TLS context factory (validates the pairs; raises ValueError with a clear message).
    Without ``[tls] cert`` the cluster's self-signed pair is taken from ``store`` (blocking)."""
    cert_pem, key_pem, where = certificate_pem(config, store)
    per_name: dict[bytes, ssl.CertificateOptions] = {}
    for domain, pair in config.tls.sni.items():
        opts = _options(*_read_pair(Path(pair.cert), Path(pair.key)), f"{pair.cert}, {pair.key}",
                        config.tls.min_version)
        per_name[domain.lower().encode("idna")] = opts

    def for_name(server_name: bytes | None):
        if not server_name:
            return None
        name = server_name.lower()
        opts = per_name.get(name)
        if opts is None and b"." in name:  # a certificate for the domain also serves its subdomains' hosts
            opts = per_name.get(name.split(b".", 1)[1])
        return opts.getContext() if opts is not None else None

    return _options(cert_pem, key_pem, where, config.tls.min_version, sni=for_name if per_name else None)
