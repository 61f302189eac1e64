"""The mailbox store: synchronous units of work over SQLAlchemy Core.

:class:`Store` is a thin facade.  Every public method is one transaction (:meth:`Store.transaction`, the only way
into the database) that calls functions of one aggregate module, and returns plain frozen dataclasses
(``storage.records``; never lazy ORM objects), so callers can use the results on any thread:

=========================  =====================================================================================
``storage.accounts``       domains, accounts, aliases, quota
``storage.mailboxes``      mailboxes and subscriptions, UIDVALIDITY, UID/modseq reservation
``storage.messages``       delivery (group commit), APPEND, flags, expunge, copy/move, SELECT/FETCH reads
``storage.queue``          the outbound queue (``enqueue`` here; the runner's operations in ``QueueStore``)
``storage.blobrefs``       blob reference counts, garbage collection, integrity check
``storage.webmail``        webmail sessions, contacts, identities, search, conversations
``storage.sieve``          Sieve scripts (per account, a domain's global ones), vacation replies, duplicate ids
``storage.quarantine``     held copies per recipient, sender rules, domain admins, used digest links
``storage.greylist``       greylisting triplets and client networks (RFC 6647)
``storage.bayes``          the built-in classifier: token counts, trained messages, training jobs, correspondents
``storage.sendgrants``     who may send as / on behalf of an address that is not their own
``storage.shared``         shared mailboxes, ACL rows, groups, names across namespaces, per-reader \\Seen
=========================  =====================================================================================

Training the classifier is part of the store's own operations, so every path trains alike (IMAP MOVE, COPY +
EXPUNGE, the webmail's move, keywords set by any client, a release from the quarantine): :meth:`Store.copy` into
Junk records a spam training job for the copied messages and out of Junk (not into Trash) a ham one;
:meth:`Store.set_flags` setting ``$Junk`` / ``$NotJunk`` one of each; releasing a copy held as spam a ham one.  The
job commits with the action; the trainer takes it off the reactor (``on_training`` tells it there is work).

Each method declares how it may be called (``storage.access``): ``@reads``, ``@writes`` or ``@writes_changes`` (it
returns :class:`Changed`: ``value`` and the ``changes`` it caused; ``mailserver.asyncstore`` publishes them on the
reactor thread after the commit).  Call the methods from database thread pools only (``AsyncStore``), never from the
reactor thread.

Invariants kept here and in the aggregate modules (tested in tests/test_store.py):

* UIDs in a mailbox are strictly ascending and never reused: ``uid_next`` only grows, under the mailbox row's write lock
  (``UPDATE … RETURNING``), so concurrent deliveries from several threads or processes cannot hand out one UID twice.
* ``uid_validity`` changes only when a mailbox name is (re-)created: it comes from a per-account sequence.
* ``highest_modseq`` rises on every change of a mailbox; each changed message carries the new modseq (RFC 7162).
* A message row only ever names a blob that is already durable (the blob store's ``finish()`` / ``ensure_synced``
  runs before the commit).
* Change events are committed with their data: on PostgreSQL a write transaction sends its changes with
  ``pg_notify`` before it commits (``storage.pgnotify.notify``), so other processes hear of exactly the committed
  changes, and of none from a transaction that rolled back.
* SQLite write transactions begin with ``BEGIN IMMEDIATE`` (storage/db.py), so they never fail upgrading a read lock.
"""

from __future__ import annotations

import time
from contextlib import contextmanager, nullcontext
from typing import Callable, Iterator, Mapping, Sequence

from sqlalchemy.engine import Connection, Engine

from storage import (
    accounts,
    bayes,
    blobrefs,
    callouts,
    checkstate,
    greylist,
    mailboxes,
    messages,
    quarantine,
    queue,
    sendgrants,
    shared,
    sieve,
    webmail,
)
from storage.access import blocking_only, reads, writes, writes_changes
from storage.accounts import ADDR_RE as _ADDR_RE  # mailserver/cli/admin.py
from storage.accounts import normalize_address
from storage.blobs import BlobRef, BlobStore
from storage.changes import Change
from storage.db import PlainReaders, is_sqlite, write_lock
from storage.errors import AlreadyExists, HasChildren, Invalid, NotFound, QuotaExceeded, StoreError
from storage.mailboxes import (
    DEFAULT_MAILBOXES,
    MAX_MAILBOX_DEPTH,
    MAX_MAILBOX_NAME,
    SEPARATOR,
    check_mailbox_name,
    normalize_mailbox_name,
)
from storage.messages import thread_key
from storage.models import FLAG_ANSWERED
from storage.parsed import PARSED_COLUMNS
from storage.quarantine import HoldSpec, QuarantineItem
from storage.records import (
    AccountInfo,
    AliasInfo,
    Changed,
    CopyResult,
    Delivery,
    DeliveryResult,
    DomainInfo,
    FlagUpdate,
    MailboxInfo,
    MessageInfo,
    MessageMeta,
    QueueRecipientSpec,
    StoreFlagsResult,
    join_keywords,
    split_keywords,
)
from storage.sendgrants import GrantInfo
from storage.sieve import ActiveScript, ScriptInfo, ScriptText, SieveQuota
from storage.webmail import Identity, SearchResult, SessionRow

_append_many = messages.append_many  # Store.append_many's parameter is called ``messages``

#: Key of ``Connection.info`` under which a write transaction collects the changes it sends before commit.
_PENDING = "mailserver_changes"


#: The youngest body the orphan sweep removes (seconds): far longer than any delivery takes from storing its body
#: to committing the row that names it, on any worker or node.
ORPHAN_MIN_AGE = 600.0


def _pg_in_transaction(conn: Connection) -> bool:
    """Whether the psycopg connection under ``conn`` has sent BEGIN (a statement other than a plain read ran)."""
    from psycopg.pq import TransactionStatus

    return conn.connection.driver_connection.info.transaction_status != TransactionStatus.IDLE


class Store:
    def __init__(self, engine: Engine, blobs: BlobStore):
        self.engine = engine
        self.blobs = blobs
        self.sqlite = is_sqlite(str(engine.url))
        #: Per-thread plain connections for the one-statement reads outside a transaction (SQLite files only).
        self.plain_readers = PlainReaders.for_url(engine.url.render_as_string(hide_password=False))
        self._notify = None
        if not self.sqlite:
            from storage import pgnotify

            origin = pgnotify.origin_for(engine)
            self._notify = lambda conn, changes, async_commit=False: pgnotify.notify(conn, changes, origin,
                                                                                      async_commit)
            self._notify_statements = lambda conn, changes: pgnotify.notify_statements(conn, changes, origin)
        #: Called (on the database thread, after the commit) when an operation recorded classifier training.
        self.on_training: Callable[[], None] | None = None
        #: Flag changes (:meth:`set_flags`) and expunges (:meth:`expunge`) commit flushed to disk (``[store] fsync =
        #: "always"``); False (``"optimized"``, the default, as Dovecot's ``mail_fsync``) commits them atomically
        #: but without waiting for the flush: a kill -9 loses none, an OS crash or power loss may lose the last ones
        #: (the message reappears, or its flag is as before).  Deliveries, APPEND, COPY/MOVE, mailbox changes
        #: are always flushed.
        self.durable_flags = False

    def _trained(self, recorded: int) -> None:
        if recorded and self.on_training is not None:
            self.on_training()

    # ----------------------------------------------------------------------------------------- transactions

    @blocking_only
    @contextmanager
    def transaction(self, write: bool = True, durable: bool = True) -> Iterator[Connection]:
        """One transaction (commit at the end of the block, rollback if it raises): the only way into the database.

        ``write`` transactions take SQLite's write lock up front (``BEGIN IMMEDIATE``; all processes on the file
        queue for it on a file lock, storage/db.py).  Changes registered with :meth:`announce` are sent (PostgreSQL
        ``pg_notify``) inside the transaction, just before it commits.  Methods that commit metadata naming new blobs
        call ``blobs.ensure_synced`` before opening it.

        ``durable=False`` is for state no reply promises to keep across a power loss (the cluster's \\Recent claims,
        login failure counts, leases, heartbeats; flag changes and expunges unless :attr:`durable_flags`): its commit is atomic but not flushed to disk at once (SQLite
        ``synchronous=NORMAL``, PostgreSQL ``synchronous_commit = off``), which keeps the one write lock that every
        worker process on a SQLite file shares free for the commits that must be flushed.
        """
        with write_lock(self.engine) if write else nullcontext(), self.engine.connect() as conn:
            if self.sqlite:
                if not write:
                    conn.info["sqlite_read"] = True  # commits nothing: no PRAGMA synchronous switch (storage/db.py)
                else:
                    conn.info["sqlite_begin"] = "IMMEDIATE"
                    if not durable:
                        conn.info["sqlite_sync"] = "NORMAL"
            try:
                with conn.begin():
                    yield conn
                    pending = conn.info.pop(_PENDING, None)
                    if not durable and not self.sqlite:
                        # synchronous_commit is read at COMMIT, so it is set last: in the pg_notify statement when
                        # there is one (no round trip of its own), else only if a write opened the transaction (a
                        # transaction of plain reads has no BEGIN to commit: storage/db.py).
                        if pending:
                            self._notify(conn, pending, True)
                        elif _pg_in_transaction(conn):
                            conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
                    elif pending and self._notify is not None:
                        self._notify(conn, pending)
            finally:
                conn.info.pop("sqlite_begin", None)
                conn.info.pop("sqlite_sync", None)
                conn.info.pop("sqlite_read", None)
                conn.info.pop(_PENDING, None)

    @staticmethod
    @blocking_only
    def announce(conn: Connection, changed: Changed) -> Changed:
        """Register ``changed.changes`` with the open transaction ``conn`` (sent before it commits); returns it."""
        if changed.changes:
            conn.info.setdefault(_PENDING, []).extend(changed.changes)
        return changed

    # ----------------------------------------------------------------------------------------- domains

    @writes
    def add_domain(self, name: str, mode: str = "local", relay_to: str = "") -> DomainInfo:
        with self.transaction() as conn:
            return accounts.add_domain(conn, name, mode, relay_to)

    @writes
    def ensure_domain(self, name: str, mode: str = "local", relay_to: str = "") -> DomainInfo:
        """Create or update a domain declared in the config."""
        with self.transaction() as conn:
            return accounts.ensure_domain(conn, name, mode, relay_to)

    @reads
    def get_domain(self, name: str) -> DomainInfo | None:
        with self.transaction(write=False) as conn:
            return accounts.get_domain(conn, name)

    @reads
    def list_domains(self) -> list[DomainInfo]:
        with self.transaction(write=False) as conn:
            return accounts.list_domains(conn)

    @writes
    def remove_domain(self, name: str) -> None:
        with self.transaction() as conn:
            accounts.remove_domain(conn, name)
            sendgrants.forget_domain(conn, name.strip().lower())  # the domain is gone: so are grants on it

    # ----------------------------------------------------------------------------------------- accounts

    @writes
    def add_account(self, address: str, password_hash: str, display_name: str = "", quota_bytes: int = 0
                    ) -> AccountInfo:
        with self.transaction() as conn:
            return accounts.add_account(conn, address, password_hash, display_name, quota_bytes)

    @reads
    def get_account(self, address: str) -> AccountInfo | None:
        with self.transaction(write=False) as conn:
            return accounts.get_account(conn, address)

    @reads
    def get_account_by_id(self, account_id: int) -> AccountInfo | None:
        with self.transaction(write=False) as conn:
            return accounts.get_account_by_id(conn, account_id)

    @reads
    def list_accounts(self, domain: str | None = None) -> list[AccountInfo]:
        with self.transaction(write=False) as conn:
            return accounts.list_accounts(conn, domain)

    @writes
    def remove_account(self, address: str) -> None:
        with self.transaction() as conn:
            acct = accounts.get_account(conn, address)
            accounts.remove_account(conn, address)
            sendgrants.forget_account(conn, acct.id, acct.address)  # exists: remove_account raised NotFound

    @writes
    def set_password_hash(self, account_id: int, password_hash: str) -> None:
        with self.transaction() as conn:
            accounts.set_password_hash(conn, account_id, password_hash)

    @writes
    def update_account(self, account_id: int, **values) -> AccountInfo:
        with self.transaction() as conn:
            return accounts.update_account(conn, account_id, **values)

    @writes
    def set_quota(self, address: str, quota_bytes: int) -> AccountInfo:
        with self.transaction() as conn:
            return accounts.set_quota(conn, address, quota_bytes)

    @reads
    def quota(self, account_id: int) -> tuple[int, int]:
        """(used bytes, limit bytes; 0 = unlimited)."""
        with self.transaction(write=False) as conn:
            return accounts.quota(conn, account_id)

    # ----------------------------------------------------------------------------------------- aliases

    @writes
    def add_alias(self, address: str, target: str) -> AliasInfo:
        with self.transaction() as conn:
            return accounts.add_alias(conn, address, target)

    @writes
    def remove_alias(self, address: str, target: str | None = None) -> int:
        with self.transaction() as conn:
            return accounts.remove_alias(conn, address, target)

    @reads
    def list_aliases(self, domain: str | None = None) -> list[AliasInfo]:
        with self.transaction(write=False) as conn:
            return accounts.list_aliases(conn, domain)

    @reads
    def alias_targets(self, address: str) -> list[str]:
        """Targets of the alias ``address`` (exact match; pass "@domain" for the catch-all)."""
        with self.transaction(write=False) as conn:
            return accounts.alias_targets(conn, address)

    @reads
    def addresses_of(self, account_id: int) -> list[str]:
        """The account's own address and every alias that points only at it (the identities it may send as)."""
        with self.transaction(write=False) as conn:
            return accounts.addresses_of(conn, account_id)

    # ----------------------------------------------------------------------------------------- send grants

    @writes
    def grant_send(self, account: str, address: str, kind: str) -> GrantInfo:
        """Let ``account`` send as / on behalf of ``address`` (``sendgrants.SEND_AS`` / ``SEND_ON_BEHALF``)."""
        with self.transaction() as conn:
            return sendgrants.grant(conn, account, address, kind)

    @writes
    def revoke_send(self, account: str, address: str) -> None:
        with self.transaction() as conn:
            sendgrants.revoke(conn, account, address)

    @reads
    def list_send_grants(self, account: str | None = None, address: str | None = None) -> list[GrantInfo]:
        with self.transaction(write=False) as conn:
            return sendgrants.list_grants(conn, account, address)

    @reads
    def send_identities(self, account_id: int) -> list[tuple[str, str]]:
        """(address, kind) of every address the account may put in From: its own and its aliases' (kind
        ``sendgrants.OWN``), then its grants (``SEND_AS`` / ``SEND_ON_BEHALF``); read in one transaction."""
        with self.transaction(write=False) as conn:
            own = [(a, sendgrants.OWN) for a in accounts.addresses_of(conn, account_id)]
            taken = {a for a, _ in own}
            return own + [(a, k) for a, k in sendgrants.grants_of(conn, account_id) if a not in taken]

    # ----------------------------------------------------------------------------------------- mailboxes

    @reads
    def list_mailboxes(self, account_id: int) -> list[MailboxInfo]:
        with self.transaction(write=False) as conn:
            return mailboxes.list_mailboxes(conn, account_id)

    @reads
    def large_mailboxes(self, min_messages: int, limit: int) -> list[MailboxInfo]:
        """The largest mailboxes of every account (at least ``min_messages`` messages), largest first."""
        with self.transaction(write=False) as conn:
            return mailboxes.large_mailboxes(conn, min_messages, limit)

    @reads
    def get_mailbox(self, account_id: int, name: str) -> MailboxInfo | None:
        with self.transaction(write=False) as conn:
            return mailboxes.get_mailbox(conn, account_id, name)

    @reads
    def get_mailbox_by_id(self, mailbox_id: int) -> MailboxInfo | None:
        with self.transaction(write=False) as conn:
            return mailboxes.get_mailbox_by_id(conn, mailbox_id)

    @writes_changes
    def create_mailbox(self, account_id: int, name: str, special_use: str = "", *,
                       subscribed: bool = True) -> Changed:
        """Create ``name`` and its missing parents; ``value`` is the MailboxInfo (see mailboxes.create_mailbox)."""
        with self.transaction() as conn:
            changed = mailboxes.create_mailbox(conn, account_id, name, special_use, subscribed=subscribed)
            # RFC 4314 has no rule here; as Dovecot, a new mailbox takes its parent's ACL (storage/shared.py).
            shared.inherit_acl(conn, account_id, [(c.mailbox_id, c.name) for c in changed.changes])
            return self.announce(conn, changed)

    @writes_changes
    def delete_mailbox(self, account_id: int, name: str) -> Changed:
        """Delete a mailbox and its messages.  INBOX cannot be deleted; a mailbox with children raises HasChildren."""
        with self.transaction() as conn:
            return self.announce(conn, mailboxes.delete_mailbox(conn, account_id, name))

    @writes_changes
    def rename_mailbox(self, account_id: int, old: str, new: str) -> Changed:
        """Rename ``old`` (and its children) to ``new``; INBOX's messages move instead (RFC 9051 6.3.6)."""
        with self.transaction() as conn:
            return self.announce(conn, mailboxes.rename_mailbox(conn, account_id, old, new))

    @writes_changes
    def set_subscribed(self, account_id: int, name: str, subscribed: bool) -> Changed:
        """SUBSCRIBE / UNSUBSCRIBE ``name``; the mailbox need not exist (RFC 9051 6.3.7)."""
        with self.transaction() as conn:
            return self.announce(conn, mailboxes.set_subscribed(conn, account_id, name, subscribed))

    @reads
    def list_subscriptions(self, account_id: int) -> list[str]:
        """Every subscribed name, whether or not its mailbox exists."""
        with self.transaction(write=False) as conn:
            return mailboxes.list_subscriptions(conn, account_id)

    # ----------------------------------------------------------------------------------------- sharing and ACL
    # storage/shared.py: names across namespaces, ACL rows, groups, shared mailboxes.  The rights are decided in
    # mailserver/access.py (the one check) from what these return.

    @reads
    def resolve_mailbox(self, account_id: int, name: str) -> tuple[MailboxInfo, str] | None:
        """The mailbox ``name`` names in ``account_id``'s namespaces (``Other Users/…``, ``Shared/…`` or its own),
        as that reader sees it, with the rights its ACL gives them; None when there is none."""
        with self.transaction(write=False) as conn:
            return shared.resolve(conn, account_id, name)

    @reads
    def resolve_mailbox_quota(self, account_id: int, name: str
                              ) -> tuple[tuple[MailboxInfo, str] | None, tuple[int, int] | None]:
        """:meth:`resolve_mailbox` and the :meth:`quota` of the mailbox's owner (None when there is no mailbox), in
        one transaction: what an APPEND checks before its message streams."""
        with self.transaction(write=False) as conn:
            found = shared.resolve(conn, account_id, name)
            return found, (accounts.quota(conn, found[0].account_id) if found is not None else None)

    @reads
    def resolve_owner(self, account_id: int, name: str) -> tuple[int, str, str] | None:
        """(owner account, stored name, owner address) a new mailbox ``name`` would go to (CREATE)."""
        with self.transaction(write=False) as conn:
            return shared.resolve_owner(conn, account_id, name)

    @reads
    def mailbox_for_reader(self, mailbox_id: int, account_id: int) -> MailboxInfo | None:
        """The mailbox by id as ``account_id`` sees it: named in their namespaces, with their ACL rights and their
        own unseen count (a per-reader mailbox)."""
        with self.transaction(write=False) as conn:
            return shared.mailbox_for_reader(conn, mailbox_id, account_id)

    @reads
    def mailbox_rights(self, mailbox_id: int, account_id: int) -> str:
        """The rights the ACL of ``mailbox_id`` gives ``account_id`` (letters; the owner rule is not applied)."""
        with self.transaction(write=False) as conn:
            return shared.acl_rights(conn, mailbox_id, account_id)

    @reads
    def shared_with(self, account_id: int) -> list[tuple[MailboxInfo, str]]:
        """Other accounts' mailboxes the ACL names ``account_id`` on, as it sees them, with its rights."""
        with self.transaction(write=False) as conn:
            return shared.shared_with(conn, account_id)

    @reads
    def reader_mailboxes(self, account_id: int) -> list[MailboxInfo]:
        """Every mailbox ``account_id`` has rights on, as it sees them, in one transaction: its own (as
        ``mailbox_for_reader`` gives each), then those of ``shared_with``; the access check filters them."""
        with self.transaction(write=False) as conn:
            return shared.reader_mailboxes(conn, account_id)

    @reads
    def get_acl(self, mailbox_id: int) -> list[tuple[str, str]]:
        with self.transaction(write=False) as conn:
            return shared.get_acl(conn, mailbox_id)

    @writes
    def set_acl(self, mailbox_id: int, identifier: str, rights: str, *, existing: bool = True) -> str:
        """RFC 4314 SETACL (``+``/``-`` prefixes add/remove); returns the identifier's rights now.  ``existing``:
        an address must name an account (the CLI); IMAP keeps any well-formed one (no account enumeration)."""
        with self.transaction() as conn:
            return shared.set_acl(conn, mailbox_id, identifier, rights, existing=existing)

    @writes
    def delete_acl(self, mailbox_id: int, identifier: str) -> bool:
        with self.transaction() as conn:
            return shared.delete_acl(conn, mailbox_id, identifier)

    @writes
    def add_group(self, name: str) -> None:
        with self.transaction() as conn:
            shared.add_group(conn, name)

    @writes
    def remove_group(self, name: str) -> None:
        with self.transaction() as conn:
            shared.remove_group(conn, name)

    @reads
    def list_groups(self) -> list[tuple[str, list[str]]]:
        with self.transaction(write=False) as conn:
            return shared.list_groups(conn)

    @writes
    def set_group_member(self, name: str, address: str, member: bool = True) -> None:
        with self.transaction() as conn:
            shared.set_member(conn, name, address, member)

    @writes
    def create_shared_mailbox(self, address: str, name: str = "", quota_bytes: int = 0) -> AccountInfo:
        """A shared mailbox (owned by the domain, no login) receiving mail for ``address``: ``Shared/<name>``."""
        with self.transaction() as conn:
            return accounts.create_shared(conn, address, name, quota_bytes)

    @reads
    def list_shared_mailboxes(self) -> list[tuple[str, str]]:
        """(shared name, address) of every shared mailbox."""
        with self.transaction(write=False) as conn:
            return shared.list_shared(conn)

    @writes
    def remove_shared_mailbox(self, key: str) -> None:
        """Remove a shared mailbox (by name or address) with its messages and ACL."""
        with self.transaction() as conn:
            aid = shared.shared_account(conn, key)
            if aid is None:
                raise NotFound(f"no shared mailbox {key}")
            address = accounts.get_account_by_id(conn, aid).address
            accounts.remove_account(conn, address)

    # ----------------------------------------------------------------------------------------- messages: reads

    @reads
    def list_messages(self, mailbox_id: int) -> list[MessageMeta]:
        """Every message of the mailbox in UID order (what SELECT needs)."""
        with self.transaction(write=False) as conn:
            return messages.list_messages(conn, mailbox_id)

    @reads
    def list_message_columns(self, mailbox_id: int) -> tuple[tuple, ...]:
        """Every message of the mailbox in UID order, as columns (``messages.list_message_columns``)."""
        with self.transaction(write=False) as conn:
            return messages.list_message_columns(conn, mailbox_id)

    @reads
    def get_messages(self, mailbox_id: int, uids: Sequence[int], *, reader: int = 0) -> list[MessageInfo]:
        """Full metadata of the given UIDs (missing ones are left out), in UID order; with ``reader``, that
        reader's \\Seen laid over a per-reader mailbox's flags."""
        with self.transaction(write=False) as conn:
            return _reader_view(conn, mailbox_id, reader, messages.get_messages(conn, mailbox_id, uids))

    @reads
    def page_messages(self, mailbox_id: int, *, offset: int = 0, limit: int = 50, order: str = "date",
                      descending: bool = True, reader: int = 0) -> tuple[int, list[MessageInfo]]:
        """One page of a mailbox for lists (webmail): (total count, messages); ``reader`` as for get_messages."""
        with self.transaction(write=False) as conn:
            total, page = messages.page_messages(conn, mailbox_id, offset=offset, limit=limit, order=order,
                                                 descending=descending)
            return total, _reader_view(conn, mailbox_id, reader, page)

    @reads
    def changes_since(self, mailbox_id: int, modseq: int, reader: int = 0) -> tuple[list[MessageMeta], list[int]]:
        """Messages changed after ``modseq`` and UIDs expunged after it (RFC 7162 CHANGEDSINCE / VANISHED); with
        ``reader``, that reader's \\Seen laid over a per-reader mailbox's flags."""
        with self.transaction(write=False) as conn:
            changed, vanished = messages.changes_since(conn, mailbox_id, modseq)
            if reader and changed:
                changed = shared.overlay_seen(changed, shared.seen_uids(conn, mailbox_id, reader,
                                                                        [m.uid for m in changed]))
            return changed, vanished

    @reads
    def seen_uids(self, mailbox_id: int, reader: int) -> set[int]:
        """The UIDs ``reader`` has \\Seen in a per-reader mailbox (storage/shared.py)."""
        with self.transaction(write=False) as conn:
            return shared.seen_uids(conn, mailbox_id, reader)

    @reads
    def reader_recent_last(self, mailbox_id: int, reader: int, uid_validity: int) -> int:
        """How far ``reader``'s sessions took \\Recent in a per-reader mailbox (storage/shared.py)."""
        with self.transaction(write=False) as conn:
            return shared.reader_recent_last(conn, mailbox_id, reader, uid_validity)

    @writes
    def claim_reader_recent(self, mailbox_id: int, reader: int, uid_validity: int, up_to: int) -> int:
        """Take \\Recent up to ``up_to`` for one of ``reader``'s sessions; returns how far it was taken before."""
        with self.transaction() as conn:
            return shared.claim_reader_recent(conn, mailbox_id, reader, uid_validity, up_to)

    @reads
    def reader_unseen(self, mailbox_id: int, reader: int) -> int:
        """STATUS UNSEEN of a per-reader mailbox for ``reader``."""
        with self.transaction(write=False) as conn:
            return shared.reader_unseen(conn, mailbox_id, reader)

    @reads
    def read_blob(self, blob_id: str, start: int = 0, end: int | None = None) -> bytes:
        return self.blobs.read(blob_id, start, end)

    # ----------------------------------------------------------------------------------------- messages: writes

    @writes_changes
    def deliver_batch(self, deliveries: Sequence[Delivery]) -> Changed:
        """Deliver many messages in one transaction (group commit); ``value`` is a list of DeliveryResult."""
        self.blobs.ensure_synced([d.blob for d in deliveries])  # durable before the metadata commits
        with self.transaction() as conn:
            if self._notify is None:
                return self.announce(conn, messages.deliver_batch(conn, deliveries))
            # PostgreSQL: the batch sends its own pg_notify, in one pipeline with its last writes (not announced,
            # so not sent twice; still inside this transaction, so still delivered only if it commits).
            return messages.deliver_batch(conn, deliveries,
                                          notify=lambda changes: self._notify_statements(conn, changes))

    @writes_changes
    def append(self, account_id: int, mailbox_id: int, blob: BlobRef, parsed: dict, flags: int = 0,
               keywords: tuple[str, ...] = (), internal_date: float | None = None) -> Changed:
        """APPEND one message; ``value`` is (uid_validity, uid).  Raises QuotaExceeded / NotFound."""
        changed = self.append_many(account_id, mailbox_id, [(blob, parsed, flags, keywords, internal_date)])
        uv, uids = changed.value
        return Changed((uv, uids[0]), changed.changes)

    @writes_changes
    def append_many(self, account_id: int, mailbox_id: int, messages: Sequence[tuple]) -> Changed:
        """APPEND several messages all-or-nothing (RFC 3502 MULTIAPPEND): (blob, parsed, flags, keywords,
        internal_date) each; ``value`` is (uid_validity, [uids]).  Raises QuotaExceeded / NotFound."""
        if not messages:
            raise Invalid("nothing to append")
        self.blobs.ensure_synced([m[0] for m in messages])
        with self.transaction() as conn:
            return self.announce(conn, _append_many(conn, account_id, mailbox_id, messages))

    @writes_changes
    def set_flags(self, mailbox_id: int, uids: Sequence[int], mode: str, flags: int,
                  keywords: Sequence[str] = (), unchanged_since: int | None = None, *, reader: int = 0) -> Changed:
        """STORE ("add", "remove" or "replace"); ``value`` is a StoreFlagsResult (see messages.set_flags; ``reader``
        owns the \\Seen of a per-reader mailbox)."""
        recorded = 0
        with self.transaction(durable=self.durable_flags) as conn:
            training = mode != "remove" and bool({k.lower() for k in keywords} & bayes.TRAINING_KEYWORDS)
            before = bayes.keywords_of(conn, mailbox_id, uids) if training else {}
            changed = messages.set_flags(conn, mailbox_id, uids, mode, flags, keywords, unchanged_since, reader)
            if training and changed.value.updated:
                recorded = self._train_keywords(conn, mailbox_id, changed.value.updated, before)
            if mode != "remove" and changed.value.updated and flags & FLAG_ANSWERED:
                self._note_replied(conn, mailbox_id, changed.value.updated)
            self.announce(conn, changed)
        self._trained(recorded)
        return changed

    @staticmethod
    def _train_keywords(conn: Connection, mailbox_id: int, updated, before: dict[int, set[str]]) -> int:
        """``$Junk`` newly set trains spam, ``$NotJunk`` ham, whatever the other one still says (a client marking
        "not junk" may set ``$NotJunk`` before it removes ``$Junk``); setting both at once teaches nothing."""
        account_id = mailboxes.owner_of(conn, mailbox_id)
        by_class: dict[str, list[int]] = {bayes.SPAM: [], bayes.HAM: []}
        for u in updated:
            new = {k.lower() for k in u.keywords} - before.get(u.uid, set())
            junk, not_junk = bayes.JUNK_KEYWORD in new, bayes.NOT_JUNK_KEYWORD in new
            if junk != not_junk:
                by_class[bayes.SPAM if junk else bayes.HAM].append(u.uid)
        now = time.time()
        return sum(bayes.note_training(conn, account_id, bayes.blobs_of(conn, mailbox_id, uids), klass, now)
                   for klass, uids in by_class.items() if uids)

    @staticmethod
    def _note_replied(conn: Connection, mailbox_id: int, updated) -> None:
        """\\Answered set: the sender of the message is one of the account's correspondents."""
        uids = [u.uid for u in updated if u.flags & FLAG_ANSWERED]
        if uids:
            bayes.note_senders(conn, mailboxes.owner_of(conn, mailbox_id),
                               bayes.from_addresses(conn, mailbox_id, uids), time.time())

    @writes_changes
    def expunge(self, mailbox_id: int, uids: Sequence[int] | None = None) -> Changed:
        """Remove messages flagged \\Deleted (only among ``uids`` when given: UID EXPUNGE).  ``value``: expunged UIDs.
        Flushed to disk only with :attr:`durable_flags`; the bodies it frees are deleted by :meth:`collect_blobs`,
        whose flushed commit also flushes this one first (SQLite's WAL and PostgreSQL's WAL are written in order)."""
        with self.transaction(durable=self.durable_flags) as conn:
            return self.announce(conn, messages.expunge(conn, mailbox_id, uids))

    @writes_changes
    def delete_messages(self, mailbox_id: int, uids: Sequence[int]) -> Changed:
        """Remove the given messages whatever their flags (POP3 UPDATE state, webmail delete)."""
        with self.transaction() as conn:
            return self.announce(conn, messages.delete_messages(conn, mailbox_id, uids))

    @writes_changes
    def copy(self, src_mailbox_id: int, uids: Sequence[int], dst_mailbox_id: int, *, move: bool = False,
             reader: int = 0) -> Changed:
        """COPY (or MOVE, RFC 6851: atomic copy + expunge) messages, also between accounts (the caller checked the
        rights); ``value`` is a CopyResult."""
        recorded = 0
        with self.transaction() as conn:
            changed = messages.copy(conn, src_mailbox_id, uids, dst_mailbox_id, move=move, reader=reader)
            klass = bayes.class_for_copy(bayes.mailbox_role(conn, src_mailbox_id),
                                         bayes.mailbox_role(conn, dst_mailbox_id))
            if klass is not None and changed.value.pairs:
                blob_ids = bayes.blobs_of(conn, dst_mailbox_id, [d for _, d in changed.value.pairs])
                recorded = bayes.note_training(conn, mailboxes.owner_of(conn, dst_mailbox_id), blob_ids, klass,
                                               time.time())
            self.announce(conn, changed)
        self._trained(recorded)
        return changed

    # ----------------------------------------------------------------------------------------- classifier

    @reads
    def bayes_pending(self, limit: int = 50) -> list[bayes.Job]:
        """Training jobs not yet done, oldest first."""
        with self.transaction(write=False) as conn:
            return bayes.pending(conn, limit)

    @writes
    def bayes_learn(self, account_id: int, key: str, klass: str, token_ids: Sequence[int] | None, *,
                    job_id: int | None = None, max_tokens: int = 0) -> str:
        """Train one message (storage/bayes.py ``learn``), removing its job in the same transaction."""
        with self.transaction() as conn:
            return bayes.learn(conn, account_id, key, klass, token_ids, time.time(), job_id=job_id,
                               max_tokens=max_tokens)

    @reads
    def bayes_counts(self, account_ids: Sequence[int], token_ids: Sequence[int] | None,
                     senders: Sequence[str] = (), min_spam: int = 0, min_ham: int = 0,
                     known_totals: dict[int, tuple[int, int]] | None = None) -> dict[int, bayes.AccountCounts]:
        """The classifier's view of a message for its recipients (storage/bayes.py ``counts``)."""
        with self.transaction(write=False) as conn:
            return bayes.counts(conn, account_ids, token_ids, senders, min_spam, min_ham, known_totals)

    @reads
    def check_state(self, account_ids: Sequence[int], held: Mapping[int, checkstate.AccountState],
                    senders: Sequence[str] = (), rule_addresses: Sequence[str] = (),
                    token_ids: Sequence[int] | None = None, min_spam: int = 1, min_ham: int = 1
                    ) -> tuple[dict[int, checkstate.AccountState], dict[int, dict]]:
        """What the inbound checks need of a message's recipient accounts, in one read: sender rules, trained
        totals, correspondents, token counts; ``held`` copies are reused where their versions hold
        (``storage/checkstate.py``).

        On SQLite the versions are read first with one plain statement outside a transaction (every message the
        checks look at makes this read; with the copies current it is the whole read, at a fifth of the CPU of
        a transaction); only when that is not enough is the read made in a transaction, the versions again first."""
        if self.sqlite:
            ids = list(dict.fromkeys(account_ids))
            now = self._versions_sqlite(ids)
            if now is not None:
                found = checkstate.from_held(now, ids, held, senders, rule_addresses, token_ids, min_spam, min_ham)
                if found is not None:
                    return found
        with self.transaction(write=False) as conn:
            return checkstate.read(conn, account_ids, held, senders, rule_addresses, token_ids, min_spam, min_ham)

    @blocking_only
    def check_versions(self, account_ids: Sequence[int]) -> dict[int, checkstate.Versions] | None:
        """The versions of these accounts' check data, read as :meth:`check_state` reads them first on SQLite
        (one plain statement, its own snapshot), for a worker thread already busy with the message: the pipeline's
        store-and-parse trip (``Stage.prefetch``), so the checks can answer from their held copies
        (``checkstate.from_held``) without a ``db_read`` trip of their own.  None on PostgreSQL (there
        :meth:`check_state` reads in a transaction) or for more accounts than one statement takes."""
        if not self.sqlite:
            return None
        return self._versions_sqlite(list(dict.fromkeys(account_ids)))

    def _versions_sqlite(self, ids: list[int]) -> dict[int, checkstate.Versions] | None:
        """``checkstate.versions_sqlite`` on this thread's plain connection (a pooled one for an in-memory
        database, or once the plain connections are closed)."""
        plain = self.plain_readers.connection() if self.plain_readers is not None else None
        if plain is not None:
            return checkstate.versions_sqlite(plain, ids)
        with self.engine.connect() as conn:  # a pooled connection, used without SQLAlchemy's transaction
            return checkstate.versions_sqlite(conn.connection.dbapi_connection, ids)

    @blocking_only
    def dispose(self) -> None:
        """Close every database connection of this store (the engine's pool and the plain readers)."""
        if self.plain_readers is not None:
            self.plain_readers.close()
        self.engine.dispose()

    @reads
    def check_state_many(self, requests: Sequence[tuple]) -> list[tuple[bool, object]]:
        """:meth:`check_state` for several messages in one pool job, each with its own arguments and its own read
        (versions first), in order: ``(True, answer)`` or ``(False, exception)`` per request.  The inbound checks
        gather here the reads of messages that arrive while one is in flight (``inbound/accountstate.py``): one
        thread hand-over for the lot instead of one per message."""
        out: list[tuple[bool, object]] = []
        for args in requests:
            try:
                out.append((True, self.check_state(*args)))
            except Exception as e:  # noqa: BLE001 - that request's failure, handed back to its message only
                out.append((False, e))
        return out

    @writes
    def bayes_note_senders(self, account_id: int, addresses: Sequence[str]) -> None:
        """The account wrote to these addresses (its correspondents)."""
        with self.transaction() as conn:
            bayes.note_senders(conn, account_id, addresses, time.time())

    @reads
    def bayes_stats(self, account_id: int) -> tuple[int, int, int]:
        """(messages trained as spam, as ham, tokens kept) of the account."""
        with self.transaction(write=False) as conn:
            spam, ham = bayes._totals(conn, account_id)
            return spam, ham, bayes.token_count(conn, account_id)

    @reads
    def bayes_trained_as(self, account_id: int, key: str) -> str | None:
        with self.transaction(write=False) as conn:
            return bayes.trained_as(conn, account_id, key)

    # ----------------------------------------------------------------------------------------- blobs

    @writes
    def collect_blobs(self, grace: float = 3600.0) -> int:
        """Delete blobs no message or queue entry references any more (older than ``grace`` seconds)."""
        with self.transaction() as conn:
            ids = blobrefs.collect(conn, grace)
        self.blobs.remove(ids, grace)
        return len(ids)

    @reads
    def discard_blobs(self, blob_ids: Sequence[str]) -> int:
        """Delete at once bodies a delivery stored and then committed no reference to (called after its commit;
        ``BlobStore.discard`` keeps anything stored again meanwhile or named by a row); returns how many."""
        return self.blobs.discard(blob_ids, self._named_blobs)

    @reads
    def collect_orphan_blobs(self, grace: float = 3600.0, now: float | None = None, *, batch: int = 500,
                             limit: int = 10000) -> int:
        """The safety net under :meth:`discard_blobs`: delete stored bodies older than ``grace`` seconds that no
        row names (a crash between storing and committing, a refused or abandoned message).  At most ``limit``
        files are looked at per call, ``batch`` per database read; returns how many were removed.

        ``grace`` is at least :data:`ORPHAN_MIN_AGE`: a body a delivery has stored and not yet committed is named
        by no row, and only its age keeps it (whatever ``[store] gc_grace`` says, which a test may set to 0)."""
        grace = max(grace, ORPHAN_MIN_AGE)
        now = time.time() if now is None else now
        removed = seen = 0
        pending: list[str] = []
        for blob_id in self.blobs.orphans(now - grace):
            pending.append(blob_id)
            seen += 1
            if len(pending) >= batch or seen >= limit:
                removed += self._remove_unnamed(pending, grace, now)
                pending = []
            if seen >= limit:
                break
        if pending:
            removed += self._remove_unnamed(pending, grace, now)
        return removed

    def _named_blobs(self, blob_ids: list[str]) -> set[str]:
        with self.transaction(write=False) as conn:
            return blobrefs.named(conn, blob_ids)

    def _remove_unnamed(self, blob_ids: list[str], grace: float, now: float) -> int:
        named = self._named_blobs(blob_ids)
        return self.blobs.remove([i for i in blob_ids if i not in named], grace, now)

    @reads
    def integrity_problems(self) -> list[str]:
        """Rows naming a blob that is not readable (used by the durability test)."""
        with self.transaction(write=False) as conn:
            referenced = blobrefs.referenced(conn)
        return blobrefs.integrity_problems(self.blobs, referenced)

    # ----------------------------------------------------------------------------------------- quarantine

    @writes
    def hold_quarantined(self, specs: Sequence[HoldSpec], cap: int = 0) -> list[int | None]:
        """Hold recipients' copies (storage/quarantine.py); each one's id, or None where the account's cap is full."""
        self.blobs.ensure_synced([s.blob for s in specs])  # durable before the metadata commits
        with self.transaction() as conn:
            return quarantine.hold(conn, specs, cap)

    @reads
    def quarantined(self, item_id: int) -> QuarantineItem | None:
        with self.transaction(write=False) as conn:
            return quarantine.get(conn, item_id)

    @reads
    def list_quarantined(self, *, account_ids: Sequence[int] | None = None, domain_ids: Sequence[int] | None = None,
                         text: str = "", offset: int = 0, limit: int = 50) -> tuple[int, list[QuarantineItem]]:
        """Held copies in scope, newest first, searchable by sender and subject: (how many match, this page)."""
        with self.transaction(write=False) as conn:
            return quarantine.list_items(conn, account_ids=account_ids, domain_ids=domain_ids, text=text,
                                         offset=offset, limit=limit)

    @reads
    def count_quarantined(self, account_id: int) -> int:
        with self.transaction(write=False) as conn:
            return quarantine.count(conn, account_id)

    @writes_changes
    def release_quarantined(self, item_id: int, mailbox: str = "INBOX", *, check_quota: bool = True) -> Changed:
        """Deliver a held copy and remove it in one transaction (exactly once across nodes); ``value`` is
        (QuarantineItem, DeliveryResult).  Raises NotFound (no longer held) or QuotaExceeded (it stays held)."""
        recorded = 0
        with self.transaction() as conn:
            changed = quarantine.release(conn, item_id, mailbox, check_quota=check_quota)
            item, result = changed.value
            if item.reason == "spam" and bayes.mailbox_role(conn, result.mailbox_id) != bayes.JUNK:
                # Released by someone who judged it: not spam.
                recorded = bayes.note_training(conn, item.account_id, [item.blob_id], bayes.HAM, time.time())
            self.announce(conn, changed)
        self._trained(recorded)
        return changed

    @writes
    def delete_quarantined(self, item_ids: Sequence[int]) -> list[QuarantineItem]:
        """Remove held copies (those still there); returns what was removed."""
        with self.transaction() as conn:
            return quarantine.delete_items(conn, item_ids)

    @writes
    def expire_quarantined(self, now: float) -> list[QuarantineItem]:
        """Remove held copies whose retention ended (the periodic collector)."""
        with self.transaction() as conn:
            return quarantine.expire(conn, now)

    @reads
    def quarantine_digest_pending(self, account_ids: Sequence[int] | None = None
                                  ) -> dict[int, list[QuarantineItem]]:
        """Held copies no digest listed yet, by account."""
        with self.transaction(write=False) as conn:
            return quarantine.pending_digest(conn, account_ids)

    @reads
    def digest_settings(self, account_ids: Sequence[int]) -> dict[int, quarantine.DigestSetting]:
        with self.transaction(write=False) as conn:
            return quarantine.digest_settings(conn, account_ids)

    @writes
    def set_digest_setting(self, account_id: int, enabled: bool | None, hour: int | None) -> None:
        """An account's own digest setting (None = its domain's / the server's)."""
        with self.transaction() as conn:
            quarantine.set_digest_setting(conn, account_id, enabled, hour)

    @writes
    def claim_quarantine_digest(self, account_id: int, item_ids: Sequence[int], now: float, since: float) -> bool:
        """Claim one account's digest (once across nodes): marks the items digested; False when one was sent at
        or after ``since``."""
        with self.transaction() as conn:
            return quarantine.claim_digest(conn, account_id, item_ids, now, since)

    @writes
    def server_key(self, name: str) -> bytes:
        """The cluster's random 32-byte key ``name`` (a :meth:`server_secret` made on first use, the same on every
        node)."""
        import secrets

        return bytes.fromhex(self.server_secret(name, lambda: secrets.token_hex(32)))

    @writes
    def mark_quarantine_digested(self, item_ids: Sequence[int]) -> None:
        with self.transaction() as conn:
            quarantine.mark_digested(conn, item_ids)

    @writes
    def use_quarantine_token(self, token_id: str, expires: float) -> bool:
        """Record a digest link's use; False when it was used before."""
        with self.transaction() as conn:
            return quarantine.use_token(conn, token_id, expires)

    @writes
    def set_sender_rule(self, account_id: int, address: str, rule: str | None) -> None:
        with self.transaction() as conn:
            quarantine.set_sender_rule(conn, account_id, address, rule)

    @reads
    def sender_rules(self, account_id: int, addresses: Sequence[str] | None = None) -> dict[str, str]:
        with self.transaction(write=False) as conn:
            return quarantine.sender_rules(conn, account_id, addresses)

    @reads
    def greylist_known(self, network: str, sender: str, recipient: str, now: float, auto_whitelist: int = 0,
                       lifetime: float = 0.0) -> str | None:
        """A triplet let through without a write (passed, nothing to refresh; or its network whitelisted)."""
        with self.transaction(write=False) as conn:
            return greylist.known(conn, network, sender, recipient, now, auto_whitelist, lifetime)

    @writes
    def greylist_record(self, network: str, sender: str, recipient: str, now: float,
                        policy: greylist.GreylistPolicy) -> str:
        """Record one attempt of a triplet and decide it (``storage/greylist.py``)."""
        with self.transaction() as conn:
            return greylist.record(conn, network, sender, recipient, now, policy)

    @reads
    def greylist_known_until(self, network: str, sender: str, recipient: str, now: float, auto_whitelist: int = 0,
                             lifetime: float = 0.0) -> tuple[str, float] | None:
        """:meth:`greylist_known` and until when its answer holds (``storage/greylist.py``)."""
        with self.transaction(write=False) as conn:
            return greylist.known_until(conn, network, sender, recipient, now, auto_whitelist, lifetime)

    @writes
    def greylist_record_until(self, network: str, sender: str, recipient: str, now: float,
                              policy: greylist.GreylistPolicy) -> tuple[str, float]:
        """:meth:`greylist_record` and until when an accepting answer holds."""
        with self.transaction() as conn:
            return greylist.record_until(conn, network, sender, recipient, now, policy)

    @writes
    def prune_greylist(self, now: float) -> int:
        """Remove expired greylisting rows (the periodic collector)."""
        with self.transaction() as conn:
            return greylist.prune(conn, now)

    @writes
    def set_domain_admin(self, account_id: int, domain_id: int, admin: bool = True) -> None:
        with self.transaction() as conn:
            quarantine.set_domain_admin(conn, account_id, domain_id, admin)

    @reads
    def domain_admins(self, domain_id: int | None = None) -> list[tuple[str, int]]:
        """(address, domain id) of the domain admins (of one domain)."""
        with self.transaction(write=False) as conn:
            return quarantine.domain_admins(conn, domain_id)

    @reads
    def admin_domains(self, account_id: int) -> list[int]:
        with self.transaction(write=False) as conn:
            return quarantine.admin_domains(conn, account_id)

    # ----------------------------------------------------------------------------------------- outbound queue

    @writes
    def enqueue(self, sender: str, blob: BlobRef, recipients: Sequence[QueueRecipientSpec], *, envid: str = "",
                ret: str = "", smtputf8: bool = False, body_8bit: bool = False, account_id: int | None = None,
                source: str = "submission", next_attempt: float | None = None, queue_id: str | None = None) -> str:
        """Put a message into the durable outbound queue; returns its public queue id (see queue.enqueue)."""
        if not recipients:
            raise Invalid("no recipients")
        self.blobs.ensure_synced([blob])
        with self.transaction() as conn:
            return queue.enqueue(conn, sender, blob, recipients, envid=envid, ret=ret, smtputf8=smtputf8,
                                 body_8bit=body_8bit, account_id=account_id, source=source,
                                 next_attempt=next_attempt, queue_id=queue_id)

    # ----------------------------------------------------------------------------------------- sieve
    # Scripts of an owner: scope "account" (owner_id = account id) or "domain" (its global scripts; "before" and
    # "after" run around the user's).  ManageSieve and the webmail editor build on these (see storage/sieve.py).

    @reads
    def list_sieve_scripts(self, owner_id: int, scope: str = sieve.ACCOUNT) -> list[ScriptInfo]:
        with self.transaction(write=False) as conn:
            return sieve.list_scripts(conn, scope, owner_id)

    @reads
    def get_sieve_script(self, owner_id: int, name: str, scope: str = sieve.ACCOUNT) -> ScriptText | None:
        with self.transaction(write=False) as conn:
            return sieve.get_script(conn, scope, owner_id, name)

    @reads
    def active_sieve_script(self, owner_id: int, scope: str = sieve.ACCOUNT) -> ScriptText | None:
        with self.transaction(write=False) as conn:
            return sieve.active_script(conn, scope, owner_id)

    @reads
    def sieve_version(self, owner_id: int, scope: str = sieve.ACCOUNT) -> tuple[int, float]:
        """Changes whenever one of the owner's scripts does (compiled-script caches compare it)."""
        with self.transaction(write=False) as conn:
            return sieve.script_version(conn, scope, owner_id)

    @reads
    def sieve_version_all(self) -> tuple[int, float]:
        """Changes whenever any script of any owner does (one check keeps every cached compiled script)."""
        with self.transaction(write=False) as conn:
            return sieve.all_scripts_version(conn)

    @reads
    def sieve_have_space(self, owner_id: int, name: str, size: int, *, max_scripts: int, max_storage: int,
                         scope: str = sieve.ACCOUNT) -> None:
        """Raise SieveQuota when ``size`` bytes as ``name`` would not fit (RFC 5804 HAVESPACE)."""
        with self.transaction(write=False) as conn:
            sieve.check_quota(conn, scope, owner_id, name, size, max_scripts=max_scripts, max_storage=max_storage)

    @writes
    def put_sieve_script(self, owner_id: int, name: str, content: str, *, max_scripts: int = 0,
                         max_storage: int = 0, scope: str = sieve.ACCOUNT) -> ScriptInfo:
        """Create or replace a script the caller has compiled (PUTSCRIPT); SieveQuota past the limits."""
        with self.transaction() as conn:
            return sieve.put_script(conn, scope, owner_id, name, content, max_scripts=max_scripts,
                                    max_storage=max_storage)

    @writes
    def rename_sieve_script(self, owner_id: int, old: str, new: str, scope: str = sieve.ACCOUNT) -> None:
        with self.transaction() as conn:
            sieve.rename_script(conn, scope, owner_id, old, new)

    @writes
    def delete_sieve_script(self, owner_id: int, name: str, scope: str = sieve.ACCOUNT) -> None:
        """Delete a script; the active one raises ActiveScript (RFC 5804 2.10)."""
        with self.transaction() as conn:
            sieve.delete_script(conn, scope, owner_id, name)

    @writes
    def activate_sieve_script(self, owner_id: int, name: str | None, scope: str = sieve.ACCOUNT) -> None:
        """Make ``name`` the one active script; None: no script is active (SETACTIVE "")."""
        with self.transaction() as conn:
            sieve.activate_script(conn, scope, owner_id, name)

    @reads
    def sieve_vacation_replied(self, account_id: int, handle: str, sender: str, since: float) -> bool:
        with self.transaction(write=False) as conn:
            return sieve.vacation_replied(conn, account_id, handle, sender, since)

    @writes
    def claim_sieve_vacation_reply(self, account_id: int, handle: str, sender: str, at: float, period: float
                                   ) -> bool:
        """True (and recorded) when no reply to ``sender`` under ``handle`` went out in the ``period`` before ``at``."""
        with self.transaction() as conn:
            return sieve.record_vacation_reply(conn, account_id, handle, sender, at, period=period)

    @writes
    def server_secret(self, name: str, make: Callable[[], str]) -> str:
        """The cluster's secret ``name``, made with ``make()`` and stored the first time any process asks (two
        asking at once get the same one).  Called once per process start."""
        import time

        from sqlalchemy.exc import IntegrityError

        try:
            with self.transaction() as conn:
                value = callouts.secret(conn, name)
                if value is None:
                    value = make()
                    callouts.add_secret(conn, name, value, time.time())
                return value
        except IntegrityError:  # PostgreSQL: another node inserted it first
            with self.transaction() as conn:
                return callouts.secret(conn, name)

    @reads
    def callout_cached(self, address: str, now: float) -> bool | None:
        """Gateway mode: the relay host's remembered answer for ``address`` (None: ask it)."""
        with self.transaction(write=False) as conn:
            return callouts.cached(conn, address, now)

    @writes
    def remember_callout(self, address: str, valid: bool, expires: float, now: float) -> None:
        with self.transaction() as conn:
            callouts.remember(conn, address, valid, expires, now)

    @reads
    def sieve_duplicates_seen(self, account_id: int, keys: Sequence[str], now: float) -> set[str]:
        with self.transaction(write=False) as conn:
            return sieve.duplicates_seen(conn, account_id, keys, now)

    @writes
    def mark_sieve_duplicates(self, account_id: int, marks: Sequence[tuple[str, int]], now: float) -> None:
        with self.transaction() as conn:
            sieve.mark_duplicates(conn, account_id, marks, now)

    # ----------------------------------------------------------------------------------------- webmail

    @writes
    def create_webmail_session(self, key: str, account_id: int, csrf: str, now: float, ip: str, user_agent: str,
                               *, idle: float, absolute: float) -> tuple[str, str]:
        """A new session row (expired ones of the account go); returns the account's (address, display name)."""
        with self.transaction() as conn:
            return webmail.create_session(conn, key, account_id, csrf, now, ip, user_agent, idle=idle,
                                          absolute=absolute)

    @reads
    def webmail_session(self, key: str) -> SessionRow | None:
        with self.transaction(write=False) as conn:
            return webmail.load_session(conn, key)

    @reads
    def webmail_session_account(self, account_id: int) -> tuple[str, str]:
        with self.transaction(write=False) as conn:
            return webmail.session_account(conn, account_id)

    @writes
    def touch_webmail_session(self, key: str, now: float) -> None:
        with self.transaction() as conn:
            webmail.touch_session(conn, key, now)

    @writes
    def delete_webmail_session(self, key: str) -> None:
        with self.transaction() as conn:
            webmail.delete_session(conn, key)

    @writes
    def delete_other_webmail_sessions(self, account_id: int, keep_key: str) -> int:
        with self.transaction() as conn:
            return webmail.delete_other_sessions(conn, account_id, keep_key)

    @reads
    def count_webmail_sessions(self, account_id: int) -> int:
        with self.transaction(write=False) as conn:
            return webmail.count_sessions(conn, account_id)

    @writes
    def record_contacts(self, account_id: int, people: list[tuple[str, str]]) -> None:
        """Remember the recipients of a sent message (name, address)."""
        with self.transaction() as conn:
            webmail.record_contacts(conn, account_id, people)

    @reads
    def suggest_contacts(self, account_id: int, prefix: str = "", limit: int = 20) -> list[tuple[str, str]]:
        with self.transaction(write=False) as conn:
            return webmail.suggest_contacts(conn, account_id, prefix, limit)

    @reads
    def identities(self, account_id: int) -> list[Identity]:
        """One identity per address the account may send as, own address first."""
        with self.transaction(write=False) as conn:
            return webmail.identities(conn, account_id)

    @writes
    def save_identity(self, account_id: int, address: str, name: str, signature: str) -> None:
        with self.transaction() as conn:
            webmail.save_identity(conn, account_id, address, name, signature)

    @reads
    def search_messages(self, account_id: int, mailbox_ids: list[int] | None, text: str, field: str, offset: int,
                        limit: int, *, body_text: Callable[[bytes, str], str]) -> SearchResult:
        """The account's messages matching ``text`` in ``field``, newest first (see webmail.search)."""
        with self.transaction(write=False) as conn:
            return webmail.search(conn, self.blobs.read, body_text, account_id, mailbox_ids, text, field, offset,
                                  limit)

    @reads
    def conversation(self, account_id: int, msg: MessageInfo) -> list[tuple[str, MessageInfo]]:
        """(mailbox name, message) of the account's messages in ``msg``'s conversation, oldest first."""
        with self.transaction(write=False) as conn:
            return webmail.conversation(conn, account_id, msg)


def _reader_view(conn: Connection, mailbox_id: int, reader: int, infos: list[MessageInfo]) -> list[MessageInfo]:
    """MessageInfo rows with ``reader``'s own \\Seen where the mailbox keeps it per reader."""
    if not reader or not infos or not messages._per_reader(conn, mailbox_id):
        return infos
    import dataclasses

    from storage.models import FLAG_SEEN

    seen = shared.seen_uids(conn, mailbox_id, reader, [m.uid for m in infos])
    return [dataclasses.replace(m, flags=m.flags | FLAG_SEEN) if m.uid in seen else m for m in infos]


# What callers import from here (the names the module had before it was split by aggregate).
__all__ = [
    "_ADDR_RE", "DEFAULT_MAILBOXES", "MAX_MAILBOX_DEPTH", "MAX_MAILBOX_NAME", "PARSED_COLUMNS", "SEPARATOR",
    "AccountInfo", "ActiveScript", "AliasInfo", "AlreadyExists", "Change", "Changed", "CopyResult", "Delivery", "DeliveryResult",
    "DomainInfo", "FlagUpdate", "GrantInfo", "HasChildren", "Identity", "Invalid", "MailboxInfo", "MessageInfo", "MessageMeta",
    "NotFound", "QueueRecipientSpec", "QuotaExceeded", "ScriptInfo", "ScriptText", "SearchResult", "SessionRow", "SieveQuota", "Store", "StoreError",
    "StoreFlagsResult", "check_mailbox_name", "join_keywords", "normalize_address", "normalize_mailbox_name",
    "split_keywords", "thread_key",
]
