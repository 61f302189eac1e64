"""Shared mailboxes, RFC 4314 ACLs, groups and per-reader \\Seen: functions over an open transaction.

Model (decisions a caller must know):

* A **shared mailbox** is an account row with ``shared_name`` set: owned by its domain, no person, no login (its
  password hash is empty, which never verifies).  It receives mail for its address like any account (the router
  needs no change) into its ``INBOX``, which readers see as ``Shared/<shared_name>``; its other mailboxes are
  ``Shared/<shared_name>/<name>``.  Its mailboxes keep \\Seen per reader (``mailboxes.seen_per_reader``).
* **Names across namespaces** (RFC 2342): ``Other Users/<address>/<name>`` is another person's mailbox,
  ``Shared/<shared_name>[/<name>]`` a shared one, anything else the principal's own.  :func:`resolve` turns a name
  into (owner, stored name); :func:`display_name` gives it back.  Nobody reaches their own mailboxes through
  ``Other Users/``.
* **ACL rows** give an identifier rights on one mailbox: an account's address, ``anyone`` (every signed-in
  account) or ``$group`` (members of ``account_groups``).  The owner of a personal mailbox has every right without a
  row (``mailserver.access``: the owner rule); a shared mailbox has no owner, only rows.  A **negative row**
  (RFC 4314 2) is stored with its identifier as written, ``-bob@x``: a reader's rights are the union of the positive
  rows that name them minus the union of the negative ones (the owner rule still gives the owner everything).
* **Per-reader \\Seen**: the messages' own ``flags`` never hold \\Seen in a ``seen_per_reader`` mailbox (every
  write strips it, so ``unseen_count`` equals ``message_count`` there); each reader's \\Seen is a ``reader_seen``
  row, laid over the shared flags when that reader reads.
"""

from __future__ import annotations

import re

from sqlalchemy import bindparam, delete, func, insert, select
from sqlalchemy.engine import Connection

from storage import mailboxes
from storage.errors import AlreadyExists, Invalid, NotFound
from storage.models import (
    FLAG_SEEN,
    Account,
    AccountGroup,
    Domain,
    GroupMember,
    Mailbox,
    MailboxAcl,
    Message,
    ReaderRecent,
    ReaderSeen,
)
from storage.records import MailboxInfo, mailbox_info
from storage.sql import chunks

A = Account.__table__
ACL = MailboxAcl.__table__
D = Domain.__table__
G = AccountGroup.__table__
GM = GroupMember.__table__
M = Message.__table__
MB = Mailbox.__table__
RS = ReaderSeen.__table__
RR = ReaderRecent.__table__

OTHER_USERS = "Other Users/"
SHARED = "Shared/"
ANYONE = "anyone"
RIGHT_LETTERS = "lrswipkxtea"
_GROUP_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_ADDRESS_RE = re.compile(r"[^@\s\x00-\x1f]+@[^@\s\x00-\x1f]+")
SHARED_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
#: Entries one mailbox's ACL may hold (SETACL past it is refused).
MAX_ACL_ENTRIES = 256


# --------------------------------------------------------------------------------------------- rights as text


def normalize_rights(letters: str) -> str:
    """RFC 4314 2.1.1: the obsolete ``c`` is ``k``, ``d`` is ``x t e``; the letters in the RFC's order.  An unknown
    letter is Invalid."""
    out = set()
    for ch in letters:
        if ch == "c":
            out.add("k")
        elif ch == "d":
            out.update("xte")
        elif ch in RIGHT_LETTERS:
            out.add(ch)
        else:
            raise Invalid(f"unknown right {ch!r}")
    return "".join(ch for ch in RIGHT_LETTERS if ch in out)


def _union(rows) -> str:
    have = set()
    for r in rows:
        have.update(r)
    return "".join(ch for ch in RIGHT_LETTERS if ch in have)


# --------------------------------------------------------------------------------------------- identifiers


# The statements every page and LIST runs, built once (building a select costs more than SQLite running it).
#: The account's address, with one row per group it is in (one row with a NULL name when in none).
_IDENTIFIERS = select(A.c.address, G.c.name).select_from(
    A.outerjoin(GM, GM.c.account_id == A.c.id).outerjoin(G, G.c.id == GM.c.group_id)).where(
    A.c.id == bindparam("account_id"))
#: The ACL rows naming any of ``identifiers`` on mailboxes of other accounts than ``account_id``.
_ACL_NAMING = select(ACL.c.mailbox_id, ACL.c.identifier, ACL.c.rights).join(MB, MB.c.id == ACL.c.mailbox_id).where(
    ACL.c.identifier.in_(bindparam("identifiers", expanding=True)), MB.c.account_id != bindparam("account_id"))


#: Built once: SELECT, EXAMINE, STATUS and APPEND resolve a mailbox on every command, and building a select (its
#: expressions and cache key) costs more than SQLite running it.
_MAILBOX_BY_NAME = select(MB).where(MB.c.account_id == bindparam("account_id"), MB.c.name == bindparam("name"))


def identifiers_of(conn: Connection, account_id: int) -> list[str]:
    """The ACL identifiers that name ``account_id``: its address, ``anyone`` and ``$group`` of each group."""
    rows = conn.execute(_IDENTIFIERS, {"account_id": account_id}).all()
    if not rows:
        return []
    return [rows[0].address, ANYONE] + ["$" + r.name for r in rows if r.name is not None]


def check_identifier(conn: Connection, identifier: str, *, existing: bool = True) -> str:
    """The identifier as stored (addresses lower-cased); Invalid when it names no group, or (``existing``) no
    account.  IMAP's SETACL passes ``existing=False``: an entry for any well-formed address is kept, so SETACL does
    not tell a user which addresses have accounts (the entry applies once such an account exists)."""
    ident = identifier.strip()
    if ident.startswith("-"):
        # RFC 4314 2: "-identifier" holds rights taken away from what identifier's other entries give.
        if ident[1:2] in ("-", ""):
            raise Invalid("an identifier is an address, anyone or $group, optionally after one -")
        return "-" + check_identifier(conn, ident[1:], existing=existing)
    if ident.lower() == ANYONE:
        return ANYONE
    if ident.startswith("$"):
        if conn.execute(select(G.c.id).where(G.c.name == ident[1:])).first() is None:
            raise Invalid(f"no group {ident[1:]}")
        return ident
    address = ident.lower()
    if not existing:
        if not _ADDRESS_RE.fullmatch(address) or len(address) > 320:
            raise Invalid("an identifier is an address, anyone or $group")
        return address
    if conn.execute(select(A.c.id).where(A.c.address == address, A.c.shared_name.is_(None))).first() is None:
        raise Invalid(f"no account {address}")
    return address


# --------------------------------------------------------------------------------------------- names


def display_name(owner_address: str, shared_name: str | None, stored: str) -> str:
    """The name a reader other than the owner sees for mailbox ``stored`` of that owner."""
    if shared_name:
        return SHARED + shared_name + ("" if stored == "INBOX" else "/" + stored)
    return OTHER_USERS + owner_address + "/" + stored


def split_name(name: str) -> tuple[str, str, str] | None:
    """(namespace, owner key, stored name) for a name in the other-users or shared namespace, else None.
    The owner key is an address (``Other Users/``) or a shared name (``Shared/``); the stored name is "" for a
    level that is no mailbox (``Other Users/alice@example.test``)."""
    if name.startswith(OTHER_USERS):
        rest = name[len(OTHER_USERS):]
        owner, _, stored = rest.partition("/")
        return OTHER_USERS, owner.lower(), mailboxes.normalize_mailbox_name(stored) if stored else ""
    if name.startswith(SHARED):
        rest = name[len(SHARED):]
        owner, _, stored = rest.partition("/")
        return SHARED, owner, mailboxes.normalize_mailbox_name(stored) if stored else "INBOX"
    return None


def resolve_owner(conn: Connection, account_id: int, name: str) -> tuple[int, str, str] | None:
    """(owner account id, stored name, owner's address) of ``name`` in ``account_id``'s view, or None when the name
    leads nowhere (an unknown owner, one's own account reached through ``Other Users/``)."""
    parts = split_name(name)
    if parts is None:
        return account_id, name, ""
    ns, key, stored = parts
    if ns == OTHER_USERS:
        row = conn.execute(select(A.c.id, A.c.address).where(A.c.address == key,
                                                             A.c.shared_name.is_(None))).first()
    else:
        row = conn.execute(select(A.c.id, A.c.address).where(A.c.shared_name == key)).first()
    if row is None or row.id == account_id or not stored:
        return None
    return row.id, stored, row.address


def resolve(conn: Connection, account_id: int, name: str) -> tuple[MailboxInfo, str] | None:
    """The mailbox ``name`` names for ``account_id`` (as that reader sees it: ``name`` is the reader's spelling,
    ``stored_name`` the owner's) and the rights the ACL gives the reader there, or None when there is none."""
    target = resolve_owner(conn, account_id, name)
    if target is None:
        return None
    owner, stored, _address = target
    row = conn.execute(_MAILBOX_BY_NAME,
                       {"account_id": owner, "name": mailboxes.normalize_mailbox_name(stored)}).first()
    if row is None:
        return None
    if owner == account_id:  # the owner rule gives every right: no ACL to read (one query, as before sharing)
        return mailbox_info(row), ""
    rights = acl_rights(conn, row.id, account_id)
    info = _for_reader(conn, mailbox_info(row), account_id, rights)
    return _as_seen_by_reader(info, name_for(conn, info)), rights


def mailbox_for_reader(conn: Connection, mailbox_id: int, account_id: int) -> MailboxInfo | None:
    """The mailbox by id as ``account_id`` sees it (its name in their namespaces, their ACL rights, their unseen)."""
    row = conn.execute(mailboxes.MAILBOX_BY_ID, {"mailbox_id": mailbox_id}).first()
    if row is None:
        return None
    if row.account_id == account_id:  # the owner rule gives every right: no ACL to read (as resolve)
        return _for_reader(conn, mailbox_info(row), account_id, "")
    info = _for_reader(conn, mailbox_info(row), account_id, acl_rights(conn, row.id, account_id))
    return _as_seen_by_reader(info, name_for(conn, info))


def _for_reader(conn: Connection, info: MailboxInfo, account_id: int, rights: str) -> MailboxInfo:
    from dataclasses import replace

    unseen = (reader_unseen(conn, info.id, account_id, info.message_count) if info.seen_per_reader
              else info.unseen_count)
    return replace(info, reader=account_id, reader_rights=rights, unseen_count=unseen)


def name_for(conn: Connection, mailbox: MailboxInfo) -> str:
    row = conn.execute(select(A.c.address, A.c.shared_name).where(A.c.id == mailbox.account_id)).first()
    return display_name(row.address, row.shared_name, mailbox.name)


def _as_seen_by_reader(info: MailboxInfo, shown: str) -> MailboxInfo:
    from dataclasses import replace

    return replace(info, name=shown, stored_name=info.name, subscribed=False)


def _effective(rows) -> str:
    """RFC 4314 2: the union of the positive rows' rights minus the union of the negative (``-ident``) rows'."""
    plus, minus = [], []
    for ident, rights in rows:
        (minus if ident.startswith("-") else plus).append(rights)
    taken = set(_union(minus))
    return "".join(ch for ch in _union(plus) if ch not in taken)


def _with_negatives(idents: list[str]) -> list[str]:
    return idents + ["-" + i for i in idents]


def acl_rights(conn: Connection, mailbox_id: int, account_id: int) -> str:
    """The rights the ACL rows of ``mailbox_id`` give ``account_id``, negative rows applied (the owner rule is not
    applied here: the owner of a personal mailbox keeps every right)."""
    idents = identifiers_of(conn, account_id)
    if not idents:
        return ""
    return _effective((r.identifier, r.rights) for r in conn.execute(select(ACL.c.identifier, ACL.c.rights).where(
        ACL.c.mailbox_id == mailbox_id, ACL.c.identifier.in_(_with_negatives(idents)))))


def shared_with(conn: Connection, account_id: int) -> list[tuple[MailboxInfo, str]]:
    """Other accounts' mailboxes on which an ACL row names ``account_id``: (mailbox as the reader sees it, rights)."""
    idents = identifiers_of(conn, account_id)
    if not idents:
        return []
    rows: dict[int, list[tuple[str, str]]] = {}
    for r in conn.execute(_ACL_NAMING, {"identifiers": _with_negatives(idents), "account_id": account_id}):
        rows.setdefault(r.mailbox_id, []).append((r.identifier, r.rights))
    rights = {mid: _effective(entries) for mid, entries in rows.items()}
    rights = {mid: letters for mid, letters in rights.items() if letters}
    out = []
    for chunk in chunks(sorted(rights)):
        for r in conn.execute(select(MB, A.c.address.label("owner_address"), A.c.shared_name).join(
                A, A.c.id == MB.c.account_id).where(MB.c.id.in_(chunk))):
            letters = rights[r.id]
            info = _for_reader(conn, mailbox_info(r), account_id, letters)
            shown = display_name(r.owner_address, r.shared_name, info.name)
            out.append((_as_seen_by_reader(info, shown), letters))
    out.sort(key=lambda p: p[0].name)
    return out


def reader_mailboxes(conn: Connection, account_id: int) -> list[MailboxInfo]:
    """Every mailbox ``account_id`` has rights on, as it sees them: its own by name (each as
    :func:`mailbox_for_reader` gives it), then those of :func:`shared_with` (by the name the reader sees)."""
    own = [_for_reader(conn, m, account_id, "") for m in mailboxes.list_mailboxes(conn, account_id)]
    return own + [m for m, _letters in shared_with(conn, account_id)]


# --------------------------------------------------------------------------------------------- ACL rows


def get_acl(conn: Connection, mailbox_id: int) -> list[tuple[str, str]]:
    return [(r.identifier, r.rights) for r in conn.execute(
        select(ACL.c.identifier, ACL.c.rights).where(ACL.c.mailbox_id == mailbox_id).order_by(ACL.c.identifier))]


def set_acl(conn: Connection, mailbox_id: int, identifier: str, rights: str, *, existing: bool = True) -> str:
    """RFC 4314 3.1 SETACL: ``rights`` replace the identifier's, or with a leading ``+``/``-`` are added/removed.
    Returns the identifier's rights now ("" removes the row).  ``existing``: see :func:`check_identifier`."""
    ident = check_identifier(conn, identifier, existing=existing)
    if conn.execute(select(MB.c.id).where(MB.c.id == mailbox_id)).first() is None:
        raise NotFound("no such mailbox")
    cur = conn.execute(select(ACL.c.rights).where(ACL.c.mailbox_id == mailbox_id,
                                                  ACL.c.identifier == ident)).scalar()
    mode = rights[:1] if rights[:1] in ("+", "-") else ""
    letters = normalize_rights(rights[1:] if mode else rights)
    if mode == "+":
        new = _union([cur or "", letters])
    elif mode == "-":
        new = "".join(ch for ch in (cur or "") if ch not in letters)
    else:
        new = letters
    conn.execute(delete(ACL).where(ACL.c.mailbox_id == mailbox_id, ACL.c.identifier == ident))
    if new:
        count = conn.execute(select(func.count()).select_from(ACL).where(ACL.c.mailbox_id == mailbox_id)).scalar()
        if count >= MAX_ACL_ENTRIES:
            raise Invalid("too many ACL entries on this mailbox")
        conn.execute(insert(ACL).values(mailbox_id=mailbox_id, identifier=ident, rights=new))
    return new


def inherit_acl(conn: Connection, account_id: int, created: list[tuple[int, str]]) -> None:
    """New mailboxes (id, stored name, parents first) take the ACL of their parent, as Dovecot does: the nearest
    existing ancestor's, or in a shared mailbox's account that of its INBOX (``Shared/<name>`` is their parent)."""
    for mailbox_id, name in created:
        parent = None
        parts = name.split("/")
        for i in range(len(parts) - 1, 0, -1):
            parent = conn.execute(select(MB.c.id).where(MB.c.account_id == account_id,
                                                        MB.c.name == "/".join(parts[:i]))).scalar()
            if parent is not None:
                break
        if parent is None and name != "INBOX" and is_shared_account(conn, account_id):
            parent = conn.execute(select(MB.c.id).where(MB.c.account_id == account_id,
                                                        MB.c.name == "INBOX")).scalar()
        if parent is None:
            continue
        rows = [{"mailbox_id": mailbox_id, "identifier": i, "rights": r} for i, r in get_acl(conn, parent)]
        if rows:
            conn.execute(insert(ACL), rows)


def delete_acl(conn: Connection, mailbox_id: int, identifier: str) -> bool:
    ident = identifier.strip()
    neg = "-" if ident.startswith("-") else ""
    ident = ident[1:] if neg else ident
    ident = ANYONE if ident.lower() == ANYONE else (ident if ident.startswith("$") else ident.lower())
    ident = neg + ident
    return conn.execute(delete(ACL).where(ACL.c.mailbox_id == mailbox_id,
                                          ACL.c.identifier == ident)).rowcount > 0


# --------------------------------------------------------------------------------------------- groups


def _group_id(conn: Connection, name: str) -> int:
    gid = conn.execute(select(G.c.id).where(G.c.name == name)).scalar()
    if gid is None:
        raise NotFound(f"no group {name}")
    return gid


def add_group(conn: Connection, name: str) -> None:
    name = name.lstrip("$")
    if not _GROUP_RE.fullmatch(name):
        raise Invalid(f"not a valid group name: {name!r}")
    if conn.execute(select(G.c.id).where(G.c.name == name)).first():
        raise AlreadyExists(f"group {name} exists")
    conn.execute(insert(G).values(name=name))


def remove_group(conn: Connection, name: str) -> None:
    name = name.lstrip("$")
    gid = _group_id(conn, name)
    conn.execute(delete(GM).where(GM.c.group_id == gid))
    conn.execute(delete(ACL).where(ACL.c.identifier == "$" + name))
    conn.execute(delete(G).where(G.c.id == gid))


def list_groups(conn: Connection) -> list[tuple[str, list[str]]]:
    out = []
    for g in conn.execute(select(G.c.id, G.c.name).order_by(G.c.name)).all():
        out.append((g.name, [r.address for r in conn.execute(
            select(A.c.address).join(GM, GM.c.account_id == A.c.id).where(GM.c.group_id == g.id)
            .order_by(A.c.address))]))
    return out


def set_member(conn: Connection, name: str, address: str, member: bool) -> None:
    gid = _group_id(conn, name.lstrip("$"))
    aid = conn.execute(select(A.c.id).where(A.c.address == address.strip().lower(),
                                            A.c.shared_name.is_(None))).scalar()
    if aid is None:
        raise NotFound(f"no account {address}")
    conn.execute(delete(GM).where(GM.c.group_id == gid, GM.c.account_id == aid))
    if member:
        conn.execute(insert(GM).values(group_id=gid, account_id=aid))


# --------------------------------------------------------------------------------------------- shared accounts


def list_shared(conn: Connection) -> list[tuple[str, str]]:
    """(shared name, address) of every shared mailbox."""
    return [(r.shared_name, r.address) for r in conn.execute(
        select(A.c.shared_name, A.c.address).where(A.c.shared_name.is_not(None)).order_by(A.c.shared_name))]


def shared_account(conn: Connection, key: str) -> int | None:
    """The shared mailbox's account id, by shared name or address."""
    return conn.execute(select(A.c.id).where(A.c.shared_name.is_not(None)).where(
        (A.c.shared_name == key) | (A.c.address == key.strip().lower()))).scalar()


def is_shared_account(conn: Connection, account_id: int) -> bool:
    return conn.execute(select(A.c.shared_name).where(A.c.id == account_id)).scalar() is not None


# --------------------------------------------------------------------------------------------- per-reader \Seen


def seen_uids(conn: Connection, mailbox_id: int, reader: int, uids=None) -> set[int]:
    q = select(RS.c.uid).where(RS.c.mailbox_id == mailbox_id, RS.c.account_id == reader)
    if uids is None:
        return {r.uid for r in conn.execute(q)}
    out: set[int] = set()
    for chunk in chunks(sorted(set(uids))):
        out.update(r.uid for r in conn.execute(q.where(RS.c.uid.in_(chunk))))
    return out


def mark_seen(conn: Connection, mailbox_id: int, reader: int, add=(), remove=()) -> None:
    if add:
        conn.execute(insert(RS), [{"mailbox_id": mailbox_id, "account_id": reader, "uid": u} for u in add])
    for chunk in chunks(sorted(set(remove))):
        conn.execute(delete(RS).where(RS.c.mailbox_id == mailbox_id, RS.c.account_id == reader,
                                      RS.c.uid.in_(chunk)))


_FORGET_SEEN = delete(RS).where(RS.c.mailbox_id == bindparam("mailbox_id"),
                               RS.c.uid.in_(bindparam("uids", expanding=True)))


def forget_seen(conn: Connection, mailbox_id: int, uids) -> None:
    """Expunged messages take every reader's \\Seen with them."""
    for chunk in chunks(sorted(set(uids))):
        conn.execute(_FORGET_SEEN, {"mailbox_id": mailbox_id, "uids": list(chunk)})


def overlay_seen(metas: list, seen: set[int]) -> list:
    """``MessageMeta`` rows with the reader's \\Seen laid over the shared flags."""
    if not seen:
        return metas
    return [m._replace(flags=m.flags | FLAG_SEEN) if m.uid in seen else m for m in metas]


def reader_unseen(conn: Connection, mailbox_id: int, reader: int, total: int | None = None) -> int:
    """STATUS UNSEEN of a ``seen_per_reader`` mailbox for ``reader``; ``total``: its ``message_count`` when the
    caller read the row in this transaction."""
    if total is None:
        total = conn.execute(select(MB.c.message_count).where(MB.c.id == mailbox_id)).scalar() or 0
    seen = conn.execute(select(func.count()).select_from(RS).join(
        M, (M.c.mailbox_id == RS.c.mailbox_id) & (M.c.uid == RS.c.uid)).where(
        RS.c.mailbox_id == mailbox_id, RS.c.account_id == reader)).scalar() or 0
    return max(total - seen, 0)



# --------------------------------------------------------------------------------------------- per-reader \Recent


def reader_recent_last(conn: Connection, mailbox_id: int, reader: int, uid_validity: int) -> int:
    """The highest UID one of ``reader``'s sessions took as \\Recent in this incarnation of the mailbox."""
    row = conn.execute(select(RR.c.uid_validity, RR.c.last_uid).where(RR.c.mailbox_id == mailbox_id,
                                                                       RR.c.account_id == reader)).first()
    return row.last_uid if row is not None and row.uid_validity == uid_validity else 0


def claim_reader_recent(conn: Connection, mailbox_id: int, reader: int, uid_validity: int, up_to: int) -> int:
    """Take every UID up to ``up_to`` for one of ``reader``'s sessions; returns how far they had been taken before
    (the caller's are the UIDs above that).  The row is written under the write transaction's lock."""
    from sqlalchemy import update

    prev = reader_recent_last(conn, mailbox_id, reader, uid_validity)
    if up_to <= prev:
        return prev
    done = conn.execute(update(RR).where(RR.c.mailbox_id == mailbox_id, RR.c.account_id == reader).values(
        uid_validity=uid_validity, last_uid=up_to)).rowcount
    if not done:
        conn.execute(insert(RR).values(mailbox_id=mailbox_id, account_id=reader, uid_validity=uid_validity,
                                       last_uid=up_to))
    return prev
