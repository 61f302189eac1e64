"""DKIM signing of outgoing mail (dkimpy), keys per domain in ``data_dir/dkim``.

Key files are named ``<domain>.<selector>.<algorithm>.key`` with algorithm ``rsa`` (PEM, 2048 bits) or ``ed25519``
(RFC 8463: the base64 32-byte private seed, the form dkimpy takes).  A domain with both gets two signatures (RFC 8463 5:
sign with both while verifiers learn Ed25519).  The two keys need two selectors (one TXT record each):
:func:`generate` uses ``SELECTOR`` for RSA and ``SELECTOR-ed25519`` for Ed25519.
"""

from __future__ import annotations

import base64
import email.utils
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

#: Headers we sign when present (RFC 6376 5.4.1); From is required.
SIGNED_HEADERS = (b"from", b"to", b"cc", b"subject", b"date", b"message-id", b"reply-to", b"in-reply-to",
                  b"references", b"mime-version", b"content-type", b"content-transfer-encoding", b"list-id",
                  b"list-unsubscribe", b"list-unsubscribe-post")
RSA_BITS = 2048
ALGORITHMS = ("rsa", "ed25519")
_SELECTOR_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


class DkimError(Exception):
    pass


@dataclass(frozen=True)
class DkimKey:
    domain: str
    selector: str
    algorithm: str  # rsa | ed25519
    path: Path

    def private_bytes(self) -> bytes:
        return self.path.read_bytes()

    def txt_record(self) -> str:
        """The DNS TXT value to publish at ``<selector>._domainkey.<domain>`` (RFC 6376 3.6.1, RFC 8463 4)."""
        data = self.path.read_bytes()
        if self.algorithm == "rsa":
            key = serialization.load_pem_private_key(data, password=None)
            der = key.public_key().public_bytes(serialization.Encoding.DER,
                                                serialization.PublicFormat.SubjectPublicKeyInfo)
            return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"
        seed = base64.b64decode(data.strip())
        pub = ed25519.Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return f"v=DKIM1; k=ed25519; p={base64.b64encode(pub).decode()}"

    @property
    def record_name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}"


def key_dir(data_dir: str | os.PathLike) -> Path:
    return Path(data_dir) / "dkim"


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def generate(data_dir: str | os.PathLike, domain: str, selector: str, *, overwrite: bool = False) -> list[DkimKey]:
    """Create an RSA 2048 key (selector ``selector``) and an Ed25519 key (``selector-ed25519``) for ``domain``."""
    domain = domain.strip().lower().rstrip(".")
    if not _SELECTOR_RE.fullmatch(selector):
        raise DkimError(f"bad selector {selector!r}: one DNS label of letters, digits and hyphens")
    d = key_dir(data_dir)
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    made = []
    for algorithm, sel in (("rsa", selector), ("ed25519", f"{selector}-ed25519")):
        path = d / f"{domain}.{sel}.{algorithm}.key"
        if path.exists() and not overwrite:
            raise DkimError(f"{path} exists (use --force to replace it)")
        if algorithm == "rsa":
            key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
            data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                     serialization.NoEncryption())
        else:
            key = ed25519.Ed25519PrivateKey.generate()
            seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                     serialization.NoEncryption())
            data = base64.b64encode(seed) + b"\n"
        _write_private(path, data)
        made.append(DkimKey(domain, sel, algorithm, path))
    return made


def keys_for(data_dir: str | os.PathLike, domain: str) -> list[DkimKey]:
    """Every key file of ``domain`` (RSA first)."""
    domain = domain.strip().lower().rstrip(".")
    d = key_dir(data_dir)
    if not d.is_dir():
        return []
    out = []
    for p in d.iterdir():
        parts = p.name.rsplit(".", 3)
        if len(parts) == 4 and parts[3] == "key" and parts[2] in ALGORITHMS and parts[0] == domain:
            out.append(DkimKey(domain, parts[1], parts[2], p))
    return sorted(out, key=lambda k: (ALGORITHMS.index(k.algorithm), k.selector))


def from_domain(message: bytes) -> str:
    """The domain of the RFC 5322 From address ("" when there is none or it does not parse)."""
    header = message[:message.find(b"\r\n\r\n") if b"\r\n\r\n" in message else len(message)]
    m = re.search(rb"(?im)^from:[ \t]*(.*(?:\r?\n[ \t].*)*)", header)
    if not m:
        return ""
    value = m.group(1).decode("utf-8", "replace").replace("\r\n", " ").replace("\n", " ")
    _, addr = email.utils.parseaddr(value)
    return addr.rpartition("@")[2].lower().rstrip(".") if "@" in addr else ""


class DkimSigner:
    """Signs messages whose From domain has keys in ``data_dir/dkim`` (blocking: run in the cpu pool)."""

    def __init__(self, data_dir: str | os.PathLike):
        self.data_dir = data_dir
        #: Keys per domain, read once (a new key needs a restart, like a new TLS certificate).
        self._keys: dict[str, list[tuple[DkimKey, bytes]]] = {}

    def _load(self, domain: str) -> list[tuple[DkimKey, bytes]]:
        if domain not in self._keys:
            self._keys[domain] = [(k, k.private_bytes()) for k in keys_for(self.data_dir, domain)]
        return self._keys[domain]

    def keys(self, domain: str) -> list[tuple[DkimKey, bytes]]:
        """The domain's keys with their private bytes (RSA first)."""
        return list(self._load(domain.strip().lower().rstrip(".")))

    def has_keys(self, domain: str) -> bool:
        return bool(self._load(domain))

    def signature_headers(self, message: bytes, domain: str | None = None) -> bytes:
        """``DKIM-Signature`` header fields (CRLF-terminated) to put in front of ``message``; b"" without a key."""
        import dkim

        domain = (domain or from_domain(message))
        if not domain:
            return b""
        out = b""
        for key, private in self._load(domain):
            present = {h.split(b":", 1)[0].strip().lower()
                       for h in re.findall(rb"(?m)^[!-9;-~]+:", split_header_bytes(message))}
            include = [h for h in SIGNED_HEADERS if h in present] or [b"from"]
            sig = dkim.sign(message, key.selector.encode(), domain.encode(), private,
                            include_headers=include, linesep=b"\r\n", canonicalize=(b"relaxed", b"relaxed"),
                            signature_algorithm=b"ed25519-sha256" if key.algorithm == "ed25519"
                            else b"rsa-sha256")
            out += sig
        return out


def split_header_bytes(message: bytes) -> bytes:
    i = message.find(b"\r\n\r\n")
    return message if i < 0 else message[:i + 2]
