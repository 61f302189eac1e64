"""Key material every node sharing the database must use alike: DKIM signing keys and TLS certificates (blocking).

Rows, not files, so that a second node on the same PostgreSQL signs with the keys made through the first and serves
the same self-signed certificate.  Private keys are stored as given (PEM, or dkimpy's base64 Ed25519 seed); the
database is as secret as the mail in it.  Inserts that may race between nodes use ``ON CONFLICT DO NOTHING`` and read
back what won, so two nodes starting at once end up with one certificate.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import text


@dataclass(frozen=True)
class DkimKeyRow:
    domain: str
    selector: str
    algorithm: str
    private: bytes


def dkim_keys(store, domain: str) -> list[DkimKeyRow]:
    """Every key of ``domain`` (unordered; callers sort)."""
    with store.transaction(write=False) as conn:
        rows = conn.execute(text("SELECT domain, selector, algorithm, private FROM dkim_keys WHERE domain = :d"),
                            {"d": domain}).all()
    return [DkimKeyRow(r.domain, r.selector, r.algorithm, r.private.encode("ascii")) for r in rows]


def dkim_domains(store) -> list[str]:
    with store.transaction(write=False) as conn:
        return [r[0] for r in conn.execute(text("SELECT DISTINCT domain FROM dkim_keys ORDER BY domain"))]


def put_dkim_keys(store, keys: list[DkimKeyRow], *, replace: bool) -> list[DkimKeyRow]:
    """Store ``keys`` in one transaction.  Without ``replace``, a selector that exists is left alone and not
    returned; with it, it is overwritten.  Returns the rows written."""
    written = []
    now = time.time()
    with store.transaction() as conn:
        for k in keys:
            p = {"d": k.domain, "s": k.selector, "a": k.algorithm, "k": k.private.decode("ascii"), "t": now}
            if replace:
                conn.execute(text("DELETE FROM dkim_keys WHERE domain = :d AND selector = :s"), p)
            n = conn.execute(text("INSERT INTO dkim_keys (domain, selector, algorithm, private, created)"
                                  " VALUES (:d, :s, :a, :k, :t) ON CONFLICT (domain, selector) DO NOTHING"),
                             p).rowcount
            if n:
                written.append(k)
    return written


def tls_pair(store, name: str) -> tuple[bytes, bytes] | None:
    """(certificate PEM, key PEM) stored as ``name``, or None."""
    with store.transaction(write=False) as conn:
        row = conn.execute(text("SELECT cert_pem, key_pem FROM tls_certificates WHERE name = :n"),
                           {"n": name}).first()
    return None if row is None else (row.cert_pem.encode("ascii"), row.key_pem.encode("ascii"))


def put_tls_pair_if_absent(store, name: str, cert_pem: bytes, key_pem: bytes) -> tuple[bytes, bytes]:
    """Store the pair as ``name`` unless one is there already; returns the pair stored (ours or the earlier one)."""
    with store.transaction() as conn:
        conn.execute(text("INSERT INTO tls_certificates (name, cert_pem, key_pem, created) VALUES (:n, :c, :k, :t)"
                          " ON CONFLICT (name) DO NOTHING"),
                     {"n": name, "c": cert_pem.decode("ascii"), "k": key_pem.decode("ascii"), "t": time.time()})
        row = conn.execute(text("SELECT cert_pem, key_pem FROM tls_certificates WHERE name = :n"),
                           {"n": name}).first()
    return row.cert_pem.encode("ascii"), row.key_pem.encode("ascii")
