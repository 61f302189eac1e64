"""``replace`` and ``enclose`` (RFC 5703 5 and 6): the message a recipient stores, rebuilt.  Sans-IO.

Pigeonhole has neither extension, so there is no oracle to compare with; these are our reading of the RFC:

* ``replace [:mime] [:subject S] [:from F] TEXT`` gives the current part (inside ``foreverypart``) or the whole
  message (outside, or on the loop's first visit, which is the message itself) new content: TEXT as a UTF-8
  ``text/plain`` part, or with ``:mime`` TEXT is a MIME entity (its ``Content-*`` fields, then its body). A part's
  old ``Content-*`` fields go, its children with them (loops running skip them; later loops see the new tree).
  Replacing the whole message, ``:subject`` and ``:from`` set Subject and From, the old ones kept as
  ``Original-Subject`` and ``Original-From``; on a part they are ignored.
* ``enclose :subject S :headers [...] TEXT``: the message (as replaced and edited) becomes the ``message/rfc822``
  second part of a new ``multipart/mixed`` one whose first part is TEXT. The new message keeps the old one's header
  fields but its MIME ones, with Subject S when given and each ``:headers`` field ("Name: value") in place of the
  fields of its name. Of several encloses the last one counts (RFC 5703 6).
* Both change only the copies the recipient stores (keep, fileinto); a redirect sends the message as it came
  (RFC 5703 5, 6).
"""

from __future__ import annotations

import email
import email.generator
import email.message
import email.policy
import hashlib
import io
import quopri
import re

from mailserver.sieve.message import Part, part_of

_POLICY = email.policy.compat32.clone(linesep="\r\n")
_MIME_FIELD = re.compile(r"(?i)content-|mime-version\Z")
_HEADER_FIELD = re.compile(r"([!-9;-~]+)[ \t]*:[ \t]*(.*)\Z", re.S)


class MimeEditError(ValueError):
    """A replace or enclose argument that cannot make a message (a runtime error of the script)."""


def _is_mime(name: str) -> bool:
    return bool(_MIME_FIELD.match(name.lower()))


def _crlf(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\r\n")


def text_entity(text: str) -> email.message.Message:
    """TEXT as a UTF-8 text/plain entity (7bit when it is ASCII with short lines, else quoted-printable)."""
    m = email.message.Message(policy=_POLICY)
    text = _crlf(text)
    if text and not text.endswith("\r\n"):
        text += "\r\n"
    m["Content-Type"] = 'text/plain; charset="utf-8"'
    if text.isascii() and all(len(line) <= 998 for line in text.split("\r\n")):
        m["Content-Transfer-Encoding"] = "7bit"
        m.set_payload(text)
    else:
        m["Content-Transfer-Encoding"] = "quoted-printable"
        encoded = quopri.encodestring(text.replace("\r\n", "\n").encode("utf-8")).decode("ascii")
        m.set_payload(_crlf(encoded))
    return m


def mime_entity(text: str) -> email.message.Message:
    """TEXT as a MIME entity: its header fields (only the ``Content-*`` ones count), an empty line, its body."""
    raw = _crlf(text)
    if "\r\n\r\n" not in raw and not raw.startswith("\r\n"):
        raise MimeEditError("replace :mime: the entity has no empty line after its header fields")
    m = email.message_from_bytes(raw.encode("utf-8", "surrogateescape"), policy=_POLICY)
    if m.defects and any(isinstance(d, email.errors.MissingHeaderBodySeparatorDefect) for d in m.defects):
        raise MimeEditError("replace :mime: not a MIME entity")
    return m


def replace_part(part: Part, entity: email.message.Message) -> None:
    """Give ``part`` (and the entity it was read from) the content of ``entity``; its old children are detached."""
    msg = part.msg
    if msg is None:  # pragma: no cover - every part is read from an entity
        raise MimeEditError("replace: this part cannot be edited")
    for name in {k for k in msg.keys() if _is_mime(k)}:
        del msg[name]
    for name, value in entity.items():
        if _is_mime(name) and name.lower() != "mime-version":
            msg[name] = value
    msg.set_payload(entity.get_payload())
    for old in part.walk():
        if old is not part:
            old.detached = True
    new = part_of(msg)
    part.fields, part.content_type, part.params = new.fields, new.content_type, new.params
    part.raw_body, part.text, part.children, part.is_attachment = new.raw_body, new.text, new.children, \
        new.is_attachment



def _serialize(msg: email.message.Message) -> bytes:
    out = io.BytesIO()
    email.generator.BytesGenerator(out, mangle_from_=False, policy=_POLICY).flatten(msg)
    return out.getvalue()


def _fields_bytes(fields) -> bytes:
    return "".join(f"{k}:{v}\r\n".replace("\r\n", "\n").replace("\n", "\r\n") for k, v in fields).encode("utf-8")


def _encode(value: str) -> str:
    if value.isascii():
        return value
    from email.header import Header

    return Header(value, "utf-8").encode()


def compose(fields: list, root: Part, *, subject: str | None = None, from_: str | None = None) -> bytes:
    """The whole message: the header ``fields`` (as editheader left them) with their MIME fields replaced by those
    of the (replaced) root entity, Subject/From set when given (the old ones kept as Original-*), then its body."""
    body_bytes = _serialize(root.msg)
    head, _, body = body_bytes.partition(b"\r\n\r\n")
    if body_bytes.startswith(b"\r\n"):  # an entity without fields
        head, body = b"", body_bytes[2:]
    mime = [f for f in _parse_fields(head) if _is_mime(f[0])]
    out = [list(f) for f in fields if not _is_mime(f[0])]
    for name, value, original in (("Subject", subject, "Original-Subject"), ("From", from_, "Original-From")):
        if value is None:
            continue
        old = [f for f in out if f[0].lower() == name.lower()]
        out = [f for f in out if f[0].lower() not in (name.lower(), original.lower())]
        out += [[original, f[1]] for f in old]
        out.append([name, " " + _encode(value)])
    if not any(f[0].lower() == "mime-version" for f in mime):
        mime.insert(0, ["MIME-Version", " 1.0"])
    return _fields_bytes(out + mime) + b"\r\n" + body


def _parse_fields(head: bytes) -> list[list[str]]:
    from mailserver.sieve.message import parse_header

    return parse_header(head)


def header_field(text: str) -> tuple[str, str]:
    """One ``:headers`` entry of enclose: "Name: value" (no line breaks but folding), or MimeEditError."""
    m = _HEADER_FIELD.match(text)
    if m is None or re.search(r"\r?\n(?![ \t])", text.rstrip("\r\n")):
        raise MimeEditError(f"enclose :headers: not a header field: {text[:80]!r}")
    if _is_mime(m.group(1)):
        raise MimeEditError(f"enclose :headers: {m.group(1)} is the new message's own")
    return m.group(1), m.group(2).rstrip("\r\n")


def enclose(message: bytes, fields: list, *, subject: str | None, headers: list[tuple[str, str]], text: str) -> bytes:
    """A new multipart/mixed message: ``text`` first, ``message`` as a message/rfc822 part second; its header is
    ``fields`` without their MIME ones, Subject and the ``headers`` put in place of the fields of their names."""
    boundary = "=_sieve_enclose_" + hashlib.sha256(message + text.encode("utf-8", "replace")).hexdigest()[:24]
    replaced = {n.lower() for n, _ in headers} | ({"subject"} if subject is not None else set())
    out = [list(f) for f in fields if not _is_mime(f[0]) and f[0].lower() not in replaced]
    if subject is not None:
        out.append(["Subject", " " + _encode(subject)])
    out += [[n, " " + _encode(v)] for n, v in headers]
    out += [["MIME-Version", " 1.0"], ["Content-Type", f' multipart/mixed; boundary="{boundary}"']]
    first = _serialize(text_entity(text))
    if not message.endswith(b"\r\n"):
        message += b"\r\n"
    body = (b"--" + boundary.encode() + b"\r\n" + first + (b"" if first.endswith(b"\r\n") else b"\r\n") +
            b"--" + boundary.encode() + b"\r\nContent-Type: message/rfc822\r\n\r\n" + message +
            b"--" + boundary.encode() + b"--\r\n")
    return _fields_bytes(out) + b"\r\n" + body
