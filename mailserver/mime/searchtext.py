"""The searchable text of a stored message (IMAP SEARCH BODY/TEXT, webmail search).

Built over :mod:`.parse` (the stored body structure) and :mod:`.text` (decoding); it lives apart from both so
that neither imports the other in a circle.
"""

from __future__ import annotations

import re

from .parse import iter_parts, parse_structure
from .text import bytes_to_text, charset_of, decode_charset, decode_header_text, decode_transfer, html_to_text


def extract_text(raw: bytes, limit: int = 1_000_000, bodystructure: dict | None = None) -> str:
    """Decoded text of a message's body for SEARCH BODY/TEXT (RFC 9051 6.4.4: strings in the body).

    In message order, joined with newlines: every text/* part (HTML stripped), every other message/* leaf
    (message/delivery-status, message/disposition-notification, ...: their fields are text, and Dovecot searches
    them too), and the header of every embedded message/rfc822 or message/global (those octets are part of the
    outer body; shown unfolded, with RFC 2047 words also decoded). Other types (attachments) are skipped. Pass the
    stored bodystructure to skip re-splitting the message: the stored tree already has the offsets this needs,
    so messages stored before this rule are searched by it too. At most ``limit`` characters are returned; at
    most about 4 bytes per wanted character are decoded from each part.
    """
    try:
        bs = bodystructure if bodystructure is not None else parse_structure(raw)
        chunks: list[str] = []
        total = 0
        for part in iter_parts(bs):
            if total >= limit:
                break
            if "children" in part:
                continue
            if "body" in part:
                inner = part["body"]
                start, end = inner["header_start"], inner["body_start"]
                text = _header_text(raw[start : min(end, start + (limit - total) * 4 + 4096)])
            else:
                mtype = str(part.get("type", "")).lower()
                if mtype not in ("text", "message"):
                    continue
                start, end = part["body_start"], part["body_end"]
                end = min(end, start + (limit - total) * 4 + 4096)
                data = decode_transfer(raw[start:end], part.get("encoding"))
                text = decode_charset(data, charset_of(part))
                if mtype == "text" and str(part.get("subtype", "")).lower() == "html":
                    text = html_to_text(text)
            chunks.append(text)
            total += len(text) + 1
        return "\n".join(chunks)[:limit]
    except Exception:
        return ""


_FOLD = re.compile(r"\r?\n[ \t]+")


def _header_text(data: bytes) -> str:
    """An embedded message's header as searchable text: unfolded lines (RFC 5322 2.2.3; the folding white space
    counts as one space, as in header searches), each line holding an RFC 2047 encoded word followed by its decoded
    form."""
    lines = []
    for line in _FOLD.sub(" ", bytes_to_text(data)).splitlines():
        lines.append(line)
        if "=?" in line:
            lines.append(decode_header_text(line))
    return "\n".join(lines)
