"""Sieve scripts and what Sieve remembers: functions over an open transaction (``Store.transaction()``).

The API a ManageSieve listener (RFC 5804) and the webmail's editor build on; ``Store`` exposes each as one
transaction (``list_sieve_scripts``, ``get_sieve_script``, ``put_sieve_script``, ``rename_sieve_script``,
``delete_sieve_script``, ``activate_sieve_script``, ``active_sieve_script`` ...).

* Scripts belong to an owner: an account (``scope`` :data:`ACCOUNT`, ``owner_id`` = accounts.id) or a domain
  (:data:`DOMAIN`, its global scripts: :data:`BEFORE` and :data:`AFTER` run around every user's active script of
  that domain, Pigeonhole's sieve_before/sieve_after; other names are what ``include :global`` finds).
* At most one script of an account is active (RFC 5804 2.8); none active = no filtering (implicit keep).
  Deleting the active script is refused (RFC 5804 2.10: ``ActiveScript``), renaming keeps it active.
* ``put_script`` stores text the caller already compiled (this layer knows no Sieve); it enforces the per-account
  quota on count and total size (:class:`SieveQuota` with ``max_scripts`` / ``max_storage``, RFC 5804 QUOTA/...)
  and a name rule (1..255 characters, no control characters, no "/").
* ``version`` (:func:`script_version`) changes whenever any script of the owner changes, so a cache of compiled
  scripts is invalidated by comparing it.
* Vacation: :func:`vacation_replied` / :func:`record_vacation_reply` keep "replied to sender X at time T" per
  account and handle (RFC 5230 4.2: once per sender per period).  Duplicate ids (RFC 7352) the same way.
"""

from __future__ import annotations

import time
import unicodedata
from dataclasses import dataclass

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Connection

from storage.errors import AlreadyExists, Invalid, NotFound, StoreError
from storage.models import SieveDuplicate, SieveScript, SieveVacationReply

S = SieveScript.__table__
V = SieveVacationReply.__table__
DU = SieveDuplicate.__table__

ACCOUNT, DOMAIN = "account", "domain"
BEFORE, AFTER = "before", "after"
MAX_NAME = 255


class SieveQuota(StoreError):
    """The owner's scripts would pass ``max_scripts`` or ``max_storage`` (RFC 5804 QUOTA/MAXSCRIPTS, QUOTA/MAXSIZE)."""

    def __init__(self, message: str, kind: str):
        super().__init__(message)
        self.kind = kind  # "maxscripts" | "maxsize"


class ActiveScript(StoreError):
    """The active script cannot be deleted (RFC 5804 2.10)."""


@dataclass(frozen=True)
class ScriptInfo:
    name: str
    size: int
    active: bool
    updated: float


@dataclass(frozen=True)
class ScriptText:
    name: str
    content: str
    active: bool
    updated: float


def check_script_name(name: str) -> str:
    """RFC 5804 1.6: a name is 1..255 Unicode characters without controls; we also refuse "/"."""
    if not name or len(name) > MAX_NAME:
        raise Invalid(f"a script name has 1 to {MAX_NAME} characters")
    if "/" in name or any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in name):
        raise Invalid(f"invalid script name {name!r}")
    return unicodedata.normalize("NFC", name)


def _owner(scope: str, owner_id: int):
    if scope not in (ACCOUNT, DOMAIN):
        raise Invalid(f"unknown script scope {scope!r}")
    return (S.c.scope == scope) & (S.c.owner_id == owner_id)


def list_scripts(conn: Connection, scope: str, owner_id: int) -> list[ScriptInfo]:
    rows = conn.execute(select(S.c.name, S.c.size, S.c.active, S.c.updated).where(_owner(scope, owner_id))
                        .order_by(S.c.name))
    return [ScriptInfo(r.name, r.size, bool(r.active), r.updated) for r in rows]


def get_script(conn: Connection, scope: str, owner_id: int, name: str) -> ScriptText | None:
    r = conn.execute(select(S).where(_owner(scope, owner_id) & (S.c.name == name))).first()
    return ScriptText(r.name, r.content, bool(r.active), r.updated) if r else None


def active_script(conn: Connection, scope: str, owner_id: int) -> ScriptText | None:
    r = conn.execute(select(S).where(_owner(scope, owner_id) & S.c.active)).first()
    return ScriptText(r.name, r.content, True, r.updated) if r else None


def script_version(conn: Connection, scope: str, owner_id: int) -> tuple[int, float]:
    """(count, newest change): changes whenever a script of the owner is put, renamed, deleted or activated."""
    r = conn.execute(select(func.count(), func.max(S.c.updated)).where(_owner(scope, owner_id))).first()
    return int(r[0] or 0), float(r[1] or 0.0)


def check_quota(conn: Connection, scope: str, owner_id: int, name: str, size: int, *, max_scripts: int,
                max_storage: int) -> None:
    """Raise SieveQuota when putting ``size`` bytes as ``name`` would pass a limit (RFC 5804 HAVESPACE)."""
    rows = conn.execute(select(S.c.name, S.c.size).where(_owner(scope, owner_id))).all()
    others = [r for r in rows if r.name != name]
    if max_scripts and len(others) + 1 > max_scripts:
        raise SieveQuota(f"at most {max_scripts} scripts", "maxscripts")
    if max_storage and sum(r.size for r in others) + size > max_storage:
        raise SieveQuota(f"the scripts would take more than {max_storage} bytes", "maxsize")


def put_script(conn: Connection, scope: str, owner_id: int, name: str, content: str, *, max_scripts: int = 0,
               max_storage: int = 0, now: float | None = None) -> ScriptInfo:
    """Create or replace ``name`` (keeps its active state)."""
    name = check_script_name(name)
    size = len(content.encode("utf-8"))
    check_quota(conn, scope, owner_id, name, size, max_scripts=max_scripts, max_storage=max_storage)
    now = time.time() if now is None else now
    cond = _owner(scope, owner_id) & (S.c.name == name)
    row = conn.execute(select(S.c.id, S.c.active).where(cond)).first()
    if row is None:
        conn.execute(insert(S).values(scope=scope, owner_id=owner_id, name=name, content=content, size=size,
                                      active=False, updated=now))
        return ScriptInfo(name, size, False, now)
    conn.execute(update(S).where(S.c.id == row.id).values(content=content, size=size, updated=now))
    return ScriptInfo(name, size, bool(row.active), now)


def rename_script(conn: Connection, scope: str, owner_id: int, old: str, new: str) -> None:
    new = check_script_name(new)
    row = conn.execute(select(S.c.id).where(_owner(scope, owner_id) & (S.c.name == old))).first()
    if row is None:
        raise NotFound(f"no script {old!r}")
    if old != new and conn.execute(select(S.c.id).where(_owner(scope, owner_id) & (S.c.name == new))).first():
        raise AlreadyExists(f"a script {new!r} exists")
    conn.execute(update(S).where(S.c.id == row.id).values(name=new, updated=time.time()))


def delete_script(conn: Connection, scope: str, owner_id: int, name: str) -> None:
    row = conn.execute(select(S.c.id, S.c.active).where(_owner(scope, owner_id) & (S.c.name == name))).first()
    if row is None:
        raise NotFound(f"no script {name!r}")
    if row.active:
        raise ActiveScript(f"script {name!r} is active; deactivate it first")
    conn.execute(delete(S).where(S.c.id == row.id))
    # A later put must still change the version of this owner (count drops, but updated of others may not).
    conn.execute(update(S).where(_owner(scope, owner_id)).values(updated=time.time()))


def activate_script(conn: Connection, scope: str, owner_id: int, name: str | None) -> None:
    """Make ``name`` the active script; None deactivates every script (RFC 5804 SETACTIVE "")."""
    now = time.time()
    if name is not None and conn.execute(
            select(S.c.id).where(_owner(scope, owner_id) & (S.c.name == name))).first() is None:
        raise NotFound(f"no script {name!r}")
    conn.execute(update(S).where(_owner(scope, owner_id)).values(active=False, updated=now))
    if name is not None:
        conn.execute(update(S).where(_owner(scope, owner_id) & (S.c.name == name)).values(active=True))


def delete_owner_scripts(conn: Connection, scope: str, owner_id: int) -> None:
    conn.execute(delete(S).where(_owner(scope, owner_id)))


# --------------------------------------------------------------------------------------------- vacation


def vacation_replied(conn: Connection, account_id: int, handle: str, sender: str, since: float) -> bool:
    """Whether a reply to ``sender`` under ``handle`` was sent at ``since`` or later."""
    r = conn.execute(select(V.c.replied_at).where((V.c.account_id == account_id) & (V.c.handle == handle) &
                                                  (V.c.sender == sender.lower()))).first()
    return r is not None and r.replied_at >= since


def record_vacation_reply(conn: Connection, account_id: int, handle: str, sender: str, at: float, *,
                          period: float) -> bool:
    """Claim the reply to ``sender``: True when none was sent within ``period`` before ``at`` (then it is recorded
    as sent at ``at``), False when one was (the caller sends nothing).  One claim per sender per period, even
    when two deliveries race: the row is read and written in one write transaction."""
    sender = sender.lower()
    cond = (V.c.account_id == account_id) & (V.c.handle == handle) & (V.c.sender == sender)
    r = conn.execute(select(V.c.id, V.c.replied_at).where(cond)).first()
    if r is not None and r.replied_at > at - period:
        return False
    if r is None:
        conn.execute(insert(V).values(account_id=account_id, handle=handle, sender=sender, replied_at=at))
    else:
        conn.execute(update(V).where(V.c.id == r.id).values(replied_at=at))
    return True


def expire_vacation(conn: Connection, before: float) -> int:
    return conn.execute(delete(V).where(V.c.replied_at < before)).rowcount or 0


# --------------------------------------------------------------------------------------------- duplicate


def duplicates_seen(conn: Connection, account_id: int, keys, now: float) -> set[str]:
    keys = list(keys)
    if not keys:
        return set()
    rows = conn.execute(select(DU.c.key).where((DU.c.account_id == account_id) & DU.c.key.in_(keys) &
                                               (DU.c.expires > now)))
    return {r.key for r in rows}


def mark_duplicates(conn: Connection, account_id: int, marks, now: float) -> None:
    """Remember each (key, seconds) until now + seconds (RFC 7352 3: once the message was delivered)."""
    for key, seconds in marks:
        cond = (DU.c.account_id == account_id) & (DU.c.key == key)
        if conn.execute(select(DU.c.id).where(cond)).first():
            conn.execute(update(DU).where(cond).values(expires=now + seconds))
        else:
            conn.execute(insert(DU).values(account_id=account_id, key=key, expires=now + seconds))
    conn.execute(delete(DU).where((DU.c.account_id == account_id) & (DU.c.expires <= now)))
