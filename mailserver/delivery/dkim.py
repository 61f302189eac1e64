"""DKIM signing of outgoing mail (dkimpy), keys per domain in the database (``dkim_keys``, storage/keyring.py).

Keys live in the database so that every node sharing it signs with the same keys: a key made through one node
(``mailserver dkim generate``) signs what any other node relays out.  A key is RSA (PEM, 2048 bits) or Ed25519
(RFC 8463: the base64 32-byte private seed, the form dkimpy takes).  A domain with both gets two signatures (RFC 8463
5: sign with both while verifiers learn Ed25519).  The two keys need two selectors (one TXT record each):
:func:`generate` uses ``SELECTOR`` for RSA and ``SELECTOR-ed25519`` for Ed25519.

Earlier versions kept the keys in files ``data_dir/dkim/<domain>.<selector>.<algorithm>.key``;
:func:`import_key_files` copies those into the database once (every ``serve`` start and every store opened by the
command line runs it; a selector already in the database is never overwritten by a file).  The files are left in
place as a backup and are not read again.
"""

from __future__ import annotations

import base64
import email.utils
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from storage import keyring

#: Headers we sign when present (RFC 6376 5.4.1); From is required.
SIGNED_HEADERS = (b"from", b"to", b"cc", b"subject", b"date", b"message-id", b"reply-to", b"in-reply-to",
                  b"references", b"mime-version", b"content-type", b"content-transfer-encoding", b"list-id",
                  b"list-unsubscribe", b"list-unsubscribe-post")
RSA_BITS = 2048
ALGORITHMS = ("rsa", "ed25519")
_SELECTOR_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
#: How long a signer trusts what it read of a domain's keys: a key made through another node (or replaced with
#: ``--force``) is used within this many seconds, without a restart.
KEY_CACHE_SECONDS = 30.0
#: Domains whose keys (or their absence) a signer remembers at most.
MAX_CACHED_DOMAINS = 10_000


class DkimError(Exception):
    pass


@dataclass(frozen=True)
class DkimKey:
    domain: str
    selector: str
    algorithm: str  # rsa | ed25519
    private: bytes

    def private_bytes(self) -> bytes:
        return self.private

    def txt_record(self) -> str:
        """The DNS TXT value to publish at ``<selector>._domainkey.<domain>`` (RFC 6376 3.6.1, RFC 8463 4)."""
        data = self.private
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


def _norm(domain: str) -> str:
    return domain.strip().lower().rstrip(".")


def make_keys(domain: str, selector: str) -> list[DkimKey]:
    """A new RSA 2048 key (selector ``selector``) and Ed25519 key (``selector-ed25519``) for ``domain``, in memory."""
    domain = _norm(domain)
    if not _SELECTOR_RE.fullmatch(selector) or len(selector) > 63 - len("-ed25519"):
        raise DkimError(f"bad selector {selector!r}: one DNS label of letters, digits and hyphens "
                        f"(at most {63 - len('-ed25519')} characters)")
    made = []
    for algorithm, sel in (("rsa", selector), ("ed25519", f"{selector}-ed25519")):
        if algorithm == "rsa":
            key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
            data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                     serialization.NoEncryption())
        else:
            key = ed25519.Ed25519PrivateKey.generate()
            seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                     serialization.NoEncryption())
            data = base64.b64encode(seed) + b"\n"
        made.append(DkimKey(domain, sel, algorithm, data))
    return made


def generate(store, domain: str, selector: str, *, overwrite: bool = False) -> list[DkimKey]:
    """Create an RSA 2048 key (selector ``selector``) and an Ed25519 key (``selector-ed25519``) for ``domain`` and
    store them (blocking).  Without ``overwrite``, an existing selector is an error and nothing is written."""
    made = make_keys(domain, selector)
    rows = [keyring.DkimKeyRow(k.domain, k.selector, k.algorithm, k.private) for k in made]
    if not overwrite:
        have = {k.selector for k in keys_for(store, made[0].domain)}
        clash = [k.selector for k in made if k.selector in have]
        if clash:
            raise DkimError(f"{made[0].domain} already has a key with selector {clash[0]!r} (use --force to "
                            "replace it)")
    written = keyring.put_dkim_keys(store, rows, replace=overwrite)
    if len(written) != len(rows):  # another process stored the same selector in between
        raise DkimError(f"{made[0].domain}: a key with selector {selector!r} appeared meanwhile; nothing replaced")
    return made


def keys_for(store, domain: str) -> list[DkimKey]:
    """Every key of ``domain`` (RSA first; blocking)."""
    domain = _norm(domain)
    keys = [DkimKey(r.domain, r.selector, r.algorithm, r.private) for r in keyring.dkim_keys(store, domain)
            if r.algorithm in ALGORITHMS]
    return sorted(keys, key=lambda k: (ALGORITHMS.index(k.algorithm), k.selector))


def key_dir(data_dir: str | os.PathLike) -> Path:
    """Where versions before the database keys kept them (read only by :func:`import_key_files`)."""
    return Path(data_dir) / "dkim"


def import_key_files(store, data_dir: str | os.PathLike) -> list[DkimKey]:
    """Copy the key files of ``data_dir/dkim`` into the database, leaving selectors it has alone (blocking);
    returns the keys imported now.  A file that does not hold a key of its algorithm is skipped."""
    d = key_dir(data_dir)
    if not d.is_dir():
        return []
    found = []
    for p in sorted(d.iterdir()):
        parts = p.name.rsplit(".", 3)
        if len(parts) != 4 or parts[3] != "key" or parts[2] not in ALGORITHMS:
            continue
        try:
            data = p.read_bytes()
            key = DkimKey(_norm(parts[0]), parts[1], parts[2], data)
            key.txt_record()  # it parses
        except Exception:
            continue
        found.append(key)
    if not found:
        return []
    rows = [keyring.DkimKeyRow(k.domain, k.selector, k.algorithm, k.private) for k in found]
    written = {(r.domain, r.selector) for r in keyring.put_dkim_keys(store, rows, replace=False)}
    return [k for k in found if (k.domain, k.selector) in written]


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
    """Signs messages whose From domain has keys (blocking: run in the cpu pool).

    ``keys_of(domain)`` gives a domain's keys (``lambda d: keys_for(store, d)`` in the queue runner); what it
    answers is kept :data:`KEY_CACHE_SECONDS` per domain, so a key made through another node is used soon without a
    restart, and signing costs no database read per message.
    """

    def __init__(self, keys_of: Callable[[str], list[DkimKey]], *, clock: Callable[[], float] = time.monotonic):
        self.keys_of = keys_of
        self.clock = clock
        self._keys: dict[str, tuple[float, list[tuple[DkimKey, bytes]]]] = {}

    @classmethod
    def for_store(cls, store) -> DkimSigner:
        return cls(lambda domain: keys_for(store, domain))

    def _load(self, domain: str) -> list[tuple[DkimKey, bytes]]:
        now = self.clock()
        cached = self._keys.get(domain)
        if cached is None or now - cached[0] >= KEY_CACHE_SECONDS:
            cached = (now, [(k, k.private_bytes()) for k in self.keys_of(domain)])
            if len(self._keys) >= MAX_CACHED_DOMAINS:
                self._keys.clear()
            self._keys[domain] = cached
        return cached[1]

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
