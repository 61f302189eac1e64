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

from storage.store import Store

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
    """Blocking session operations (call from database pools); the rows are kept by the store (storage/webmail.py)."""

    def __init__(self, store: Store, *, idle: float, absolute: float, clock=time.time):
        self.store = store
        self.idle = idle
        self.absolute = absolute
        self.clock = clock

    def create(self, account_id: int, ip: str, user_agent: str) -> tuple[str, SessionInfo]:
        """A new session for ``account_id``: returns (cookie token, info)."""
        token = new_token()
        key = hash_token(token)
        now = self.clock()
        csrf = secrets.token_urlsafe(24)
        # Expired sessions of this account are removed while we are here.
        address, name = self.store.create_webmail_session(key, account_id, csrf, now, ip, user_agent,
                                                          idle=self.idle, absolute=self.absolute)
        return token, SessionInfo(key, account_id, address, name, csrf, now, now)

    def account(self, account_id: int) -> tuple[str, str]:
        return self.store.webmail_session_account(account_id)

    def load(self, token: str) -> SessionInfo | None:
        """The live session named by ``token`` (None when unknown, expired or the account is disabled)."""
        if not token or len(token) > 100:
            return None
        key = hash_token(token)
        now = self.clock()
        row = self.store.webmail_session(key)
        if row is None:
            return None
        if not row.enabled or row.last_seen < now - self.idle or row.created < now - self.absolute:
            self.delete(key)
            return None
        info = SessionInfo(row.key, row.account_id, row.address, row.display_name, row.csrf, row.created,
                           row.last_seen)
        if now - row.last_seen > TOUCH_INTERVAL:
            self.touch(key, now)
        return info

    def touch(self, key: str, now: float) -> None:
        self.store.touch_webmail_session(key, now)

    def delete(self, key: str) -> None:
        self.store.delete_webmail_session(key)

    def delete_others(self, account_id: int, keep_key: str) -> int:
        """End every other session of the account (after a password change)."""
        return self.store.delete_other_webmail_sessions(account_id, keep_key)

    def count(self, account_id: int) -> int:
        return self.store.count_webmail_sessions(account_id)
