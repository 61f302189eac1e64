"""Store a raw message for an account: blob (durable) + parse once + deliver (group commit).

The one path every producer of local mail shares besides SMTP's streaming writer: IMAP APPEND, webmail drafts and
copies in Sent, bounces to local senders, CLI import, tests.  ``deliver_raw`` is for the reactor thread (everything
blocking runs in pools); ``deliver_raw_blocking`` is for CLI tools and worker threads.
"""

from __future__ import annotations

from twisted.internet.defer import inlineCallbacks

from storage.blobs import BlobRef
from storage.store import Delivery, DeliveryResult, Store


def parsed_columns(raw: bytes) -> dict:
    """The message's parse-once columns (storage.store.PARSED_COLUMNS)."""
    from mailserver.mime import parse_message

    return parse_message(raw).to_json()


def _store_and_parse(store: Store, raw: bytes) -> tuple[BlobRef, dict]:
    """Write the body and parse it in one trip to a worker thread."""
    return store.blobs.put(raw), parsed_columns(raw)


def deliver_raw_blocking(store: Store, account_id: int, raw: bytes, *, mailbox: str = "INBOX", flags: int = 0,
                         keywords: tuple[str, ...] = (), internal_date: float | None = None,
                         check_quota: bool = True) -> DeliveryResult:
    ref = store.blobs.put(raw)
    d = Delivery(account_id, ref, parsed_columns(raw), mailbox, flags, keywords, internal_date, check_quota)
    changed = store.deliver_batch([d])
    return changed.value[0]


@inlineCallbacks
def deliver_raw(server, account_id: int, raw: bytes, *, mailbox: str = "INBOX", flags: int = 0,
                keywords: tuple[str, ...] = (), internal_date: float | None = None, check_quota: bool = True):
    """Deliver ``raw`` (fires with a DeliveryResult; change events published)."""
    from mailserver.threads import run_in

    ref, parsed = yield run_in(server.reactor, server.pools.blob, _store_and_parse, server.store, raw)
    result = yield server.astore.deliver(Delivery(account_id, ref, parsed, mailbox, flags, keywords, internal_date,
                                                  check_quota))
    return result
