"""Webmail sessions kept in the database, so they survive a restart.

The cookie carries 32 random bytes (URL-safe base64); the database keeps only their SHA-256, so a copy of the
database does not let anyone sign in.  A session ends after ``webmail.session_idle`` seconds without a request
or ``webmail.session_absolute`` seconds after sign-in, whichever comes first; sign-out deletes it.  A new id is
issued at every sign-in (session fixation: an id planted before sign-in is never promoted).  Each session has
its own CSRF token, compared in constant time on every state-changing request.

The blocking functions run in the server's database pools (``SessionStore`` wraps them in Deferreds).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import delete, select, update
from sqlalchemy.engine import Engine

from storage.db import is_sqlite
from storage.models import Account
from webmail.models import WebmailSession

S = WebmailSession.__table__
A = Account.__table__

#: Seconds between two writes of ``last_seen`` for one session (reads stay cheap).
TOUCH_INTERVAL = 60.0
#: Length of the random part of a session id, in bytes.
TOKEN_BYTES = 32


@dataclass(frozen=True)
class SessionInfo:
    key: str  # sha256 hex of the cookie value
    account_id: int
    address: str
    display_name: str
    csrf: str
    created: float
    last_seen: float


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("ascii", "replace")).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def csrf_equal(expected: str, given: str) -> bool:
    return bool(expected) and hmac.compare_digest(expected.encode(), given.encode("utf-8", "replace"))


class SessionDb:
    """Blocking session operations (call from database pools)."""

    def __init__(self, engine: Engine, *, idle: float, absolute: float, clock=time.time):
        self.engine = engine
        self.idle = idle
        self.absolute = absolute
        self.clock = clock
        self.sqlite = is_sqlite(str(engine.url))

    def _write(self):
        conn = self.engine.connect()
        if self.sqlite:
            conn.info["sqlite_begin"] = "IMMEDIATE"
        return conn

    def create(self, account_id: int, ip: str, user_agent: str) -> tuple[str, SessionInfo]:
        """A new session for ``account_id``: returns (cookie token, info)."""
        token = new_token()
        key = hash_token(token)
        now = self.clock()
        csrf = secrets.token_urlsafe(24)
        with self._write() as conn:
            try:
                with conn.begin():
                    conn.execute(S.insert().values(id=key, account_id=account_id, csrf=csrf, created=now,
                                                   last_seen=now, ip=ip[:64], user_agent=user_agent[:300]))
                    # Expired sessions of this account are removed while we are here.
                    conn.execute(delete(S).where(S.c.account_id == account_id,
                                                 (S.c.last_seen < now - self.idle) |
                                                 (S.c.created < now - self.absolute)))
            finally:
                conn.info.pop("sqlite_begin", None)
        acct = self.account(account_id)
        return token, SessionInfo(key, account_id, acct[0], acct[1], csrf, now, now)

    def account(self, account_id: int) -> tuple[str, str]:
        with self.engine.connect() as conn:
            row = conn.execute(select(A.c.address, A.c.display_name).where(A.c.id == account_id)).first()
        return (row.address, row.display_name) if row else ("", "")

    def load(self, token: str) -> SessionInfo | None:
        """The live session named by ``token`` (None when unknown, expired or the account is disabled)."""
        if not token or len(token) > 100:
            return None
        key = hash_token(token)
        now = self.clock()
        with self.engine.connect() as conn:
            row = conn.execute(select(S.c.id, S.c.account_id, S.c.csrf, S.c.created, S.c.last_seen, A.c.address,
                                      A.c.display_name, A.c.enabled)
                               .join(A, A.c.id == S.c.account_id).where(S.c.id == key)).first()
        if row is None:
            return None
        if not row.enabled or row.last_seen < now - self.idle or row.created < now - self.absolute:
            self.delete(key)
            return None
        info = SessionInfo(row.id, row.account_id, row.address, row.display_name, row.csrf, row.created,
                           row.last_seen)
        if now - row.last_seen > TOUCH_INTERVAL:
            self.touch(key, now)
        return info

    def touch(self, key: str, now: float) -> None:
        with self._write() as conn:
            try:
                with conn.begin():
                    conn.execute(update(S).where(S.c.id == key).values(last_seen=now))
            finally:
                conn.info.pop("sqlite_begin", None)

    def delete(self, key: str) -> None:
        with self._write() as conn:
            try:
                with conn.begin():
                    conn.execute(delete(S).where(S.c.id == key))
            finally:
                conn.info.pop("sqlite_begin", None)

    def delete_others(self, account_id: int, keep_key: str) -> int:
        """End every other session of the account (after a password change)."""
        with self._write() as conn:
            try:
                with conn.begin():
                    return conn.execute(delete(S).where(S.c.account_id == account_id, S.c.id != keep_key)).rowcount
            finally:
                conn.info.pop("sqlite_begin", None)

    def count(self, account_id: int) -> int:
        with self.engine.connect() as conn:
            return len(conn.execute(select(S.c.id).where(S.c.account_id == account_id)).all())
