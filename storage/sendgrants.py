"""Send grants: functions over an open transaction (``Store.transaction()``).

An account may submit mail under an address that is not its own (RFC 5322 3.6.2: ``From`` names the author,
``Sender`` the agent that sent it):

* :data:`SEND_AS`: the account may use the address as ``From:`` and as the envelope sender (MAIL FROM), as if it
  were its own (a shared address such as ``sales@``, a colleague's address, an alias of someone else).
* :data:`SEND_ON_BEHALF`: the account may put the address in ``From:`` only; the message then carries ``Sender:``
  naming the account (the submission check adds it when missing), and the envelope sender stays the account's own.

One grant per (account, address): granting again changes its kind. The address must be in a domain the store knows
(a grant never lets an account sign mail as someone else's domain). Grants are authorization data, read by
``mailserver.delivery.router.Router.sender_right``, the one check both MAIL FROM and the header check use; a
revoked grant is refused from the next message on (nothing caches grants).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Connection

from storage.errors import Invalid, NotFound
from storage.models import Account, Domain, SendGrant

G = SendGrant.__table__
A = Account.__table__
D = Domain.__table__

OWN = "own"  # not a grant: what Store.send_identities calls the account's own addresses and aliases
SEND_AS = "send-as"
SEND_ON_BEHALF = "send-on-behalf"
KINDS = (SEND_AS, SEND_ON_BEHALF)


@dataclass(frozen=True)
class GrantInfo:
    account: str  # the grantee's address
    address: str  # the address it may send as / on behalf of
    kind: str
    created: float


#: What an address looks like (the grantee is looked up, the granted address must be in a known domain).
_ADDRESS = re.compile(r"[^@\s]+@[^@\s]+")


def _address(address: str) -> str:
    address = address.strip().lower()
    if not _ADDRESS.fullmatch(address) or len(address) > 320:
        raise Invalid(f"malformed address: {address!r}")
    return address


def _account_id(conn: Connection, account: str) -> int:
    row = conn.execute(select(A.c.id).where(A.c.address == account.strip().lower())).first()
    if row is None:
        raise NotFound(f"no account {account}")
    return row.id


def grant(conn: Connection, account: str, address: str, kind: str) -> GrantInfo:
    """Let ``account`` send as (``kind`` :data:`SEND_AS`) or on behalf of (:data:`SEND_ON_BEHALF`) ``address``."""
    if kind not in KINDS:
        raise Invalid(f"a grant is one of {', '.join(KINDS)}, not {kind!r}")
    address = _address(address)
    aid = _account_id(conn, account)
    domain = address.rsplit("@", 1)[1]
    if conn.execute(select(D.c.id).where(D.c.name == domain)).first() is None:
        raise NotFound(f"unknown domain {domain}: grants are for addresses of our own domains")
    own = conn.execute(select(A.c.address).where(A.c.id == aid)).scalar_one()
    if own == address:
        raise Invalid(f"{address} is the account's own address")
    now = time.time()
    if conn.execute(update(G).where(G.c.account_id == aid, G.c.address == address)
                    .values(kind=kind, created=now)).rowcount == 0:
        conn.execute(insert(G).values(account_id=aid, address=address, kind=kind, created=now))
    return GrantInfo(own, address, kind, now)


def revoke(conn: Connection, account: str, address: str) -> None:
    """Remove ``account``'s grant on ``address`` (NotFound when there is none)."""
    aid = _account_id(conn, account)
    n = conn.execute(delete(G).where(G.c.account_id == aid, G.c.address == _address(address))).rowcount
    if not n:
        raise NotFound(f"{account} has no grant on {address}")


def list_grants(conn: Connection, account: str | None = None, address: str | None = None) -> list[GrantInfo]:
    """Every grant, or those of ``account``, or those on ``address``; by address, then account."""
    q = (select(A.c.address.label("account"), G.c.address, G.c.kind, G.c.created)
         .join(A, A.c.id == G.c.account_id).order_by(G.c.address, A.c.address))
    if account is not None:
        q = q.where(G.c.account_id == _account_id(conn, account))
    if address is not None:
        q = q.where(G.c.address == _address(address))
    return [GrantInfo(r.account, r.address, r.kind, r.created) for r in conn.execute(q)]


def grants_of(conn: Connection, account_id: int) -> list[tuple[str, str]]:
    """(address, kind) of every grant the account holds, by address."""
    return [(r.address, r.kind) for r in conn.execute(
        select(G.c.address, G.c.kind).where(G.c.account_id == account_id).order_by(G.c.address))]


def grant_kind(conn: Connection, account_id: int, address: str) -> str | None:
    """The kind of the account's grant on ``address`` (exact, lower-cased), or None."""
    return conn.execute(select(G.c.kind).where(G.c.account_id == account_id,
                                               G.c.address == address.lower())).scalar()


def forget_account(conn: Connection, account_id: int, address: str) -> None:
    """The account is going: its grants, and every grant on its address (a later account of that address must not
    inherit who may send as it)."""
    conn.execute(delete(G).where(G.c.account_id == account_id))
    conn.execute(delete(G).where(G.c.address == address.lower()))


def forget_domain(conn: Connection, domain: str) -> None:
    """The domain is going: every grant on one of its addresses."""
    conn.execute(delete(G).where(G.c.address.like(f"%@{domain.lower()}")))
