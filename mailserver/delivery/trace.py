"""Trace fields of a received message (sans-IO): the Received stamp and the header scan.

:class:`HeaderScanner` streams the message through while looking at its header section only: it counts ``Received``
fields (loop detection, RFC 5321 6.3) and adds a missing ``Message-ID`` / ``Date`` on submission (RFC 6409 8.2, 8.3).
:func:`received_header` makes the ``Received`` field (RFC 5321 4.4, RFC 3848 with-types).
"""

from __future__ import annotations

import email.utils
import time

from mailserver.delivery.envelope import ClientInfo

#: Header sections larger than this are passed through unchanged (no Message-ID/Date added, Received counted so far).
MAX_HEADER_SCAN = 1024 * 1024


class HeaderScanner:
    """Streams the message through, looking at its header section only (sans-IO).

    ``feed(chunk)`` returns the bytes to write (header bytes are held back until the end of the header section, at
    most :data:`MAX_HEADER_SCAN`); ``finish()`` returns whatever is still held.  ``received`` counts Received fields.
    """

    def __init__(self, add_missing: dict[str, str] | None = None):
        self.add_missing = dict(add_missing or {})  # lower-case name -> full "Name: value\r\n" field
        self.received = 0
        self._head = bytearray()
        self._scanning = True

    def feed(self, data: bytes) -> bytes:
        if not self._scanning:
            return data
        self._head += data
        # The header section ends at the first empty line (RFC 5322 2.1); a message may also start with it.
        if self._head.startswith(b"\r\n"):
            end = 0
        else:
            idx = self._head.find(b"\r\n\r\n")
            end = idx + 2 if idx >= 0 else -1
        if end < 0:
            if len(self._head) > MAX_HEADER_SCAN:
                return self._give_up()
            return b""
        return self._complete(end)

    def finish(self) -> bytes:
        if not self._scanning:
            return b""
        if self._head and not self._head.endswith(b"\r\n"):
            return self._give_up()  # no complete header section: pass through
        return self._complete(len(self._head))

    def _give_up(self) -> bytes:
        self._count(bytes(self._head))
        self._scanning = False
        out = bytes(self._head)
        self._head = bytearray()
        return out

    def _count(self, header: bytes) -> set[str]:
        names = set()
        for line in header.split(b"\r\n"):
            if not line or line[:1] in (b" ", b"\t"):
                continue
            name = line.split(b":", 1)[0].strip().lower()
            names.add(name.decode("latin-1"))
            if name == b"received":
                self.received += 1
        return names

    def _complete(self, end: int) -> bytes:
        head = bytes(self._head)
        self._head = bytearray()
        self._scanning = False
        present = self._count(head[:end])
        extra = "".join(v for k, v in self.add_missing.items() if k not in present).encode("utf-8")
        return head[:end] + extra + head[end:]


def with_protocol(info: ClientInfo, smtputf8: bool) -> str:
    """RFC 3848 / RFC 6531 4.3 "with" protocol type."""
    base = "UTF8SMTP" if smtputf8 else ("ESMTP" if info.esmtp else "SMTP")
    if not info.esmtp and not smtputf8:
        return "SMTP"
    suffix = ("S" if info.tls_version else "") + ("A" if info.authenticated else "")
    return base + suffix


_date_cache: tuple[int, str] = (-1, "")


def received_date(now: float) -> str:
    """The RFC 5322 date-time of ``now`` in local time, as ``email.utils.formatdate(now, localtime=True)`` (which
    drops the fraction of a second): made once per whole second (every message of that second shares it; the
    datetime and time-zone work cost about as much as the rest of the Received field)."""
    global _date_cache
    second = int(now)
    cached = _date_cache
    if cached[0] != second:
        cached = _date_cache = (second, email.utils.formatdate(second, localtime=True))
    return cached[1]


def received_header(hostname: str, info: ClientInfo, *, smtputf8: bool, queue_id: str, recipient: str | None,
                    show_auth_user: bool, now: float | None = None) -> str:
    """A Received field (RFC 5321 4.4 Stamp), folded, ending in CRLF."""
    helo = "".join(c for c in info.helo if c.isprintable() and c not in "()\\")[:200] or "unknown"
    ip = info.ip if ":" not in info.ip else "IPv6:" + info.ip
    lines = [f"Received: from {helo} ([{ip}])", f"\tby {hostname} with {with_protocol(info, smtputf8)} id {queue_id}"]
    if info.tls_version:
        lines.append(f"\t(using {info.tls_version} with cipher {info.tls_cipher})")
    if info.authenticated and show_auth_user:
        lines.append(f"\t(authenticated as {info.authenticated})")
    date = received_date(time.time() if now is None else now)
    lines.append(f"\tfor <{recipient}>; {date}" if recipient else f"\t; {date}")
    return "\r\n".join(lines) + "\r\n"


def missing_submission_fields(hostname: str) -> dict[str, str]:
    """RFC 6409 8.2 / 8.3: the Message-ID and Date a submission server may add when they are missing."""
    import secrets

    return {"message-id": f"Message-ID: <{secrets.token_hex(12)}@{hostname}>\r\n",
            "date": f"Date: {email.utils.formatdate(localtime=True)}\r\n"}


def final_delivery_fields(sender: str, delivered_to: str | None) -> bytes:
    """``Return-Path`` (RFC 5321 4.4: added at final delivery) and, for a single local recipient, ``Delivered-To``.

    One stored copy is shared by every local recipient, so ``Delivered-To`` is written only when there is exactly
    one: it must not name the others (as Dovecot LMTP does).
    """
    out = f"Return-Path: <{sender}>\r\n"
    if delivered_to:
        out += f"Delivered-To: {delivered_to}\r\n"
    return out.encode("utf-8")


def header_fields(fields) -> bytes:
    """``(name, value)`` pairs as header lines (a check stage's added fields)."""
    return "".join(f"{k}: {v}\r\n" for k, v in fields).encode("utf-8")
