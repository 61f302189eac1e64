"""The built-in spam classifier's data: per-account token counts, what was trained, training jobs, correspondents.

* ``bayes_tokens`` - (account, token id) -> messages trained as spam and as ham that had the token, and when it
  was last trained.  Bounded per account (:func:`prune`): past ``max_tokens`` rows the least useful go first
  (seen in the fewest messages, then the longest untouched).
* ``bayes_totals`` - per account, how many messages are trained as spam and as ham.
* ``bayes_trained`` - (account, message key) -> the class it was trained as, so a message is never trained twice
  the same way, and retraining it the other way flips its counts.  The key is the message's blob id (the sha256
  of its stored bytes; a COPY shares it) or, for files trained from the command line, the sha256 of their bytes.
  Bounded per account (oldest forgotten first).
* ``bayes_jobs`` - training the store recorded in the same transaction as the user's action (a move into or out
  of Junk, ``$Junk``/``$NotJunk`` set); the trainer (``mailserver/inbound/classifier.py``) takes them off the
  reactor: reads the blob, tokenizes in the cpu pool, then :func:`learn` applies the counts and removes the job
  in one transaction (so two processes taking the same job train it once).
* ``bayes_senders`` - addresses the account sent mail to (submission) or replied to: its correspondents.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from sqlalchemy import bindparam, case, delete, func, insert, select, update
from sqlalchemy.engine import Connection

from storage import checkstate
from storage.models import BayesJob, BayesSender, BayesToken, BayesTotal, BayesTrained, Mailbox, Message
from storage.sql import chunks, on_sqlite

T = BayesToken.__table__
TOT = BayesTotal.__table__
TR = BayesTrained.__table__
J = BayesJob.__table__
S = BayesSender.__table__
MB = Mailbox.__table__
M = Message.__table__

SPAM, HAM = "spam", "ham"
JUNK, TRASH, OTHER = "junk", "trash", "other"
JUNK_KEYWORD, NOT_JUNK_KEYWORD = "$junk", "$notjunk"
TRAINING_KEYWORDS = frozenset((JUNK_KEYWORD, NOT_JUNK_KEYWORD))
#: Most remembered trained messages per account.
MAX_TRAINED = 100_000
#: Most correspondents kept per account.
MAX_SENDERS = 10_000


@dataclass(frozen=True)
class Job:
    id: int
    account_id: int
    blob_id: str
    klass: str


@dataclass(frozen=True)
class AccountCounts:
    spam: int
    ham: int
    tokens: dict[int, tuple[int, int]]
    known_senders: frozenset[str] = frozenset()


_ROLE_OF = select(MB.c.name, MB.c.special_use).where(MB.c.id == bindparam("mailbox_id"))  # every COPY/MOVE, twice


def mailbox_role(conn: Connection, mailbox_id: int) -> str:
    """Whether a mailbox is the account's Junk (special use ``\\Junk`` or the name "Junk"), its Trash, or other."""
    row = conn.execute(_ROLE_OF, {"mailbox_id": mailbox_id}).first()
    if row is None:
        return OTHER
    use, name = (row.special_use or "").lower(), (row.name or "").lower()
    if use == "\\junk" or name in ("junk", "spam"):
        return JUNK
    if use == "\\trash" or name == "trash":
        return TRASH
    return OTHER


def class_for_copy(src_role: str, dst_role: str) -> str | None:
    """What copying a message from a mailbox to another teaches: into Junk is spam, out of Junk (not into Trash:
    deleting spam says nothing) is ham."""
    if dst_role == JUNK and src_role != JUNK:
        return SPAM
    if src_role == JUNK and dst_role == OTHER:
        return HAM
    return None


def blobs_of(conn: Connection, mailbox_id: int, uids: Sequence[int]) -> list[str]:
    out: list[str] = []
    for chunk in chunks(list(uids)):
        out += [r[0] for r in conn.execute(select(M.c.blob_id).where(M.c.mailbox_id == mailbox_id,
                                                                     M.c.uid.in_(chunk)))]
    return out


def keywords_of(conn: Connection, mailbox_id: int, uids: Sequence[int]) -> dict[int, set[str]]:
    """uid -> its keywords (lower-cased), before a STORE changes them."""
    from storage.records import split_keywords

    out: dict[int, set[str]] = {}
    for chunk in chunks(list(uids)):
        for uid, kw in conn.execute(select(M.c.uid, M.c.keywords).where(M.c.mailbox_id == mailbox_id,
                                                                        M.c.uid.in_(chunk))):
            out[uid] = {k.lower() for k in split_keywords(kw)}
    return out


def note_training(conn: Connection, account_id: int, blob_ids: Sequence[str], klass: str, now: float) -> int:
    """Record training jobs for these messages (not for ones already trained, or about to be, as ``klass``);
    returns how many were recorded."""
    blob_ids = list(dict.fromkeys(blob_ids))
    if not blob_ids:
        return 0
    skip: set[str] = set()
    for chunk in chunks(blob_ids):
        skip |= {r[0] for r in conn.execute(select(TR.c.blob_id).where(
            TR.c.account_id == account_id, TR.c.blob_id.in_(chunk), TR.c.klass == klass))}
        pending = dict(conn.execute(select(J.c.blob_id, J.c.klass).where(J.c.account_id == account_id,
                                                                         J.c.blob_id.in_(chunk))).all())
        for blob_id, pending_class in pending.items():
            if pending_class == klass:
                skip.add(blob_id)
            else:  # the user changed their mind before the trainer got to it: the last word counts
                conn.execute(delete(J).where(J.c.account_id == account_id, J.c.blob_id == blob_id))
    rows = [dict(account_id=account_id, blob_id=b, klass=klass, created=now) for b in blob_ids if b not in skip]
    if rows:
        conn.execute(insert(J), rows)
    return len(rows)


def pending(conn: Connection, limit: int) -> list[Job]:
    rows = conn.execute(select(J.c.id, J.c.account_id, J.c.blob_id, J.c.klass).order_by(J.c.id).limit(limit))
    return [Job(*r) for r in rows]


def _insert_fn(conn: Connection):
    if on_sqlite(conn):
        from sqlalchemy.dialects.sqlite import insert as ins
    else:
        from sqlalchemy.dialects.postgresql import insert as ins
    return ins


def _totals(conn: Connection, account_id: int) -> tuple[int, int]:
    row = conn.execute(select(TOT.c.spam, TOT.c.ham).where(TOT.c.account_id == account_id)).first()
    return (row.spam, row.ham) if row is not None else (0, 0)


def _add_totals(conn: Connection, account_id: int, dspam: int, dham: int) -> None:
    ins = _insert_fn(conn)
    stmt = ins(TOT).values(account_id=account_id, spam=max(dspam, 0), ham=max(dham, 0))
    stmt = stmt.on_conflict_do_update(index_elements=[TOT.c.account_id], set_={
        "spam": case((TOT.c.spam + dspam < 0, 0), else_=TOT.c.spam + dspam),
        "ham": case((TOT.c.ham + dham < 0, 0), else_=TOT.c.ham + dham)})
    conn.execute(stmt)
    checkstate.bump(conn, account_id, checkstate.TRAINING)


def _count_up(conn: Connection, account_id: int, token_ids: Sequence[int], klass: str, now: float) -> None:
    ins = _insert_fn(conn)
    column = T.c.spam if klass == SPAM else T.c.ham
    stmt = ins(T)
    # One cached statement run for many rows (executemany), not a new VALUES list compiled per message.
    stmt = stmt.on_conflict_do_update(index_elements=[T.c.account_id, T.c.token],
                                      set_={column.name: column + 1, "touched": stmt.excluded.touched})
    one = int(klass == SPAM), int(klass == HAM)
    conn.execute(stmt, [dict(account_id=account_id, token=t, spam=one[0], ham=one[1], touched=now)
                        for t in sorted(set(token_ids))])


def _count_down(conn: Connection, account_id: int, token_ids: Sequence[int], klass: str) -> None:
    column = T.c.spam if klass == SPAM else T.c.ham
    for chunk in chunks(sorted(set(token_ids))):
        conn.execute(update(T).where(T.c.account_id == account_id, T.c.token.in_(chunk))
                     .values({column.name: case((column > 0, column - 1), else_=0)}))


def learn(conn: Connection, account_id: int, key: str, klass: str, token_ids: Sequence[int] | None, now: float, *,
          job_id: int | None = None, max_tokens: int = 0) -> str:
    """Train one message as ``klass``: "trained", "retrained" (it was trained the other way: its counts flip),
    "already" (trained so before) or "gone" (``job_id`` was taken by another process, or there are no tokens)."""
    if klass not in (SPAM, HAM):
        raise ValueError(f"unknown class {klass!r}")
    if job_id is not None:
        if conn.execute(delete(J).where(J.c.id == job_id)).rowcount == 0:
            return "gone"
    if token_ids is None:
        return "gone"
    before = conn.execute(select(TR.c.klass).where(TR.c.account_id == account_id, TR.c.blob_id == key)).scalar()
    if before == klass:
        return "already"
    other = HAM if klass == SPAM else SPAM
    if before is not None:
        _count_down(conn, account_id, token_ids, other)
        conn.execute(update(TR).where(TR.c.account_id == account_id, TR.c.blob_id == key)
                     .values(klass=klass, trained=now))
    else:
        conn.execute(insert(TR).values(account_id=account_id, blob_id=key, klass=klass, trained=now))
    _count_up(conn, account_id, token_ids, klass, now)
    flip = -1 if before is not None else 0
    _add_totals(conn, account_id, 1 if klass == SPAM else flip, 1 if klass == HAM else flip)
    if max_tokens > 0:
        prune(conn, account_id, max_tokens)
    if before is None:
        _forget_oldest(conn, TR, TR.c.trained, account_id, MAX_TRAINED)
    return "retrained" if before is not None else "trained"


def prune(conn: Connection, account_id: int, max_tokens: int) -> int:
    """Keep at most ``max_tokens`` tokens of the account: when over, remove the least useful down to 90 % of it
    (seen in the fewest messages first, then the longest untouched).  Returns how many were removed."""
    n = conn.execute(select(func.count()).select_from(T).where(T.c.account_id == account_id)).scalar() or 0
    if n <= max_tokens:
        return 0
    drop = n - int(max_tokens * 0.9)
    victims = (select(T.c.token).where(T.c.account_id == account_id)
               .order_by((T.c.spam + T.c.ham).asc(), T.c.touched.asc(), T.c.token.asc()).limit(drop))
    ids = [r[0] for r in conn.execute(victims)]
    for chunk in chunks(ids):
        conn.execute(delete(T).where(T.c.account_id == account_id, T.c.token.in_(chunk)))
    return len(ids)


def _forget_oldest(conn: Connection, table, when, account_id: int, limit: int) -> None:
    n = conn.execute(select(func.count()).select_from(table).where(table.c.account_id == account_id)).scalar() or 0
    if n <= limit:
        return
    old = [r[0] for r in conn.execute(select(table.c.id).where(table.c.account_id == account_id)
                                      .order_by(when.asc(), table.c.id.asc()).limit(n - limit))]
    for chunk in chunks(old):
        conn.execute(delete(table).where(table.c.id.in_(chunk)))


def token_count(conn: Connection, account_id: int) -> int:
    return conn.execute(select(func.count()).select_from(T).where(T.c.account_id == account_id)).scalar() or 0


def trained_as(conn: Connection, account_id: int, key: str) -> str | None:
    return conn.execute(select(TR.c.klass).where(TR.c.account_id == account_id, TR.c.blob_id == key)).scalar()


def counts(conn: Connection, account_ids: Sequence[int], token_ids: Sequence[int] | None,
           senders: Sequence[str] = (), min_spam: int = 0, min_ham: int = 0,
           known_totals: dict[int, tuple[int, int]] | None = None) -> dict[int, AccountCounts]:
    """For each account: its trained totals, its counts of these tokens (only for accounts that trained at least
    ``min_spam`` spam and ``min_ham`` ham messages; none when ``token_ids`` is None), and which of ``senders`` are
    its correspondents.  One read for every recipient of a message.  ``known_totals`` are totals the caller read
    a moment ago (not read again)."""
    account_ids = list(dict.fromkeys(account_ids))
    out: dict[int, AccountCounts] = {}
    if not account_ids:
        return out
    totals = dict(known_totals or {})
    unknown = [a for a in account_ids if a not in totals]
    if unknown:
        totals.update({r.account_id: (r.spam, r.ham) for r in conn.execute(_TOTALS_OF, {"accounts": unknown})})
    senders = [s.lower() for s in senders if s]
    for a in account_ids:
        spam, ham = totals.get(a, (0, 0))
        tokens: dict[int, tuple[int, int]] = {}
        if (spam or ham) and spam >= min_spam and ham >= min_ham and token_ids:
            for chunk in chunks(sorted(set(token_ids))):
                for r in conn.execute(_TOKENS_OF, {"account": a, "tokens": chunk}):
                    tokens[r.token] = (r.spam, r.ham)
        known = frozenset(r[0] for r in conn.execute(_KNOWN_OF, {"account": a, "senders": senders})) \
            if senders else frozenset()
        out[a] = AccountCounts(spam, ham, tokens, known)
    return out


# The statements of counts(), built once (it runs for every message the classifier looks at).
_TOTALS_OF = select(TOT.c.account_id, TOT.c.spam, TOT.c.ham).where(
    TOT.c.account_id.in_(bindparam("accounts", expanding=True)))
_TOKENS_OF = select(T.c.token, T.c.spam, T.c.ham).where(T.c.account_id == bindparam("account"),
                                                       T.c.token.in_(bindparam("tokens", expanding=True)))
_KNOWN_OF = select(S.c.address).where(S.c.account_id == bindparam("account"),
                                      S.c.address.in_(bindparam("senders", expanding=True)))


def note_senders(conn: Connection, account_id: int, addresses: Sequence[str], now: float) -> None:
    """Remember that the account wrote to (or replied to) these addresses."""
    addresses = list(dict.fromkeys(a.strip().lower() for a in addresses if a and "@" in a and len(a) <= 320))
    if not addresses:
        return
    ins = _insert_fn(conn)
    stmt = ins(S)
    stmt = stmt.on_conflict_do_update(index_elements=[S.c.account_id, S.c.address],
                                      set_={"count": S.c.count + 1, "last": stmt.excluded.last})
    conn.execute(stmt, [dict(account_id=account_id, address=a, count=1, last=now) for a in addresses])
    _forget_oldest(conn, S, S.c.last, account_id, MAX_SENDERS)
    checkstate.bump(conn, account_id, checkstate.SENDERS)


def from_addresses(conn: Connection, mailbox_id: int, uids: Sequence[int]) -> list[str]:
    """The From addresses of these messages (from their stored ENVELOPE)."""
    import json

    out = []
    for chunk in chunks(list(uids)):
        for (env,) in conn.execute(select(M.c.envelope).where(M.c.mailbox_id == mailbox_id, M.c.uid.in_(chunk))):
            try:
                mbox = json.loads(env or "null")[2][0]
                if mbox[2] and mbox[3]:
                    out.append(f"{mbox[2]}@{mbox[3]}".lower())
            except (ValueError, TypeError, IndexError, KeyError):
                continue
    return out
