"""Domains, accounts and aliases: functions over an open transaction (``Store.transaction()``).

Addresses are kept lower-cased.  A new account gets the default mailboxes (``storage.mailboxes.DEFAULT_MAILBOXES``);
removing it drops its mailboxes and messages and their blob references (the blobs go at the next collection).
``used_bytes`` is the sum of the sizes of the account's messages, kept by every message operation.
"""

from __future__ import annotations

import re
import time

from sqlalchemy import bindparam, delete, func, insert, select, update
from sqlalchemy.engine import Connection

from storage import blobrefs, mailboxes, quarantine, shared, sieve
from storage.errors import AlreadyExists, Invalid, NotFound
from storage.models import Account, Alias, Domain, Expunged, Mailbox, Message
from storage.records import AccountInfo, AliasInfo, DomainInfo, account_info
from storage.sql import chunks

A = Account.__table__
AL = Alias.__table__
D = Domain.__table__
M = Message.__table__
MB = Mailbox.__table__
X = Expunged.__table__

ADDR_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$|^[^@\s]+@[A-Za-z0-9-]+$")
_DOMAIN_RE = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*")
#: Account fields ``update_account`` may change.
UPDATABLE = frozenset({"display_name", "signature", "quota_bytes", "enabled", "password_hash"})


def normalize_address(address: str) -> str:
    return address.strip().lower()


def _domain_name(name: str) -> str:
    return name.strip().lower().rstrip(".")


def _domain_info(row) -> DomainInfo:
    return DomainInfo(row.id, row.name, row.mode, row.relay_to)


# --------------------------------------------------------------------------------------------- domains


def add_domain(conn: Connection, name: str, mode: str = "local", relay_to: str = "") -> DomainInfo:
    name = _domain_name(name)
    if not _DOMAIN_RE.fullmatch(name):
        raise Invalid(f"not a valid domain name: {name!r}")
    if mode not in ("local", "relay"):
        raise Invalid("mode must be local or relay")
    if mode == "relay" and not relay_to:
        raise Invalid("a relay domain needs relay_to")
    if conn.execute(select(D.c.id).where(D.c.name == name)).first():
        raise AlreadyExists(f"domain {name} exists")
    did = conn.execute(insert(D).values(name=name, mode=mode, relay_to=relay_to,
                                        created=time.time())).inserted_primary_key[0]
    return DomainInfo(did, name, mode, relay_to)


def ensure_domain(conn: Connection, name: str, mode: str = "local", relay_to: str = "") -> DomainInfo:
    """Create or update a domain declared in the config."""
    name = _domain_name(name)
    row = conn.execute(select(D).where(D.c.name == name)).first()
    if row is None:
        return add_domain(conn, name, mode, relay_to)
    conn.execute(update(D).where(D.c.id == row.id).values(mode=mode, relay_to=relay_to))
    return DomainInfo(row.id, name, mode, relay_to)


def get_domain(conn: Connection, name: str) -> DomainInfo | None:
    row = conn.execute(select(D).where(D.c.name == _domain_name(name))).first()
    return _domain_info(row) if row else None


def list_domains(conn: Connection) -> list[DomainInfo]:
    return [_domain_info(r) for r in conn.execute(select(D).order_by(D.c.name))]


def remove_domain(conn: Connection, name: str) -> None:
    """Remove a domain and its aliases; one that still has accounts is refused (Invalid)."""
    name = name.strip().lower()
    row = conn.execute(select(D.c.id).where(D.c.name == name)).first()
    if row is None:
        raise NotFound(f"no domain {name}")
    n = conn.execute(select(func.count()).select_from(A).where(A.c.domain_id == row.id)).scalar()
    if n:
        raise Invalid(f"domain {name} still has {n} account(s); remove them first")
    conn.execute(delete(AL).where(AL.c.address.like(f"%@{name}")))
    sieve.delete_owner_scripts(conn, sieve.DOMAIN, row.id)
    quarantine.forget_domain(conn, row.id)
    conn.execute(delete(D).where(D.c.id == row.id))


# --------------------------------------------------------------------------------------------- accounts


def add_account(conn: Connection, address: str, password_hash: str, display_name: str = "",
                quota_bytes: int = 0) -> AccountInfo:
    address = normalize_address(address)
    if not ADDR_RE.match(address) or len(address) > 320:
        raise Invalid(f"malformed address: {address!r}")
    domain = address.rsplit("@", 1)[1]
    drow = conn.execute(select(D.c.id, D.c.mode).where(D.c.name == domain)).first()
    if drow is None:
        raise NotFound(f"unknown domain {domain} (add it first: mailserver domain add {domain})")
    if conn.execute(select(A.c.id).where(A.c.address == address)).first():
        raise AlreadyExists(f"account {address} exists")
    aid = conn.execute(insert(A).values(address=address, domain_id=drow.id, password_hash=password_hash,
                                        display_name=display_name, quota_bytes=quota_bytes, used_bytes=0,
                                        enabled=True, signature="", uid_validity_seq=0,
                                        created=time.time())).inserted_primary_key[0]
    for name, special in mailboxes.DEFAULT_MAILBOXES:
        mailboxes.create_mailbox_row(conn, aid, name, special)
    return account_info(conn.execute(select(A).where(A.c.id == aid)).first())


# Built once: every login looks its account up (also on a success-cache hit: the stored hash may have changed).
_ACCOUNT_BY_ADDRESS = select(A).where(A.c.address == bindparam("address"))
_QUOTA_OF = select(A.c.used_bytes, A.c.quota_bytes).where(A.c.id == bindparam("account_id"))  # every APPEND
_ACCOUNT_BY_ID = select(A).where(A.c.id == bindparam("account_id"))


def get_account(conn: Connection, address: str) -> AccountInfo | None:
    row = conn.execute(_ACCOUNT_BY_ADDRESS, {"address": normalize_address(address)}).first()
    return account_info(row) if row else None


def get_account_by_id(conn: Connection, account_id: int) -> AccountInfo | None:
    row = conn.execute(_ACCOUNT_BY_ID, {"account_id": account_id}).first()
    return account_info(row) if row else None


def list_accounts(conn: Connection, domain: str | None = None) -> list[AccountInfo]:
    q = select(A).order_by(A.c.address)
    if domain:
        q = q.where(A.c.address.like(f"%@{domain.lower()}"))
    return [account_info(r) for r in conn.execute(q)]


def remove_account(conn: Connection, address: str) -> None:
    """Remove the account with its mailboxes and messages (their blobs lose a reference each)."""
    address = normalize_address(address)
    row = conn.execute(select(A.c.id).where(A.c.address == address)).first()
    if row is None:
        raise NotFound(f"no account {address}")
    blobrefs.unref_selected(conn, select(M.c.blob_id).join(MB, MB.c.id == M.c.mailbox_id)
                            .where(MB.c.account_id == row.id))
    mids = [r.id for r in conn.execute(select(MB.c.id).where(MB.c.account_id == row.id))]
    for chunk in chunks(mids):
        conn.execute(delete(M).where(M.c.mailbox_id.in_(chunk)))
        conn.execute(delete(X).where(X.c.mailbox_id.in_(chunk)))
    conn.execute(delete(MB).where(MB.c.account_id == row.id))
    sieve.delete_owner_scripts(conn, sieve.ACCOUNT, row.id)
    quarantine.forget_account(conn, row.id)
    conn.execute(delete(A).where(A.c.id == row.id))


def set_password_hash(conn: Connection, account_id: int, password_hash: str) -> None:
    conn.execute(update(A).where(A.c.id == account_id).values(password_hash=password_hash))


def update_account(conn: Connection, account_id: int, **values) -> AccountInfo:
    """Change the given fields (only those in :data:`UPDATABLE`)."""
    bad = set(values) - UPDATABLE
    if bad:
        raise Invalid(f"cannot update {sorted(bad)}")
    conn.execute(update(A).where(A.c.id == account_id).values(**values))
    row = conn.execute(select(A).where(A.c.id == account_id)).first()
    if row is None:
        raise NotFound(f"no account {account_id}")
    return account_info(row)


def set_quota(conn: Connection, address: str, quota_bytes: int) -> AccountInfo:
    acct = get_account(conn, address)
    if acct is None:
        raise NotFound(f"no account {address}")
    return update_account(conn, acct.id, quota_bytes=quota_bytes)


def quota(conn: Connection, account_id: int) -> tuple[int, int]:
    """(used bytes, limit bytes; 0 = unlimited)."""
    row = conn.execute(_QUOTA_OF, {"account_id": account_id}).first()
    if row is None:
        raise NotFound(f"no account {account_id}")
    return row.used_bytes, row.quota_bytes


# --------------------------------------------------------------------------------------------- aliases


def add_alias(conn: Connection, address: str, target: str) -> AliasInfo:
    """``address`` (or "@domain" for the catch-all) of a known domain forwards to ``target``."""
    address, target = normalize_address(address), target.strip()
    if not (address.startswith("@") or ADDR_RE.match(address)):
        raise Invalid(f"malformed alias address: {address!r}")
    if not ADDR_RE.match(target):
        raise Invalid(f"malformed target address: {target!r}")
    domain = address.rsplit("@", 1)[1]
    if conn.execute(select(D.c.id).where(D.c.name == domain)).first() is None:
        raise NotFound(f"unknown domain {domain}")
    if conn.execute(select(AL.c.id).where(AL.c.address == address, AL.c.target == target)).first():
        raise AlreadyExists(f"alias {address} -> {target} exists")
    conn.execute(insert(AL).values(address=address, target=target, created=time.time()))
    return AliasInfo(address, target)


def remove_alias(conn: Connection, address: str, target: str | None = None) -> int:
    """Remove ``address`` (only its ``target`` when given); returns how many rows went."""
    q = delete(AL).where(AL.c.address == normalize_address(address))
    if target:
        q = q.where(AL.c.target == target.strip())
    n = conn.execute(q).rowcount
    if not n:
        raise NotFound(f"no alias {address}" + (f" -> {target}" if target else ""))
    return n


def list_aliases(conn: Connection, domain: str | None = None) -> list[AliasInfo]:
    q = select(AL.c.address, AL.c.target).order_by(AL.c.address, AL.c.target)
    if domain:
        q = q.where(AL.c.address.like(f"%@{domain.lower()}"))
    return [AliasInfo(r.address, r.target) for r in conn.execute(q)]


def alias_targets(conn: Connection, address: str) -> list[str]:
    """Targets of the alias ``address`` (exact match; pass "@domain" for the catch-all)."""
    return [r.target for r in conn.execute(select(AL.c.target).where(
        AL.c.address == normalize_address(address)).order_by(AL.c.id))]


def addresses_of(conn: Connection, account_id: int) -> list[str]:
    """The account's own address and every alias that points only at it (the identities it may send as)."""
    row = conn.execute(select(A.c.address).where(A.c.id == account_id)).first()
    if row is None:
        return []
    own = row.address
    mine = select(AL.c.address).where(AL.c.target == own)
    # An alias with other targets too (a list: team@ -> alice, bob) is no identity of any one of them: sending as
    # it takes a grant (storage/sendgrants.py).
    shared = select(AL.c.address).where(AL.c.address.in_(mine), AL.c.target != own)
    aliases = [r.address for r in conn.execute(mine.where(AL.c.address.not_in(shared)))
               if not r.address.startswith("@")]
    return [own] + sorted(set(aliases))


# --------------------------------------------------------------------------------------------- shared mailboxes


def create_shared(conn: Connection, address: str, name: str = "", quota_bytes: int = 0) -> AccountInfo:
    """A shared mailbox receiving mail for ``address``, seen as ``Shared/<name>`` (default: the local part)."""
    address = normalize_address(address)
    if not ADDR_RE.match(address) or len(address) > 320:
        raise Invalid(f"malformed address: {address!r}")
    name = name or address.split("@", 1)[0]
    if not shared.SHARED_NAME_RE.fullmatch(name):
        raise Invalid(f"not a valid shared mailbox name: {name!r}")
    domain = address.rsplit("@", 1)[1]
    did = conn.execute(select(D.c.id).where(D.c.name == domain)).scalar()
    if did is None:
        raise NotFound(f"unknown domain {domain} (add it first: mailserver domain add {domain})")
    if conn.execute(select(A.c.id).where(A.c.address == address)).first():
        raise AlreadyExists(f"an account {address} exists")
    if conn.execute(select(A.c.id).where(A.c.shared_name == name)).first():
        raise AlreadyExists(f"a shared mailbox {name} exists")
    aid = conn.execute(insert(A).values(address=address, domain_id=did, password_hash="", display_name=name,
                                        quota_bytes=quota_bytes, used_bytes=0, enabled=True, signature="",
                                        uid_validity_seq=0, created=time.time(),
                                        shared_name=name)).inserted_primary_key[0]
    mailboxes.create_mailbox_row(conn, aid, "INBOX", subscribed=False)
    return account_info(conn.execute(select(A).where(A.c.id == aid)).first())
