"""Handing a delivery status report (RFC 3464) to the sender it is for, through the ingest pipeline.

A local sender (an account, or an address of a local domain that aliases to accounts) gets it in their INBOX at once;
a remote sender gets it through the outbound queue with the null reverse-path (RFC 5321 4.5.5, RFC 3461 6.2: no
report about a report).  Used by the queue runner and by the pipeline when only some recipients of an accepted
message could be served (:func:`report_failures`).
"""

from __future__ import annotations

import time

from twisted.internet import defer
from twisted.logger import Logger

from mailserver.address import mailbox_of
from mailserver.delivery import dsn as dsnlib
from mailserver.delivery.envelope import REPORT, Envelope, Recipient, Request

log = Logger()


def report_request(address: str, raw: bytes) -> Request:
    """A report for ``address``: routed like any recipient (accounts, aliases, catch-all, relay domains, remote),
    sent with the null reverse-path, stored without a quota check (a report must not be lost to a full mailbox)."""
    env = Envelope(None, (Recipient(mailbox_of(address)),), body="" if raw.isascii() else "8BITMIME")
    return Request(REPORT, envelope=env, check_quota=False, may_relay=True)


@defer.inlineCallbacks
def send_report(pipeline, address: str, raw: bytes):
    """Deliver the report ``raw`` to ``address`` through ``pipeline`` (fires when it is stored: in a mailbox or in
    the queue)."""
    result = yield pipeline.ingest(report_request(address, raw), raw)
    for o in result.failed:
        log.warn("report for {address} dropped: {error}", address=o.address, error=o.text or o.reason)
    return result


async def report_failures(pipeline, envelope: Envelope, failed, blob_id: str) -> None:
    """Report the recipients in ``failed`` (Outcomes) to the envelope's sender, before the producer's answer."""
    sender = envelope.sender
    rows = []
    for o in failed:
        rc = o.recipient
        notify = ",".join(rc.notify) if rc is not None else ""
        if not dsnlib.wants_report(sender, notify, dsnlib.FAILURE):
            continue
        rows.append(dsnlib.ReportRecipient(o.address, "failed", o.status or "5.0.0",
                                           orcpt=rc.orcpt if rc is not None else "", last_attempt=time.time(),
                                           reason=f"{o.status} {o.text}"))
    if not rows:
        return
    head = await pipeline.runner.read_blob(blob_id, 0, dsnlib.HEADER_READ_MAX)
    raw = dsnlib.build_report(kind=dsnlib.FAILURE, reporting_mta=pipeline.config.hostname, sender=sender,
                              recipients=rows, original=dsnlib.split_header(head), original_is_full=False,
                              envid=envelope.envid, arrival=time.time())
    try:
        await send_report(pipeline, sender, raw)
    except Exception:
        log.failure("failure report to {sender} could not be stored", sender=sender)
