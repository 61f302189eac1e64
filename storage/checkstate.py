"""What the inbound checks read of an account, in one read per message, and the versions that let them cache it.

The spam policy needs a recipient's own sender rules (``storage/quarantine.py``), the classifier its trained totals,
its correspondents and, when it votes, its counts of the message's tokens (``storage/bayes.py``).  These change
rarely next to how often mail arrives, so each process keeps what it read (:class:`AccountState`, cached by
``mailserver/inbound/accountstate.py``) and :func:`read` only reads again what changed:

* ``check_versions`` has one row per account with a version for each kind of data (:data:`RULES`,
  :data:`SENDERS`, :data:`TRAINING`).  :func:`bump` moves one on **in the transaction that changes the data**
  (``set_sender_rule``, ``note_senders``, ``learn``), so it commits with it, on every node at once.
* :func:`read` reads the versions of every recipient account of a message first (one statement), then, in the same
  transaction, only the data whose version differs from the caller's copy.  Reading the version before the data
  is what makes this safe under PostgreSQL's READ COMMITTED (each statement its own snapshot): data read after a
  version is at least as new as that version, so a copy is never kept under a version newer than its data (at
  worst a copy newer than its version, which the next message reads again).  A held copy is used only when its
  version is the one just read, so a change committed anywhere before the read shows in that message's verdict.
* No row, or a version of 0, means that data never changed, so there is none: an account that never had a rule,
  a correspondent or training costs no further statement (the migration gives every account that existed before
  it a row).  A new row starts at a random version, so an account id used again (SQLite) cannot meet a version
  that a process cached for the account it used to name.

Cost per message and every recipient together: one transaction with one statement (the versions) when the copies
are current; a statement per changed kind otherwise; token counts only for accounts whose classifier votes.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field, replace
from typing import Mapping, Sequence

from sqlalchemy import bindparam, select, text
from sqlalchemy.engine import Connection

from storage.models import BayesSender, BayesToken, BayesTotal, CheckVersion, QuarantineSender
from storage.sql import CHUNK, chunks

V = CheckVersion.__table__
R = QuarantineSender.__table__
TOT = BayesTotal.__table__
T = BayesToken.__table__
S = BayesSender.__table__

RULES, SENDERS, TRAINING = "rules", "senders", "training"
#: The most rules of one account kept as a whole; an account with more has the rules that apply to the message's
#: senders read with each message.
MAX_HELD_RULES = 200
#: The most correspondent answers (yes and no) kept per account; past it the copy starts again.
MAX_HELD_SENDERS = 64

_BUMP = {kind: text(f"INSERT INTO check_versions (account_id, rules, senders, training) "
                    f"VALUES (:account, :start, :start, :start) "
                    f"ON CONFLICT (account_id) DO UPDATE SET {kind} = check_versions.{kind} + 1")
         for kind in (RULES, SENDERS, TRAINING)}


@dataclass(frozen=True)
class Versions:
    rules: int = 0
    senders: int = 0
    training: int = 0


@dataclass(frozen=True)
class AccountState:
    """What the checks know of one account, as of ``versions``.

    ``rules``: every sender rule of the account when ``rules_complete``, else only those that apply to the
    addresses of the message it was read for (an account with more than :data:`MAX_HELD_RULES`).  ``totals``:
    messages trained as (spam, ham).  ``known``: address -> whether it is a correspondent, for the addresses asked
    so far (yes and no answers)."""

    versions: Versions
    rules: dict[str, str] = field(default_factory=dict)
    rules_complete: bool = True
    totals: tuple[int, int] = (0, 0)
    known: dict[str, bool] = field(default_factory=dict)

    def known_senders(self, senders: Sequence[str]) -> frozenset[str]:
        return frozenset(s for s in senders if self.known.get(s.lower()))


def bump(conn: Connection, account_id: int, kind: str) -> None:
    """Move ``kind``'s version of the account on (inside the transaction that changes that data)."""
    conn.execute(_BUMP[kind], {"account": account_id, "start": secrets.randbits(48) + 1})


def versions(conn: Connection, account_ids: Sequence[int]) -> dict[int, Versions]:
    out = {a: Versions() for a in account_ids}
    for chunk in chunks(list(account_ids)):
        for r in conn.execute(_VERSIONS_OF, {"accounts": chunk}):
            out[r.account_id] = Versions(r.rules, r.senders, r.training)
    return out


def versions_sqlite(dbapi_conn, account_ids: Sequence[int]) -> dict[int, Versions] | None:
    """:func:`versions` as one plain SELECT on a SQLite DB-API connection in autocommit mode (its own snapshot:
    no BEGIN, no COMMIT, none of SQLAlchemy's statement machinery, which cost ~20 times the statement); None for
    more accounts than one statement takes."""
    if len(account_ids) > CHUNK:
        return None
    out = {a: Versions() for a in account_ids}
    if not out:
        return out
    sql = _VERSIONS_SQLITE.get(len(account_ids))
    if sql is None:
        sql = _VERSIONS_SQLITE.setdefault(len(account_ids), "SELECT account_id, rules, senders, training FROM "
                                          f"{V.name} WHERE account_id IN ({', '.join('?' * len(account_ids))})")
    for account_id, rules, senders, training in dbapi_conn.execute(sql, tuple(account_ids)).fetchall():
        out[account_id] = Versions(rules, senders, training)
    return out


def read(conn: Connection, account_ids: Sequence[int], held: Mapping[int, AccountState],
         senders: Sequence[str] = (), rule_addresses: Sequence[str] = (), token_ids: Sequence[int] | None = None,
         min_spam: int = 1, min_ham: int = 1) -> tuple[dict[int, AccountState], dict[int, dict]]:
    """Every account's current state for one message, and the token counts of those whose classifier votes.

    ``held`` are the caller's copies (a copy whose version still holds is reused, not read); ``senders`` the
    addresses whose correspondent status is wanted, ``rule_addresses`` those whose sender rules are (the
    envelope sender and the From address); ``token_ids`` the message's tokens (None: no counts wanted).  A
    classifier votes once its account trained at least ``min_spam`` spam and ``min_ham`` ham messages."""
    account_ids = list(dict.fromkeys(account_ids))
    now = versions(conn, account_ids)  # first: the data read below is at least this new
    found = _state(conn, now, account_ids, held, senders, rule_addresses, token_ids, min_spam, min_ham)
    assert found is not None  # (with a connection every statement it needs is made)
    return found


def from_held(now: Mapping[int, Versions], account_ids: Sequence[int], held: Mapping[int, AccountState],
              senders: Sequence[str] = (), rule_addresses: Sequence[str] = (),
              token_ids: Sequence[int] | None = None, min_spam: int = 1, min_ham: int = 1
              ) -> tuple[dict[int, AccountState], dict[int, dict]] | None:
    """:func:`read`'s answer from versions ``now`` just read (every one of ``account_ids``) when it needs no
    further statement (every kind of data either never changed or held in a current copy, no token counts
    wanted of a voting account); None when it would need one (then :func:`read` it whole)."""
    return _state(None, now, list(dict.fromkeys(account_ids)), held, senders, rule_addresses, token_ids,
                  min_spam, min_ham)


def _state(conn: Connection | None, now: Mapping[int, Versions], account_ids: list[int],
           held: Mapping[int, AccountState], senders: Sequence[str], rule_addresses: Sequence[str],
           token_ids: Sequence[int] | None, min_spam: int, min_ham: int
           ) -> tuple[dict[int, AccountState], dict[int, dict]] | None:
    """:func:`read` after its versions; without a connection (``conn`` None), None as soon as a statement is needed."""
    senders = list(dict.fromkeys(s.lower() for s in senders if s))
    wanted = {a.lower() for a in rule_addresses if a}
    wanted |= {"@" + a.rpartition("@")[2] for a in wanted if "@" in a}
    out: dict[int, AccountState] = {}
    stale_totals: list[int] = []
    ask: dict[int, list[str]] = {}
    for a in account_ids:
        v, h = now[a], held.get(a)
        rules, complete = {}, True
        if v.rules:
            if h is not None and h.versions.rules == v.rules and h.rules_complete:
                rules = h.rules
            elif conn is None:
                return None
            else:
                rules, complete = _rules(conn, a, wanted)
        totals = (0, 0)
        if v.training:
            if h is not None and h.versions.training == v.training:
                totals = h.totals
            else:
                stale_totals.append(a)
        known: dict[str, bool] = {}
        if v.senders:
            if h is not None and h.versions.senders == v.senders and len(h.known) < MAX_HELD_SENDERS:
                known = dict(h.known)
            missing = [s for s in senders if s not in known]
            if missing:
                ask[a] = missing
        else:
            known = {s: False for s in senders}
        out[a] = AccountState(v, rules, complete, totals, known)
    if conn is None:
        voting = token_ids and any((spam or ham) and spam >= min_spam and ham >= min_ham
                                   for spam, ham in (st.totals for st in out.values()))
        return None if stale_totals or ask or voting else (out, {})
    if stale_totals:
        fresh = {r.account_id: (r.spam, r.ham) for r in conn.execute(_TOTALS_OF, {"accounts": stale_totals})}
        for a in stale_totals:
            out[a] = replace(out[a], totals=fresh.get(a, (0, 0)))
    if ask:
        asked = sorted({s for missing in ask.values() for s in missing})
        found = {(r.account_id, r.address) for r in conn.execute(_KNOWN_OF, {"accounts": sorted(ask),
                                                                           "senders": asked})}
        for a, missing in ask.items():
            known = dict(out[a].known)
            known.update({s: (a, s) in found for s in missing})
            out[a] = replace(out[a], known=known)
    tokens: dict[int, dict] = {}
    if token_ids:
        ids = sorted(set(token_ids))
        for a, st in out.items():
            spam, ham = st.totals
            if (spam or ham) and spam >= min_spam and ham >= min_ham:
                counts: dict[int, tuple[int, int]] = {}
                for chunk in chunks(ids):
                    for r in conn.execute(_TOKENS_OF, {"account": a, "tokens": chunk}):
                        counts[r.token] = (r.spam, r.ham)
                tokens[a] = counts
    return out, tokens


def _rules(conn: Connection, account_id: int, wanted: set[str]) -> tuple[dict[str, str], bool]:
    """The account's rules: all of them when at most MAX_HELD_RULES, else those of ``wanted`` (and False)."""
    rows = conn.execute(_ALL_RULES_OF, {"account": account_id, "limit": MAX_HELD_RULES + 1}).all()
    if len(rows) <= MAX_HELD_RULES:
        return dict(rows), True
    if not wanted:
        return {}, False
    return dict(conn.execute(_RULES_OF, {"account": account_id, "wanted": sorted(wanted)}).all()), False


# The statements, built once (read runs for every message the checks look at).
_VERSIONS_SQLITE: dict[int, str] = {}  # versions_sqlite's text by number of accounts
_VERSIONS_OF = select(V.c.account_id, V.c.rules, V.c.senders, V.c.training).where(
    V.c.account_id.in_(bindparam("accounts", expanding=True)))
_ALL_RULES_OF = select(R.c.address, R.c.rule).where(R.c.account_id == bindparam("account")).order_by(
    R.c.address).limit(bindparam("limit"))
_RULES_OF = select(R.c.address, R.c.rule).where(R.c.account_id == bindparam("account"),
                                                 R.c.address.in_(bindparam("wanted", expanding=True)))
_TOTALS_OF = select(TOT.c.account_id, TOT.c.spam, TOT.c.ham).where(
    TOT.c.account_id.in_(bindparam("accounts", expanding=True)))
_KNOWN_OF = select(S.c.account_id, S.c.address).where(S.c.account_id.in_(bindparam("accounts", expanding=True)),
                                                     S.c.address.in_(bindparam("senders", expanding=True)))
_TOKENS_OF = select(T.c.token, T.c.spam, T.c.ham).where(T.c.account_id == bindparam("account"),
                                                       T.c.token.in_(bindparam("tokens", expanding=True)))
