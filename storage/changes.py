"""Change events and the hub that publishes them.

Every mutating store operation returns the :class:`Change` events it caused; the caller commits, then publishes them on
the reactor thread through :class:`ChangeHub`.  A session that watches one mailbox (IMAP's selected mailbox) subscribes
to that mailbox, whoever owns it; what shows a whole account (the webmail's folder counts) subscribes per account.
Subscribers apply the events between commands (RFC 9051 7.4.1 keeps sequence numbers consistent that way).

With PostgreSQL, several server processes share one database: every write transaction also sends its changes with
``pg_notify`` before it commits (``Store.transaction``), and :class:`PgNotifyBridge` (storage.pgnotify) replays other
processes' notifications into the local hub, so a session on node A sees a delivery made on node B.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Callable

# Kinds of change.
EXISTS = "exists"  # a message was added (deliver, append, copy, move target)
FLAGS = "flags"  # flags/keywords changed
EXPUNGE = "expunge"  # a message was removed (expunge, move source, mailbox deletion is separate)
MAILBOX_CREATE = "mailbox-create"
MAILBOX_DELETE = "mailbox-delete"
MAILBOX_RENAME = "mailbox-rename"
MAILBOX_SUBSCRIBE = "mailbox-subscribe"
#: Not a change: events of this account may have been lost (the PostgreSQL LISTEN connection was re-established).
#: Subscribers catch up from the database (IMAP: ``changes_since`` of the selected mailbox; webmail: a reload).
#: ``mailbox_id`` 0 means every mailbox of the account.
RESYNC = "resync"


@dataclass(frozen=True)
class Change:
    kind: str
    account_id: int
    mailbox_id: int = 0
    uid: int = 0
    modseq: int = 0
    flags: int = 0
    keywords: tuple[str, ...] = ()
    name: str = ""
    old_name: str = ""
    size: int = 0
    #: A FLAGS change in a mailbox that keeps \\Seen per reader (storage/shared.py): the reader who made it.  Its
    #: \\Seen bit is that reader's; every other reader keeps their own.
    reader: int = 0
    #: Which process made the change (set by the hub): lets the PostgreSQL bridge skip its own notifications.
    origin: str = field(default="", compare=False)

    def to_json(self) -> str:
        d = asdict(self)
        d["keywords"] = list(self.keywords)
        return json.dumps(d, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> "Change":
        d = json.loads(text)
        d["keywords"] = tuple(d.get("keywords") or ())
        return cls(**d)


Listener = Callable[[list[Change]], None]


class ChangeHub:
    """In-process publish/subscribe of change events, per account or per mailbox.  Call from the reactor thread
    only."""

    def __init__(self) -> None:
        self._listeners: dict[int, list[Listener]] = defaultdict(list)
        self._mailbox_listeners: dict[int, list[Listener]] = defaultdict(list)
        self.published = 0
        #: Called with this process's own changes after they were published locally (the worker bus sends them to
        #: the other workers on one SQLite file); None: nobody else needs them (one process, or PostgreSQL, whose
        #: transactions send their own).
        self.forward: Callable[[list[Change]], None] | None = None
        #: Records this process's committed changes where the other workers of its supervisor read them at once
        #: (mailserver.commitboard: their IMAP sessions' next command sees them); None in one process.
        self.board = None

    @property
    def listening(self) -> bool:
        """Whether anyone here listens for changes (of any account or mailbox)."""
        return bool(self._listeners or self._mailbox_listeners)

    def subscribe(self, account_id: int, listener: Listener) -> Callable[[], None]:
        """Call ``listener(changes)`` with each batch of this account's changes; returns an unsubscribe function."""
        self._listeners[account_id].append(listener)

        def unsubscribe() -> None:
            lst = self._listeners.get(account_id)
            if lst and listener in lst:
                lst.remove(listener)
                if not lst:
                    del self._listeners[account_id]

        return unsubscribe

    def subscribe_mailbox(self, mailbox_id: int, listener: Listener) -> Callable[[], None]:
        """Call ``listener(changes)`` with each batch of this mailbox's changes (its messages, and its own rename
        and deletion); returns an unsubscribe function."""
        self._mailbox_listeners[mailbox_id].append(listener)

        def unsubscribe() -> None:
            lst = self._mailbox_listeners.get(mailbox_id)
            if lst and listener in lst:
                lst.remove(listener)
                if not lst:
                    del self._mailbox_listeners[mailbox_id]

        return unsubscribe

    def publish_resync(self) -> None:
        """Tell every listener, per account and per mailbox, that it may have missed changes (a RESYNC event: read
        what changed from the database). It is this process's news: never sent to other nodes."""
        events = [Change(RESYNC, a) for a in self._listeners]
        events += [Change(RESYNC, 0, mailbox_id=m) for m in self._mailbox_listeners]
        if events:
            self.publish_remote(events)

    def publish(self, changes: list[Change]) -> None:
        """Deliver this process's ``changes`` to the listeners of their accounts and of their mailboxes (and to
        :attr:`board` and :attr:`forward`)."""
        if self.board is not None:
            self.board.mark(changes)
        self.publish_remote(changes)
        if changes and self.forward is not None:
            self.forward(changes)

    def publish_remote(self, changes: list[Change]) -> None:
        """Deliver ``changes`` another process made (or a RESYNC) to the local listeners only."""
        if not changes:
            return
        self.published += len(changes)
        by_account: dict[int, list[Change]] = defaultdict(list)
        for c in changes:
            by_account[c.account_id].append(c)
        for account_id, group in by_account.items():
            for listener in list(self._listeners.get(account_id, ())):
                _call_listener(listener, group)
        if self._mailbox_listeners:
            by_mailbox: dict[int, list[Change]] = defaultdict(list)
            for c in changes:
                if c.mailbox_id in self._mailbox_listeners:
                    by_mailbox[c.mailbox_id].append(c)
            for mailbox_id, group in by_mailbox.items():
                for listener in list(self._mailbox_listeners.get(mailbox_id, ())):
                    _call_listener(listener, group)


def _call_listener(listener: Listener, changes: list[Change]) -> None:
    try:
        listener(changes)
    except Exception:  # a broken session must not stop the others from hearing about the change
        from twisted.python import log

        log.err(None, "change listener failed")
