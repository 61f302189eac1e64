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
    """Deliver the report ``raw`` to ``address`` (fires when it is stored: in a mailbox or in the queue).

    The address is routed like any recipient (accounts, aliases, catch-all, relay domains); local copies go into
    INBOXes without a quota check (a report must not be lost to a full mailbox), the rest into the queue.
    """
    from mailserver.delivery.router import LOCAL, router_for
    from mailserver.ingest import deliver_raw
    from storage.store import QueueRecipientSpec

    store = server.store
    rr = yield run_in(server.reactor, server.pools.db_read, router_for(server).route, address, may_relay=True,
                      check_quota=False)
    if not rr.routes:
        log.warn("report for {address} dropped: {error}", address=address, error=rr.error or "no route")
        return
    remote = [r for r in rr.routes if r.kind != LOCAL]
    for r in rr.routes:
        if r.kind == LOCAL:
            yield deliver_raw(server, r.account_id, raw, check_quota=False)
    if remote:
        ref = yield run_in(server.reactor, server.pools.blob, store.blobs.put, raw)
        yield server.astore.enqueue("", ref, [QueueRecipientSpec(r.address, route=r.relay_to) for r in remote],
                                    source="bounce", body_8bit=not raw.isascii())
        server.kick_queue()
