"""Building outgoing messages (``email.message.EmailMessage``) and handing them to the submission path.

Header text is encoded by the stdlib policy (RFC 2047 for non-ASCII words, RFC 2231 for attachment file names); CR,
LF and NUL in any header field are refused before anything is built (header injection).  Replies and forwards get
``In-Reply-To`` and ``References`` as RFC 5322 3.6.4 describes.  A forwarded message is attached byte-exact as
``message/rfc822`` (RFC 2046 5.2.1: identity encoding only, never base64).

:func:`send` is the single switch-over point to the SMTP engineer's submission pipeline (see its docstring).
"""

from __future__ import annotations

import email.policy
import email.utils
import re
import secrets
import time
from dataclasses import dataclass, field
from email.headerregistry import Address
from email.message import EmailMessage, MIMEPart

from twisted.internet.defer import inlineCallbacks

#: Longest subject accepted (characters).
MAX_SUBJECT = 998
#: Most recipients of one message (To + Cc + Bcc).
MAX_RECIPIENTS = 100
#: Longest body text (characters).
MAX_BODY = 10 * 1024 * 1024
POLICY = email.policy.SMTP  # CRLF line ends (RFC 5322 2.1)

_ADDR_SPEC = re.compile(r"^[^@\s<>()\[\],;:\"\\]+@[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?"
                        r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?)*$")


class ComposeError(Exception):
    """Something the writer must fix (shown on the compose page)."""


@dataclass(frozen=True)
class FileAttachment:
    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class MessageAttachment:
    """A whole message attached as message/rfc822 (forward as attachment), byte-exact."""

    filename: str
    raw: bytes


@dataclass(frozen=True)
class Draft:
    from_addr: str
    from_name: str = ""
    to: tuple[tuple[str, str], ...] = ()
    cc: tuple[tuple[str, str], ...] = ()
    bcc: tuple[tuple[str, str], ...] = ()
    subject: str = ""
    body: str = ""
    in_reply_to: str = ""
    references: str = ""
    attachments: tuple[FileAttachment | MessageAttachment, ...] = field(default_factory=tuple)

    def recipients(self) -> list[str]:
        seen: dict[str, None] = {}
        for _n, a in self.to + self.cc + self.bcc:
            seen.setdefault(a, None)
        return list(seen)


#: What Python's header writer takes for a line break (``str.splitlines``) and refuses in a header value.
_LINE_BREAKS = frozenset("\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029")


def check_header_text(value: str, what: str) -> str:
    """RFC 5322 2.2: a header field body holds no line break: CR and LF, and every other character the header
    writer would take for one (VT, FF, NEL, U+2028, ...); nor any other control character except TAB."""
    for c in value:
        if c in _LINE_BREAKS:
            raise ComposeError(f"{what} must not contain line breaks")
        if (ord(c) < 0x20 and c != "\t") or 0x7F <= ord(c) < 0xA0:
            raise ComposeError(f"{what} must not contain control characters")
    return value


def parse_recipients(text: str, what: str = "recipient") -> tuple[tuple[str, str], ...]:
    """"Name <a@b>, c@d" -> ((name, addr), ...); refuses line breaks and malformed addresses."""
    check_header_text(text, what)
    if not text.strip():
        return ()
    out = []
    try:
        pairs = email.utils.getaddresses([text], strict=True)
    except TypeError:  # Python before 3.11.10/3.12.5 has no strict mode
        pairs = email.utils.getaddresses([text])
    for name, addr in pairs:
        if not name and not addr:
            continue
        addr = addr.strip()
        if not _ADDR_SPEC.match(addr) or len(addr) > 320:
            raise ComposeError(f"not a valid address: {addr or name}")
        out.append((name.strip(), addr))
    if not out:
        raise ComposeError(f"not a valid address list: {text[:100]}")
    return tuple(out)


def _address(name: str, addr: str) -> Address:
    return Address(display_name=name, addr_spec=addr)


def make_message_id(from_addr: str) -> str:
    domain = from_addr.rsplit("@", 1)[-1] or "localhost"
    return f"<{secrets.token_hex(12)}.{int(time.time())}@{domain}>"


def _msg_ids(text: str) -> list[str]:
    return re.findall(r"<[^<>\s]+>", text or "")


def threading_headers(orig_message_id: str, orig_references: str, orig_in_reply_to: str = "") -> tuple[str, str]:
    """(In-Reply-To, References) of a reply, RFC 5322 3.6.4.

    References = the parent's References (or, lacking those, its In-Reply-To when it names one message) followed
    by the parent's Message-ID.
    """
    parent = _msg_ids(orig_message_id)[:1]
    refs = _msg_ids(orig_references)
    if not refs:
        irt = _msg_ids(orig_in_reply_to)
        refs = irt if len(irt) == 1 else []
    chain = refs + [p for p in parent if p not in refs]
    return (parent[0] if parent else ""), " ".join(chain[-50:])


def reply_subject(subject: str) -> str:
    return subject if re.match(r"^\s*re\s*:", subject or "", re.I) else f"Re: {subject or ''}".strip()


def forward_subject(subject: str) -> str:
    return subject if re.match(r"^\s*(fwd?|fw)\s*:", subject or "", re.I) else f"Fwd: {subject or ''}".strip()


def quote_body(text: str, author: str, date: float) -> str:
    when = time.strftime("%a, %d %b %Y %H:%M", time.localtime(date)) if date else "an earlier date"
    lines = (text or "").replace("\r\n", "\n").split("\n")
    quoted = "\n".join(">" + ("" if ln.startswith(">") or not ln else " ") + ln for ln in lines)
    return f"\n\nOn {when}, {author} wrote:\n{quoted}\n"


def forward_body(text: str, headers: list[tuple[str, str]]) -> str:
    head = "\n".join(f"{k}: {v}" for k, v in headers if v)
    return f"\n\n---------- Forwarded message ----------\n{head}\n\n{text or ''}\n"


def build(draft: Draft, *, message_id: str, date: float | None = None, include_bcc: bool = False,
          extra_headers: tuple[tuple[str, str], ...] = ()) -> bytes:
    """The message as bytes with CRLF line ends.  ``include_bcc`` for the Sent/Drafts copy only."""
    for what, value in (("Subject", draft.subject), ("From name", draft.from_name),
                        ("In-Reply-To", draft.in_reply_to), ("References", draft.references)):
        check_header_text(value, what)
    if len(draft.subject) > MAX_SUBJECT:
        raise ComposeError("the subject is too long")
    if len(draft.body) > MAX_BODY:
        raise ComposeError("the text is too long")
    msg = EmailMessage(policy=POLICY)
    msg["Date"] = email.utils.formatdate(date or time.time(), localtime=True)
    msg["From"] = _address(draft.from_name, draft.from_addr)
    if draft.to:
        msg["To"] = [_address(n, a) for n, a in draft.to]
    if draft.cc:
        msg["Cc"] = [_address(n, a) for n, a in draft.cc]
    if include_bcc and draft.bcc:
        msg["Bcc"] = [_address(n, a) for n, a in draft.bcc]
    msg["Subject"] = draft.subject
    msg["Message-ID"] = message_id
    if draft.in_reply_to:
        msg["In-Reply-To"] = draft.in_reply_to
    if draft.references:
        msg["References"] = draft.references
    for k, v in extra_headers:
        msg[k] = check_header_text(v, k)
    body = draft.body.replace("\r\n", "\n")
    if not body.endswith("\n"):
        body += "\n"
    ascii_body = body.isascii()
    msg.set_content(body, subtype="plain", charset="us-ascii" if ascii_body else "utf-8",
                    cte="7bit" if ascii_body and max(map(len, body.split("\n"))) < 990 else "quoted-printable")
    placeholders: dict[bytes, bytes] = {}
    for att in draft.attachments:
        if isinstance(att, FileAttachment):
            maintype, _, subtype = (att.content_type or "application/octet-stream").partition("/")
            if not re.fullmatch(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}", maintype.lower()) or \
                    not re.fullmatch(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}", subtype.lower() or "x"):
                maintype, subtype = "application", "octet-stream"
            if maintype.lower() in ("multipart", "message"):
                maintype, subtype = "application", "octet-stream"
            msg.add_attachment(att.data, maintype=maintype.lower(), subtype=subtype.lower() or "octet-stream",
                               filename=_clean_filename(att.filename))
        else:
            if msg.get_content_maintype() != "multipart":
                msg.make_mixed()
            token = ("FORWARDED-" + secrets.token_hex(16)).encode()
            part = MIMEPart(policy=POLICY)
            part["Content-Type"] = "message/rfc822"
            part["Content-Disposition"] = "attachment"
            part.set_param("filename", _clean_filename(att.filename), header="Content-Disposition")
            part["Content-Transfer-Encoding"] = "7bit" if att.raw.isascii() else "8bit"
            part.set_payload(token.decode())
            msg.attach(part)
            raw = att.raw if att.raw.endswith(b"\r\n") else att.raw + b"\r\n"
            placeholders[token] = raw.rstrip(b"\r\n")
    out = msg.as_bytes(policy=POLICY)
    for token, raw in placeholders.items():
        out = out.replace(token, raw, 1)
    return out


def _clean_filename(name: str) -> str:
    name = "".join(c for c in (name or "") if c.isprintable()).replace("/", "_").replace("\\", "_").strip()
    return name[:200] or "attachment"


# --------------------------------------------------------------------------------------------- sending


@dataclass(frozen=True)
class SendResult:
    queue_id: str
    delivered_locally: tuple[str, ...]
    queued: tuple[str, ...]


@inlineCallbacks
def send(services, account_id: int, mail_from: str, recipients: list[str], raw: bytes, *, client_ip: str = ""):
    """Submit ``raw`` from ``account_id`` as ``mail_from`` to ``recipients`` (fires with a :class:`SendResult`).

    This is the one place the webmail hands mail over (:func:`mailserver.delivery.submit.submit`): sender ownership
    (RFC 6409 6.1), routing, then the ingest pipeline every producer shares (trace fields, checks, local delivery
    and the durable queue, DKIM signing at send time).  A refusal becomes a :class:`ComposeError` for the page.
    """
    if not recipients:
        raise ComposeError("add at least one recipient")
    if len(recipients) > MAX_RECIPIENTS:
        raise ComposeError(f"at most {MAX_RECIPIENTS} recipients")
    from mailserver.delivery.submit import SubmitError, submit

    try:
        result = yield submit(services, account_id, mail_from, recipients, raw, client_ip=client_ip, via="webmail")
    except SubmitError as e:
        raise ComposeError(str(e)) from None
    return SendResult(result.queue_id, result.delivered_locally, result.queued)
