"""The Sender Rewriting Scheme: envelope senders of mail we forward, and the bounces that come back to them.

Sans-IO and pure (no clock, no store: ``now`` is passed in).  The address forms are those of the SRS paper (Shevek,
"Sender Rewriting Scheme", 2004) as libsrs2 writes them; the hash is our own (only we ever check it):

* ``SRS0=HHH=TT=orig-domain=orig-local@our-domain``: a sender we rewrite.  ``TT`` is the day number modulo 1024 in
  two base32 characters; ``HHH`` is an HMAC-SHA256 over ``TT``, the domain and the local part, lower-cased (some
  relays fold the case of local parts), as :data:`HASH_LENGTH` base32 characters, compared case-insensitively.
* ``SRS1=HHH=first-forwarder==HHH0=TT=orig-domain=orig-local@our-domain``: a sender that is already an SRS0 (or
  SRS1) address of another forwarder.  It keeps the first forwarder's host and its opaque part unchanged, with our
  own hash over both; a bounce to it goes back to ``SRS0=HHH0=TT=orig-domain=orig-local@first-forwarder``, which
  checks its own timestamp.

Secrets: the first signs, every one is accepted when checking (rotation: put the new one first, keep the old ones
until bounces to them are no longer expected, ``max_age_days``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from dataclasses import dataclass

#: Base32 characters of the hash (5 bits each: 40 bits).
HASH_LENGTH = 8
#: Longest local part :meth:`Srs.reverse` looks at (RFC 5321 4.5.3.1.1 allows 64; rewritten ones grow past it).
MAX_LOCAL = 255
#: The timestamp wraps after this many days (two base32 characters).
TIMESTAMP_DAYS = 1024
BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
DAY = 86400
SEP = "="


class SrsError(ValueError):
    """An SRS address that does not check out (the reason is the message)."""


def looks_like_srs(local: str) -> bool:
    """Whether a local part is in one of the SRS forms (tag and separator, any case)."""
    return local[:5].upper() in ("SRS0=", "SRS1=")


def timestamp(now: float) -> str:
    day = int(now // DAY) % TIMESTAMP_DAYS
    return BASE32[day >> 5] + BASE32[day & 31]


def timestamp_day(tt: str) -> int:
    """The day number (mod 1024) of a timestamp; SrsError when it is not two base32 characters."""
    tt = tt.upper()
    if len(tt) != 2 or any(c not in BASE32 for c in tt):
        raise SrsError("bad timestamp")
    return BASE32.index(tt[0]) << 5 | BASE32.index(tt[1])


@dataclass(frozen=True)
class Srs:
    domain: str  # ours: where rewritten senders point
    secrets: tuple[bytes, ...]  # the first signs
    max_age_days: int = 21

    def __post_init__(self):
        if not self.secrets or not all(self.secrets):
            raise ValueError("SRS needs at least one non-empty secret")

    def _hash(self, secret: bytes, *parts: str) -> str:
        msg = "\0".join(parts).lower().encode("utf-8")
        digest = hmac.new(secret, msg, hashlib.sha256).digest()
        return base64.b32encode(digest).decode("ascii")[:HASH_LENGTH]

    def _check(self, given: str, *parts: str) -> None:
        given = given.upper().encode("ascii", "replace")
        if len(given) != HASH_LENGTH or not any(hmac.compare_digest(given, self._hash(s, *parts).encode("ascii"))
                                                for s in self.secrets):
            raise SrsError("hash does not match")

    # ------------------------------------------------------------------ forward

    def forward(self, sender: str, now: float) -> str:
        """The rewritten form of ``sender`` (an address with a domain, not ours: the caller decides that)."""
        local, at, domain = sender.rpartition("@")
        if not at or not local or not domain:
            raise SrsError("not an address with a domain")
        tag = local[:5].upper()
        if tag == "SRS0=":
            # Shevek 4.3: an SRS0 of another forwarder becomes SRS1, its host and opaque part kept.
            host, opaque = domain, local[4:]  # opaque starts with the separator
            return self._srs1(host, opaque)
        if tag == "SRS1=":
            try:
                _hash, host, opaque = local[5:].split(SEP, 2)
            except ValueError:
                raise SrsError("malformed SRS1 local part") from None
            if not host or not opaque.startswith(SEP):
                raise SrsError("malformed SRS1 local part")
            return self._srs1(host, opaque)
        tt = timestamp(now)
        h = self._hash(self.secrets[0], tt, domain, local)
        return f"SRS0{SEP}{h}{SEP}{tt}{SEP}{domain}{SEP}{local}@{self.domain}"

    def _srs1(self, host: str, opaque: str) -> str:
        h = self._hash(self.secrets[0], host, opaque)
        return f"SRS1{SEP}{h}{SEP}{host}{SEP}{opaque}@{self.domain}"

    # ------------------------------------------------------------------ reverse

    def reverse(self, local: str, now: float) -> str:
        """The address a bounce to ``local``@our domain goes back to; SrsError when it does not check out."""
        if len(local.encode("utf-8", "replace")) > MAX_LOCAL:
            raise SrsError(f"local part longer than {MAX_LOCAL} octets")
        tag, rest = local[:5].upper(), local[5:]
        if tag == "SRS0=":
            try:
                h, tt, domain, user = rest.split(SEP, 3)
            except ValueError:
                raise SrsError("malformed SRS0 local part") from None
            if not domain or not user:
                raise SrsError("malformed SRS0 local part")
            then = timestamp_day(tt)
            today = int(now // DAY) % TIMESTAMP_DAYS
            if (today - then) % TIMESTAMP_DAYS > self.max_age_days:
                raise SrsError("expired")
            self._check(h, tt.upper(), domain, user)
            return f"{user}@{domain}"
        if tag == "SRS1=":
            try:
                h, host, opaque = rest.split(SEP, 2)
            except ValueError:
                raise SrsError("malformed SRS1 local part") from None
            if not host or not opaque.startswith(SEP) or len(opaque) < 2:
                raise SrsError("malformed SRS1 local part")
            self._check(h, host, opaque)
            return f"SRS0{opaque}@{host}"
        raise SrsError("not an SRS address")


# --------------------------------------------------------------------------------------------- secrets

#: The name of the generated key in the store's ``server_secrets``.
SECRET_NAME = "srs"


def new_secret() -> str:
    return os.urandom(32).hex()


def from_config(config, store) -> Srs | None:
    """The SRS of ``[srs]`` (None when off): configured secrets first, then the one generated once for the cluster
    and kept in the database (always accepted, and signing when none is configured).  Blocking (the store)."""
    cfg = config.srs
    if not cfg.enabled:
        return None
    domain = (cfg.domain or _first_local_domain(config)).lower().rstrip(".")
    if not domain:
        raise ValueError("[srs] needs a domain (no local [[domain]] to default to)")
    secrets = tuple(s.encode("utf-8") for s in cfg.secrets)
    generated = store.server_secret(SECRET_NAME, new_secret).encode("ascii")
    return Srs(domain, secrets + ((generated,) if generated not in secrets else ()), cfg.max_age_days)


def _first_local_domain(config) -> str:
    return next((d.name for d in config.domain if d.mode == "local"), "")
