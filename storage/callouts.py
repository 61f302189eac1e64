"""Forwarding and gateway mode's state: functions over an open transaction (``Store.transaction()``).

* The callout cache: one row per address (lower-cased): whether the relay host accepted it at RCPT, until when
  that answer holds.  Shared by every process and node on the database, so one probe serves them all.
* Server secrets: keys made once for the cluster (the SRS key), never changed by the server.
"""

from __future__ import annotations

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Connection

from storage.models import CalloutAnswer, ServerSecret

C = CalloutAnswer.__table__
S = ServerSecret.__table__


def cached(conn: Connection, address: str, now: float) -> bool | None:
    """The answer remembered for ``address`` (True valid, False invalid), None when none holds at ``now``."""
    r = conn.execute(select(C.c.valid, C.c.expires).where(C.c.address == address.lower())).first()
    if r is None or r.expires <= now:
        return None
    return bool(r.valid)


def remember(conn: Connection, address: str, valid: bool, expires: float, now: float) -> None:
    """Record an answer (replacing an older one) and drop the expired ones."""
    address = address.lower()
    conn.execute(delete(C).where(C.c.expires <= now))
    if conn.execute(update(C).where(C.c.address == address).values(valid=valid, expires=expires)).rowcount == 0:
        conn.execute(insert(C).values(address=address, valid=valid, expires=expires))


def secret(conn: Connection, name: str) -> str | None:
    r = conn.execute(select(S.c.value).where(S.c.name == name)).first()
    return r.value if r is not None else None


def add_secret(conn: Connection, name: str, value: str, now: float) -> None:
    conn.execute(insert(S).values(name=name, value=value, created=now))
