"""Small helpers for producers of local mail; every message goes through :mod:`mailserver.delivery.pipeline`.

``deliver_raw`` puts a whole message into one account's mailbox (drafts, Sent copies, tests, benchmarks): a request
with a placement, so routing is the placement and the filter stages are skipped.  ``parsed_columns`` is the
parse-once step for code that stores messages itself (benchmarks, tests).
"""

from __future__ import annotations

from twisted.internet import defer

from mailserver.delivery.body import parse
from mailserver.delivery.envelope import LOCAL, Placement, Request


def parsed_columns(raw: bytes) -> dict:
    """The message's parse-once columns (storage.store.PARSED_COLUMNS)."""
    return parse(raw)


def deliver_raw(services, account_id: int, raw: bytes, *, mailbox: str = "INBOX", flags: int = 0,
                keywords: tuple[str, ...] = (), internal_date: float | None = None, check_quota: bool = True,
                producer: str = LOCAL) -> defer.Deferred:
    """Deliver ``raw`` into ``mailbox`` of the account (a missing mailbox falls back to INBOX); fires with the
    recipient's :class:`~mailserver.delivery.envelope.Outcome` (``ok``, ``mailbox_id``, ``uid``, ``reason``)."""
    request = Request(producer, placement=Placement(account_id, mailbox, None, flags, tuple(keywords), internal_date),
                      check_quota=check_quota)
    return services.pipeline.ingest(request, raw).addCallback(_first_outcome)


def _first_outcome(result):
    return result.outcomes[0]
