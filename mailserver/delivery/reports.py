"""Handing a delivery status report (RFC 3464) to the sender it is for.

A local sender (an account, or an address of a local domain that aliases to accounts) gets it in their INBOX at once;
a remote sender gets it through the outbound queue with the null reverse-path (RFC 5321 4.5.5, RFC 3461 6.2: no
report about a report).  Used by the queue runner and by local delivery when only some recipients of an accepted
message could be served.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.logger import Logger

from mailserver.threads import run_in

log = Logger()


@defer.inlineCallbacks
def send_report(server, address: str, raw: bytes):
    """Deliver the report ``raw`` to ``address`` (fires when it is stored: in a mailbox or in the queue)."""
    from mailserver.ingest import deliver_raw
    from storage.store import QueueRecipientSpec

    store = server.store

    def local_targets():
        acct = store.get_account(address)
        if acct is not None:
            return [acct.id], True
        domain = address.rpartition("@")[2].lower()
        dom = store.get_domain(domain)
        if dom is None or dom.mode != "local":
            return [], False
        ids = []
        for t in store.alias_targets(address.lower()) or store.alias_targets("@" + domain):
            a = store.get_account(t)
            if a is not None:
                ids.append(a.id)
        return ids, True

    ids, ours = yield run_in(server.reactor, server.pools.db_read, local_targets)
    if ours:
        if not ids:
            log.warn("report for {address} dropped: no such local mailbox", address=address)
        for account_id in ids:
            yield deliver_raw(server, account_id, raw, check_quota=False)
        return
    ref = yield run_in(server.reactor, server.pools.blob, store.blobs.put, raw)
    yield server.astore.enqueue("", ref, [QueueRecipientSpec(address)], source="bounce", body_8bit=not raw.isascii())
    server.kick_queue()
