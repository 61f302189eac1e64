"""Greylisting triplets (RFC 6647) in the database, so every node of a cluster sees the same first attempts.

A triplet is (client network, envelope sender, envelope recipient), the caller having lower-cased the addresses
and cut the client's address to its network.  :func:`record` is the one decision, in one write transaction:

* unknown triplet (or one whose retry window, or passed life, ended): a row with ``first_seen = now`` -> NEW;
* a retry before ``first_seen + delay`` -> EARLY (the row is left as it is: retrying sooner does not help);
* a retry after the delay, within the window -> PASSED (``passed = now``, remembered ``lifetime`` seconds);
* a triplet that passed before -> KNOWN (its life is extended, at most once per :data:`REFRESH` seconds);
* a client network with ``auto_whitelist`` passed triplets -> CLIENT (no triplet is kept for it).

Two nodes inserting the same new triplet at once meet the unique constraint: ``INSERT ... ON CONFLICT DO NOTHING``
makes one of them the creator and the other reads the row (``FOR UPDATE`` on PostgreSQL, SQLite's one writer).
Times are the caller's clock (UNIX seconds); :func:`prune` removes expired rows (the periodic collector).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, select, text, update
from sqlalchemy.engine import Connection

from storage.models import GreylistClient, GreylistTriplet

T = GreylistTriplet.__table__
C = GreylistClient.__table__

NEW, EARLY, PASSED, KNOWN, CLIENT = "new", "early", "passed", "known", "client"
#: Results that let the mail through.
ACCEPTED = frozenset({PASSED, KNOWN, CLIENT})
#: A passed triplet's expiry is moved on at most this often (seconds): not a write per message.
REFRESH = 86400.0

_SQL_INSERT = text("INSERT INTO greylist (network, sender, recipient, first_seen, passed, expires) "
                   "VALUES (:network, :sender, :recipient, :now, NULL, :expires) "
                   "ON CONFLICT (network, sender, recipient) DO NOTHING")
_SQL_CLIENT_PASS = text("INSERT INTO greylist_clients (network, passes, expires) VALUES (:network, 1, :expires) "
                        "ON CONFLICT (network) DO UPDATE SET passes = greylist_clients.passes + 1, "
                        "expires = excluded.expires")


@dataclass(frozen=True)
class GreylistPolicy:
    delay: float
    retry_window: float
    lifetime: float
    auto_whitelist: int = 0  # passed triplets after which the network is let through (0 = never)


def known(conn: Connection, network: str, sender: str, recipient: str, now: float, auto_whitelist: int = 0,
          lifetime: float = 0.0) -> str | None:
    """Read-only fast path: KNOWN for a passed triplet that needs no refresh, CLIENT for a whitelisted network,
    else None (:func:`record` decides)."""
    found = known_until(conn, network, sender, recipient, now, auto_whitelist, lifetime)
    return found[0] if found is not None else None


def known_until(conn: Connection, network: str, sender: str, recipient: str, now: float, auto_whitelist: int = 0,
                lifetime: float = 0.0) -> tuple[str, float] | None:
    """:func:`known` and until when its answer holds without asking again (:func:`holds_until`)."""
    if auto_whitelist:
        until = _client_whitelisted_until(conn, network, now, auto_whitelist)
        if until:
            return CLIENT, until
    row = conn.execute(select(T.c.passed, T.c.expires).where(
        T.c.network == network, T.c.sender == sender, T.c.recipient == recipient)).first()
    if row is not None and row.passed is not None and row.expires > now and row.expires >= now + lifetime - REFRESH:
        return KNOWN, holds_until(row.expires, lifetime)
    return None


def holds_until(expires: float, lifetime: float) -> float:
    """Until when a passed triplet that expires at ``expires`` is KNOWN with no write: its expiry only moves later
    (by :func:`record`, on any node) and nothing but expiry un-passes it, so until its refresh is due (or it
    expires) the database would answer KNOWN and change nothing; a node may answer so from memory."""
    return min(expires, expires - lifetime + REFRESH)


def _client_whitelisted(conn: Connection, network: str, now: float, auto_whitelist: int) -> bool:
    return bool(_client_whitelisted_until(conn, network, now, auto_whitelist))


def _client_whitelisted_until(conn: Connection, network: str, now: float, auto_whitelist: int) -> float:
    """The whitelisted network's expiry (its pass count only grows and its expiry only moves later until then),
    else 0."""
    row = conn.execute(select(C.c.passes, C.c.expires).where(C.c.network == network)).first()
    return row.expires if row is not None and row.expires > now and row.passes >= auto_whitelist else 0.0


def record(conn: Connection, network: str, sender: str, recipient: str, now: float, p: GreylistPolicy) -> str:
    """The decision for one attempt (module docstring), recorded."""
    return record_until(conn, network, sender, recipient, now, p)[0]


def record_until(conn: Connection, network: str, sender: str, recipient: str, now: float, p: GreylistPolicy
                 ) -> tuple[str, float]:
    """:func:`record` and until when an accepting answer holds without asking again (0 for a deferral)."""
    if p.auto_whitelist:
        until = _client_whitelisted_until(conn, network, now, p.auto_whitelist)
        if until:
            return CLIENT, until
    key = {"network": network, "sender": sender, "recipient": recipient}
    created = conn.execute(_SQL_INSERT, {**key, "now": now, "expires": now + p.retry_window})
    if created.rowcount == 1:
        return NEW, 0.0
    where = (T.c.network == network, T.c.sender == sender, T.c.recipient == recipient)
    row = conn.execute(select(T.c.id, T.c.first_seen, T.c.passed, T.c.expires).where(*where)
                       .with_for_update()).first()
    if row is None:  # pruned between the two statements
        conn.execute(_SQL_INSERT, {**key, "now": now, "expires": now + p.retry_window})
        return NEW, 0.0
    if row.expires <= now:
        # RFC 6647 4.2: a retry after the window (or a passed triplet unused for its life) starts again.
        conn.execute(update(T).where(T.c.id == row.id).values(first_seen=now, passed=None,
                                                                expires=now + p.retry_window))
        return NEW, 0.0
    if row.passed is not None:
        expires = row.expires
        if expires < now + p.lifetime - REFRESH:
            expires = now + p.lifetime
            conn.execute(update(T).where(T.c.id == row.id).values(expires=expires))
        return KNOWN, holds_until(expires, p.lifetime)
    if now < row.first_seen + p.delay:
        return EARLY, 0.0
    conn.execute(update(T).where(T.c.id == row.id).values(passed=now, expires=now + p.lifetime))
    if p.auto_whitelist:
        conn.execute(_SQL_CLIENT_PASS, {"network": network, "expires": now + p.lifetime})
    return PASSED, holds_until(now + p.lifetime, p.lifetime)


def prune(conn: Connection, now: float) -> int:
    """Remove expired triplets and client counts; returns how many triplets went."""
    gone = conn.execute(delete(T).where(T.c.expires <= now)).rowcount
    conn.execute(delete(C).where(C.c.expires <= now))
    return gone
