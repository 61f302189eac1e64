"""Vacation done right (RFC 5230, RFC 6131, RFC 3834): whether to answer, and the answer.  No I/O.

:func:`reason_not_to_reply` applies the rules of RFC 3834 2 and RFC 5230 4.5/4.6: no reply to the null sender, to
ourselves, to system addresses (MAILER-DAEMON, owner-..., ...-request), to automatic mail (``Auto-Submitted``
other than "no", ``Precedence: bulk/list/junk``), to mailing lists (any ``List-*`` field), nor to a message that
does not name one of our addresses in To/Cc/Bcc (Resent- too).  The once-per-sender-per-period rule needs the store
(``storage/sieve.py``); :func:`handle_of` is the key it is kept under.  :func:`build_reply` writes the reply:
``Auto-Submitted: auto-replied`` (RFC 3834 5), In-Reply-To/References, "Auto: " + the subject by default.
"""

from __future__ import annotations

import hashlib
import re
import time
from email.utils import formatdate, make_msgid

from mailserver.sieve.actions import Vacation
from mailserver.sieve.message import MessageFacts, addresses

_LIST_FIELDS = ("list-id", "list-help", "list-subscribe", "list-unsubscribe", "list-post", "list-owner",
                "list-archive")
_SYSTEM_LOCAL = re.compile(r"^(mailer-daemon|listserv|majordomo|postmaster|owner-.*|.*-request|.*-owner|"
                           r"bounce(s)?|.*-bounces?|noreply|no-reply|do-not-reply)$", re.I)
_RECIPIENT_FIELDS = ("to", "cc", "bcc", "resent-to", "resent-cc", "resent-bcc")


def handle_of(v: Vacation) -> str:
    """RFC 5230 4.2: replies are tracked per handle; without :handle it follows from the reply's arguments."""
    basis = v.handle if v.handle else f"{v.reason}\0{v.subject}\0{v.from_}\0{int(v.mime)}"
    return hashlib.sha256(basis.encode("utf-8")).hexdigest()


def reason_not_to_reply(facts: MessageFacts, sender: str, own: list[str], v: Vacation) -> str | None:
    """None when a reply may be sent; otherwise why not (for the log)."""
    if not sender:
        return "null sender"
    s = sender.lower()
    mine = {a.lower() for a in own} | {a.lower() for a in v.addresses}
    if s in mine:
        return "the sender is the recipient"
    if _SYSTEM_LOCAL.match(s.rpartition("@")[0]):
        return "the sender is a system address"
    for value in facts.header("auto-submitted"):
        if value.split(";")[0].strip().lower() != "no":
            return "the message is Auto-Submitted"  # RFC 3834 2, RFC 5230 4.6
    for value in facts.header("precedence"):
        if value.strip().lower() in ("bulk", "list", "junk"):
            return f"Precedence: {value.strip().lower()}"
    for name in _LIST_FIELDS:
        if facts.has(name):
            return "a mailing list message"
    named = {a.lower() for f in _RECIPIENT_FIELDS for raw in facts.raw_header(f) for a in addresses(raw)}
    if not named & mine:
        return "none of our addresses is in To/Cc/Bcc (RFC 5230 4.5)"
    return None


def _encode_subject(subject: str) -> str:
    if subject.isascii():
        return subject
    from email.header import Header

    return Header(subject, "utf-8").encode()


def build_reply(facts: MessageFacts, v: Vacation, *, sender: str, from_address: str, hostname: str,
                now: float | None = None) -> bytes:
    """The reply message (CRLF line ends)."""
    original_subject = (facts.header("subject") or [""])[0]
    subject = v.subject or f"Auto: {original_subject}".rstrip()
    msgid = (facts.header("message-id") or [""])[0].strip()
    refs = " ".join((facts.header("references") or [""])[0].split())
    fields = [
        ("From", f"<{from_address}>"),
        ("To", f"<{sender}>"),
        ("Subject", _encode_subject(subject.replace("\r", " ").replace("\n", " "))),
        ("Date", formatdate(time.time() if now is None else now, localtime=False)),
        ("Message-ID", make_msgid(domain=hostname)),
        ("Auto-Submitted", "auto-replied (vacation)"),  # RFC 3834 5.1
        ("Precedence", "bulk"),
    ]
    if msgid:
        fields.append(("In-Reply-To", msgid))  # RFC 3834 3.1.5
        fields.append(("References", f"{refs} {msgid}".strip()))
    fields.append(("MIME-Version", "1.0"))
    reason = v.reason.replace("\r\n", "\n").replace("\n", "\r\n")
    if v.mime:
        # RFC 5230 4.8: the reason is a MIME entity (its own header and body).
        body = reason
    else:
        fields += [("Content-Type", "text/plain; charset=utf-8"), ("Content-Transfer-Encoding", "8bit")]
        body = "\r\n" + reason
    head = "".join(f"{k}: {val}\r\n" for k, val in fields)
    if not body.endswith("\r\n"):
        body += "\r\n"
    return (head + body).encode("utf-8")
