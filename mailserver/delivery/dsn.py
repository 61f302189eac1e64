"""Delivery status notifications (RFC 3464 reports, RFC 3461 NOTIFY/RET semantics).  Pure functions, no I/O.

:func:`build_report` makes the whole report message (bytes, CRLF): ``multipart/report; report-type=delivery-status``
with a human-readable part, the ``message/delivery-status`` part and the original message or its header
(``message/rfc822`` / ``text/rfc822-headers``).  Reports about non-ASCII addresses use the RFC 6533 types
(``message/global-delivery-status``, ``message/global``).

Who gets what (decided by the queue runner with :func:`wants_report`):

* no report ever to the null reverse-path ``<>`` (RFC 5321 6.1, RFC 3461 6.2: a report is itself sent with ``<>``);
* ``NOTIFY=NEVER`` silences every report; without NOTIFY we report failures and delays (RFC 3461 4.1 leaves the
  default to us);
* a delay report is sent once per recipient; a success report only for ``NOTIFY=SUCCESS`` when the next hop did not
  take the DSN request over (action ``relayed``, RFC 3461 6.2.3.1).
"""

from __future__ import annotations

import email.utils
import secrets
import time
from dataclasses import dataclass

#: Without RET, failure reports carry the full original up to this size; larger ones only its header.
RETURN_FULL_MAX = 10 * 1024 * 1024
#: How much of a message is read to find the end of its header for a headers-only report.
HEADER_READ_MAX = 256 * 1024

FAILURE, DELAY, SUCCESS = "failure", "delay", "success"
_ACTION_NOTIFY = {FAILURE: "FAILURE", DELAY: "DELAY", SUCCESS: "SUCCESS"}
DEFAULT_NOTIFY = ("FAILURE", "DELAY")


@dataclass(frozen=True)
class ReportRecipient:
    recipient: str
    action: str  # failed | delayed | delivered | relayed (RFC 3464 2.3.3)
    status: str  # RFC 3463 code, e.g. "5.1.1"
    diagnostic: str = ""  # the remote reply, "550 5.1.1 no such user"
    remote_mta: str = ""
    orcpt: str = ""  # "rfc822;xtext" as received
    last_attempt: float = 0.0
    will_retry_until: float = 0.0
    reason: str = ""  # our own explanation when there is no remote reply (DNS, loop, timeout)


def wants_report(sender: str, notify: str, kind: str) -> bool:
    """RFC 3461 4.1 / 5321 6.1: may a report of ``kind`` go to ``sender`` for a recipient with ``notify``?"""
    if not sender:
        return False
    items = tuple(i.strip().upper() for i in notify.split(",") if i.strip()) or DEFAULT_NOTIFY
    if "NEVER" in items:
        return False
    return _ACTION_NOTIFY[kind] in items


def split_header(raw: bytes) -> bytes:
    """The header of ``raw`` up to and including the empty line (all of ``raw`` when it has no body)."""
    for sep in (b"\r\n\r\n", b"\n\n"):
        i = raw.find(sep)
        if i >= 0:
            return raw[:i + len(sep)]
    return raw if raw.endswith(b"\n") else raw + b"\r\n"


def return_full(kind: str, ret: str, size: int) -> bool:
    """RFC 3461 4.3: RET=FULL returns the message, RET=HDRS the header; without RET we choose by kind and size."""
    if kind != FAILURE:
        return ret == "FULL"
    if ret == "HDRS":
        return False
    if ret == "FULL":
        return True
    return size <= RETURN_FULL_MAX


def _xtext_decode(value: str) -> str:
    import re

    return re.sub(r"\+([0-9A-Fa-f]{2})", lambda m: chr(int(m.group(1), 16)), value)


def _date(t: float) -> str:
    return email.utils.formatdate(t, localtime=False, usegmt=True)


def _clean(text: str) -> str:
    return " ".join(text.replace("\r", " ").replace("\n", " ").split())


_SUBJECTS = {
    FAILURE: "Undelivered Mail Returned to Sender",
    DELAY: "Delayed Mail (still being retried)",
    SUCCESS: "Successful Mail Delivery Report",
}

_INTRO = {
    FAILURE: ("This is the mail system at host {host}.\r\n\r\n"
              "I'm sorry to have to inform you that your message could not be delivered to one or more\r\n"
              "recipients. The reasons are below; the message (or its header) is attached.\r\n"),
    DELAY: ("This is the mail system at host {host}.\r\n\r\n"
            "Your message could not be delivered yet to the recipients below. Nothing needs to be done:\r\n"
            "the mail system keeps trying until {until}, and tells you if it gives up.\r\n"),
    SUCCESS: ("This is the mail system at host {host}.\r\n\r\n"
              "Your message was delivered to the recipients below, as you asked to be told.\r\n"),
}


def build_report(*, kind: str, reporting_mta: str, sender: str, recipients: list[ReportRecipient], original: bytes,
                 original_is_full: bool, envid: str = "", arrival: float = 0.0, now: float | None = None,
                 message_id: str | None = None) -> bytes:
    """The RFC 3464 report (bytes with CRLF line ends) to send to ``sender`` with the null reverse-path."""
    now = time.time() if now is None else now
    needs_utf8 = any(not r.recipient.isascii() or not r.orcpt.isascii() for r in recipients) or not sender.isascii()
    boundary = "=_report_" + secrets.token_hex(12)
    msgid = message_id or f"<{int(now)}.{secrets.token_hex(8)}@{reporting_mta}>"
    addr_type = "utf-8" if needs_utf8 else "rfc822"
    until = max((r.will_retry_until for r in recipients), default=0.0)

    head = [
        f"From: Mail Delivery System <MAILER-DAEMON@{reporting_mta}>",
        f"To: <{sender}>",
        f"Subject: {_SUBJECTS[kind]}",
        f"Date: {_date(now)}",
        f"Message-ID: {msgid}",
        "Auto-Submitted: auto-replied",  # RFC 3834 5
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
    ]
    human = [_INTRO[kind].format(host=reporting_mta, until=_date(until) if until else "later")]
    for r in recipients:
        line = f"<{r.recipient}>: {r.action}"
        if r.remote_mta:
            line += f" (host {r.remote_mta})"
        if r.diagnostic or r.reason:
            line += f": {_clean(r.diagnostic or r.reason)}"
        human.append(line + "\r\n")

    # RFC 3464 2.2: per-message fields, then one block per recipient (2.3).
    status = [f"Reporting-MTA: dns; {reporting_mta}"]
    if envid:
        status.append(f"Original-Envelope-Id: {_xtext_decode(envid)}")
    if arrival:
        status.append(f"Arrival-Date: {_date(arrival)}")
    blocks = ["\r\n".join(status)]
    for r in recipients:
        f = []
        if r.orcpt:
            kind_, _, addr = r.orcpt.partition(";")
            f.append(f"Original-Recipient: {kind_}; {_xtext_decode(addr) if kind_.lower() != 'utf-8' else addr}")
        f.append(f"Final-Recipient: {addr_type}; {r.recipient}")
        f.append(f"Action: {r.action}")
        f.append(f"Status: {r.status}")
        if r.remote_mta:
            f.append(f"Remote-MTA: dns; {r.remote_mta}")
        if r.diagnostic:
            f.append(f"Diagnostic-Code: smtp; {_clean(r.diagnostic)}")
        if r.last_attempt:
            f.append(f"Last-Attempt-Date: {_date(r.last_attempt)}")
        if r.will_retry_until:
            f.append(f"Will-Retry-Until: {_date(r.will_retry_until)}")
        blocks.append("\r\n".join(f))
    status_type = "message/global-delivery-status" if needs_utf8 else "message/delivery-status"
    orig_cte = "7bit" if original.isascii() else "8bit"
    if original_is_full:
        orig_type = "message/global" if needs_utf8 and not original.isascii() else "message/rfc822"
    else:
        orig_type = "text/rfc822-headers"
    if not original.endswith(b"\r\n"):
        original += b"\r\n"

    out = "\r\n".join(head).encode() + b"\r\n\r\n"
    out += b"This is a MIME-encapsulated message.\r\n\r\n"
    out += f"--{boundary}\r\nContent-Description: Notification\r\nContent-Type: text/plain; charset=utf-8\r\n" \
           f"Content-Transfer-Encoding: 8bit\r\n\r\n".encode()
    out += "".join(human).encode("utf-8") + b"\r\n"
    out += f"--{boundary}\r\nContent-Description: Delivery report\r\nContent-Type: {status_type}\r\n\r\n".encode()
    out += "\r\n\r\n".join(blocks).encode("utf-8") + b"\r\n\r\n"
    desc = "Undelivered Message" if original_is_full else "Undelivered Message Headers"
    out += f"--{boundary}\r\nContent-Description: {desc}\r\nContent-Type: {orig_type}\r\n" \
           f"Content-Transfer-Encoding: {orig_cte}\r\n\r\n".encode()
    out += original
    out += f"--{boundary}--\r\n".encode()
    return out
