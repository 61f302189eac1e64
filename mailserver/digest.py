"""The quarantine digest: once a day, a mail to each account listing the copies held for it since its last digest,
each with a release and a delete link that work without signing in.

Links (:func:`sign`, :func:`verify`): ``/q/<action>/<item id>/<signature>``, the signature an HMAC-SHA256 with the
cluster's secret (``Store.server_key(LINK_SECRET)``: a database row, the same on every node) over the action, the
held copy's id, its account's id and its expiry.  So a link names one action on one copy of one account, expires
with the copy (an expired one is refused even before the collector removed the copy) and cannot be turned into
another (a changed id, action or account fails the signature).  A link acts once: its use is recorded
(``Store.use_quarantine_token``) before it acts.  Opening a link (GET) only shows a confirm page; the POST of that
page acts, so mail scanners that fetch every URL release nothing (``webmail/views/links.py``).

Schedule (:func:`slot`): an account's digest is due once its hour of the day (UTC; its own setting, else its
domain's ``[quarantine.domain."d"] digest_hour``, else ``[quarantine] digest_hour``) has passed today and no digest
went out since; it lists the copies that arrived before that hour and no digest listed yet.  The worker holding the
maintenance lease looks every ``digest_check_interval`` seconds (:class:`DigestRunner`, on the reactor's clock, so
tests drive it with ``task.Clock``); ``Store.claim_quarantine_digest`` makes one run per account and day win across
nodes.  The digest is a new message through the ingest pipeline (null reverse path, producer ``DIGEST``: not
scanned), so the account's own filter and the mailbox steps apply as to any delivery.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import time
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid

from twisted.internet import defer, task
from twisted.logger import Logger

from mailserver.address import mailbox_of
from mailserver.delivery.envelope import DIGEST, Envelope, Recipient, Request

log = Logger()

#: The name of the links' HMAC key in ``server_secrets``.
LINK_SECRET = "quarantine-links"
#: What a link may do.
ACTIONS = ("release", "delete")
#: Most held copies one digest lists (the rest: "and N more", in the webmail).
MAX_LISTED = 100
#: Length of a link's signature (base64url of the first 32 bytes of the HMAC, no padding).
SIGNATURE_LENGTH = 43
DAY = 86400.0


# --------------------------------------------------------------------------------------------- links


def sign(secret: bytes, action: str, item_id: int, account_id: int, expires: float) -> str:
    """The signature of one action on one held copy of one account, valid until ``expires``."""
    msg = f"quarantine-link\0{action}\0{item_id}\0{account_id}\0{int(expires)}".encode()
    mac = hmac.new(secret, msg, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")


def link_path(secret: bytes, action: str, item) -> str:
    """The path of ``action``'s link for the held copy ``item`` (a QuarantineItem)."""
    return f"/q/{action}/{item.id}/{sign(secret, action, item.id, item.account_id, item.expires)}"


#: Why a link is refused (the page's words).
FORGED = "This link is not valid: it was changed or was not made by this server."
EXPIRED = "This link has expired."
USED = "This link was used already. Each link works once."
GONE = "This message is no longer in the quarantine (it was released, deleted or has expired)."


def verify(secret: bytes, action: str, item, signature: str, now: float) -> str | None:
    """None when ``signature`` is the link of ``action`` on ``item`` (a QuarantineItem, or None when no longer held)
    and has not expired; else the reason (FORGED, EXPIRED or GONE)."""
    if action not in ACTIONS or len(signature) != SIGNATURE_LENGTH:
        return FORGED
    if item is None:
        return GONE
    if not hmac.compare_digest(signature, sign(secret, action, item.id, item.account_id, item.expires)):
        return FORGED
    if now >= item.expires:
        return EXPIRED
    return None


def token_id(action: str, item_id: int, signature: str) -> str:
    """The key under which a link's use is recorded."""
    return hashlib.sha256(f"{action}\0{item_id}\0{signature}".encode()).hexdigest()


# --------------------------------------------------------------------------------------------- schedule


def slot(now: float, hour: int) -> float:
    """The latest moment at ``hour`` o'clock UTC that is not after ``now``."""
    day = datetime.datetime.fromtimestamp(now, datetime.timezone.utc).replace(hour=0, minute=0, second=0,
                                                                              microsecond=0)
    at = day.timestamp() + hour * 3600
    return at if at <= now else at - DAY


def effective(config, address: str, setting) -> tuple[bool, int]:
    """(digests on, hour) for an account: its own setting, else its domain's, else the server's."""
    on, hour = config.quarantine.digest_for(address.rpartition("@")[2])
    if setting is not None:
        on = on if setting.enabled is None else setting.enabled
        hour = hour if setting.hour is None else setting.hour
    return on, hour


# --------------------------------------------------------------------------------------------- the message


def build(config, address: str, items, secret: bytes, now: float, base_url: str) -> bytes:
    """The digest message for ``address`` listing ``items`` (newest first)."""
    shown = items[:MAX_LISTED]
    n = len(items)
    lines = [f"{n} new message{'s' if n != 1 else ''} {'were' if n != 1 else 'was'} held in your quarantine.",
             "Open a link to release a message to your inbox or to delete it; each link asks you to confirm,",
             "works once and ends when the message expires.", ""]
    for i, item in enumerate(shown, 1):
        when = datetime.datetime.fromtimestamp(item.arrived, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        lines += [f"{i}. {_one_line(item.subject) or '(no subject)'}",
                  f"   From: {_one_line(item.from_header or item.sender) or '(no sender)'}",
                  f"   Held: {when}, {_one_line(item.reason_text or item.reason)}",
                  f"   Release: {base_url}{link_path(secret, 'release', item)}",
                  f"   Delete:  {base_url}{link_path(secret, 'delete', item)}", ""]
    if n > len(shown):
        lines.append(f"... and {n - len(shown)} more: see {base_url}/quarantine")
    lines.append(f"The whole quarantine: {base_url}/quarantine")
    msg = EmailMessage(policy=SMTP)
    msg["From"] = f"Quarantine <postmaster@{config.hostname}>"
    msg["To"] = address
    msg["Subject"] = f"Quarantine: {n} new held message{'s' if n != 1 else ''}"
    msg["Date"] = format_datetime(datetime.datetime.fromtimestamp(now, datetime.timezone.utc))
    msg["Message-ID"] = make_msgid("digest", config.hostname)
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no automatic replies to it
    msg.set_content("\n".join(lines) + "\n", charset="utf-8", cte="quoted-printable")
    return msg.as_bytes()


def _one_line(text: str) -> str:
    return " ".join(str(text or "").split())[:200]


# --------------------------------------------------------------------------------------------- the runner


class DigestRunner:
    """Sends the due digests every ``digest_check_interval`` seconds on ``clock`` (started by the service in the
    process that runs maintenance)."""

    def __init__(self, clock, astore, pipeline, config):
        self.clock = clock
        self.astore = astore
        self.pipeline = pipeline
        self.config = config
        self.base_url = (config.quarantine.base_url or f"https://{config.hostname}").rstrip("/")
        self._loop: task.LoopingCall | None = None
        self._secret: bytes | None = None
        self._running = False

    def start(self) -> None:
        self._loop = task.LoopingCall(self.tick)
        self._loop.clock = self.clock
        self._loop.start(self.config.quarantine.digest_check_interval, now=False)

    def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    def tick(self) -> defer.Deferred:
        if self._running:  # a slow run is still going: skip this look
            return defer.succeed(0)
        self._running = True
        d = defer.ensureDeferred(self.run(self.clock.seconds()))

        def done(result):
            self._running = False
            return result

        d.addBoth(done)
        d.addErrback(lambda f: log.failure("quarantine digests failed", f))
        return d

    async def run(self, now: float | None = None) -> int:
        """Send every digest due at ``now``; how many were sent."""
        now = time.time() if now is None else now
        pending = await self.astore.quarantine_digest_pending()
        if not pending:
            return 0
        settings = await self.astore.digest_settings(sorted(pending))
        if self._secret is None:
            self._secret = await self.astore.server_key(LINK_SECRET)
        sent = 0
        for account_id, items in sorted(pending.items()):
            address = items[0].account
            setting = settings.get(account_id)
            on, hour = effective(self.config, address, setting)
            if not on:
                continue
            due = slot(now, hour)
            if setting is not None and setting.last_sent >= due:
                continue
            listed = [i for i in items if i.arrived <= due and i.expires > now]
            if not listed:
                continue
            if not await self.astore.claim_quarantine_digest(account_id, [i.id for i in listed], now, due):
                continue  # another node sent it
            raw = build(self.config, address, listed, self._secret, now, self.base_url)
            env = Envelope(None, (Recipient(mailbox_of(address)),))
            result = await self.pipeline.ingest(Request(DIGEST, envelope=env, check_quota=False), raw)
            for o in result.failed:
                log.warn("quarantine digest for {address} not delivered: {error}", address=address,
                         error=o.text or o.reason)
            if not result.failed:
                log.info("quarantine digest for {address}: {n} held copies", address=address, n=len(listed))
                sent += 1
        return sent
