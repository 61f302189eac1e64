"""The webmail's own tables, on the shared declarative base (migration: storage/migrations/versions/0003_webmail.py)."""

from __future__ import annotations

from sqlalchemy import Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from storage.models import Base


class WebmailSession(Base):
    """A signed-in browser.  ``id`` is the SHA-256 of the cookie value: a database leak yields no usable cookie."""

    __tablename__ = "webmail_sessions"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    csrf: Mapped[str] = mapped_column(String(64))
    created: Mapped[float] = mapped_column(Float)
    last_seen: Mapped[float] = mapped_column(Float)
    ip: Mapped[str] = mapped_column(String(64), default="")
    user_agent: Mapped[str] = mapped_column(String(300), default="")


class WebmailContact(Base):
    """A recent correspondent of an account (address suggestions in compose)."""

    __tablename__ = "webmail_contacts"
    __table_args__ = (UniqueConstraint("account_id", "address"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    address: Mapped[str] = mapped_column(String(320))
    name: Mapped[str] = mapped_column(String(200), default="")
    last_used: Mapped[float] = mapped_column(Float)
    use_count: Mapped[int] = mapped_column(Integer, default=1)


class WebmailIdentity(Base):
    """Display name and signature of one of the addresses an account may send as (its own or an alias)."""

    __tablename__ = "webmail_identities"
    __table_args__ = (UniqueConstraint("account_id", "address"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    address: Mapped[str] = mapped_column(String(320))
    name: Mapped[str] = mapped_column(String(200), default="")
    signature: Mapped[str] = mapped_column(Text, default="")
