"""Small HTTP vocabulary shared by the views: responses, errors, forms, cookies, security headers.

Nothing here imports Twisted: the adapter in :mod:`webmail.app` turns a :class:`Response` into bytes on a
``twisted.web`` request, and maps :class:`HttpError` to an error page in one place.
"""

from __future__ import annotations

import email.parser
import email.policy
import email.utils
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Awaitable, Callable
from urllib.parse import parse_qs, quote

STATIC_DIR = Path(__file__).parent / "static"
#: The cookie that carries the pre-login CSRF token.
PRELOGIN_COOKIE = "wm_pre"

#: Most form fields (name=value pairs) accepted in one request.
MAX_FORM_FIELDS = 1000
#: Most files in one multipart upload.
MAX_UPLOAD_FILES = 50
#: Largest body accepted where no upload is expected (sign-in, actions, autodiscover).
MAX_SMALL_BODY = 256 * 1024

#: Content-Security-Policy of every application page.
APP_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-src 'self'; "
           "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


class HttpError(Exception):
    """An expected failure answered with ``status`` and a short message (the one place: webmail.app)."""

    def __init__(self, status: int, message: str = ""):
        super().__init__(message or str(status))
        self.status = status
        self.message = message


class NotFoundError(HttpError):
    def __init__(self, message: str = "Not found"):
        super().__init__(404, message)


class Forbidden(HttpError):
    def __init__(self, message: str = "Forbidden"):
        super().__init__(403, message)


class BadRequest(HttpError):
    def __init__(self, message: str = "Bad request"):
        super().__init__(400, message)


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/html; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)
    cookies: list[str] = field(default_factory=list)
    #: Replace the default page CSP (message bodies and downloads use stricter ones).
    csp: str | None = None
    #: Allow framing by our own pages (the message body iframe).
    frame_same_origin: bool = False

    def header(self, name: str, value: str) -> "Response":
        check_header_value(value)
        self.headers.append((name, value))
        return self


@dataclass
class Stream:
    """A response that stays open (Server-Sent Events): ``start(write, close) -> stop`` is called once."""

    start: Callable[[Callable[[bytes], None]], Callable[[], None]]
    content_type: str = "text/event-stream; charset=utf-8"


_C0_OR_SPACE = "".join(chr(i) for i in range(0x21))


def local_path(target: str, fallback: str = "/") -> str:
    """``target`` if it is a path on this site, else ``fallback``: for redirects to a user-supplied place
    (``?next=``, ``back=``).

    Judged as a browser will read it (the WHATWG URL parser drops leading and trailing C0 controls and spaces and
    every TAB, CR and LF, so ``/\t/evil.test/`` is ``//evil.test/``): one "/" followed by neither "/" nor "\\"
    (browsers read "\\" as "/"), and no control character left anywhere."""
    cleaned = target.strip(_C0_OR_SPACE).replace("\t", "").replace("\r", "").replace("\n", "")
    if (not cleaned.startswith("/") or cleaned[1:2] in ("/", "\\") or "\\" in cleaned
            or any(ord(c) < 0x20 or c == "\x7f" for c in cleaned)):
        return fallback
    return cleaned


def redirect(location: str, status: int = 303) -> Response:
    check_header_value(location)
    return Response(status, b"", headers=[("Location", location)])


def html(body: str, status: int = 200) -> Response:
    return Response(status, body.encode("utf-8"))


def check_header_value(value: str) -> str:
    """Refuse CR, LF and NUL in anything that becomes a header (response splitting)."""
    if any(c in value for c in "\r\n\0"):
        raise BadRequest("line break in a header value")
    return value


# --------------------------------------------------------------------------------------------- forms


@dataclass(frozen=True)
class Upload:
    field: str
    filename: str
    content_type: str
    data: bytes


@dataclass
class Form:
    fields: dict[str, list[str]] = field(default_factory=dict)
    files: list[Upload] = field(default_factory=list)

    def get(self, name: str, default: str = "") -> str:
        v = self.fields.get(name)
        return v[0] if v else default

    def getlist(self, name: str) -> list[str]:
        return list(self.fields.get(name, ()))


def parse_urlencoded(body: bytes) -> Form:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("form is not UTF-8") from None
    try:
        fields = parse_qs(text, keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS, strict_parsing=False)
    except ValueError:
        raise BadRequest("too many form fields") from None
    return Form(fields)


def parse_multipart(body: bytes, content_type: str) -> Form:
    """multipart/form-data (RFC 7578) with the stdlib parser; file names and types are kept."""
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1", "replace")
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    if not msg.is_multipart():
        raise BadRequest("not a multipart form")
    form = Form()
    n = 0
    for part in msg.iter_parts():
        n += 1
        if n > MAX_FORM_FIELDS:
            raise BadRequest("too many form fields")
        disp = part.get("Content-Disposition", "")
        if not str(disp).lower().startswith("form-data"):
            continue
        name = part.get_param("name", header="content-disposition")
        if not name:
            continue
        name = email.utils.collapse_rfc2231_value(name)
        filename = part.get_filename()
        payload = part.get_payload(decode=True) or b""
        if filename is not None:
            if not filename and not payload:
                continue  # an empty file input
            if len(form.files) >= MAX_UPLOAD_FILES:
                raise BadRequest("too many files")
            form.files.append(Upload(name, filename, part.get_content_type(), payload))
        else:
            charset = part.get_content_charset() or "utf-8"
            try:
                value = payload.decode(charset, "replace")
            except LookupError:
                value = payload.decode("utf-8", "replace")
            form.fields.setdefault(name, []).append(value)
    return form


def parse_form(body: bytes, content_type: str) -> Form:
    ctype = content_type.split(";", 1)[0].strip().lower()
    if ctype == "multipart/form-data":
        return parse_multipart(body, content_type)
    if ctype in ("application/x-www-form-urlencoded", ""):
        return parse_urlencoded(body)
    raise HttpError(415, "unsupported form encoding")


# --------------------------------------------------------------------------------------------- cookies

_COOKIE_NAME = re.compile(r"^[A-Za-z0-9_\-]+$")


def set_cookie(name: str, value: str, *, secure: bool, max_age: int | None = None, same_site: str = "Lax") -> str:
    """A Set-Cookie value; always HttpOnly and Path=/ (RFC 6265bis: ``__Host-`` needs Secure, Path=/, no Domain)."""
    assert _COOKIE_NAME.match(name) and re.fullmatch(r"[A-Za-z0-9_\-]*", value)
    parts = [f"{name}={value}", "Path=/", "HttpOnly", f"SameSite={same_site}"]
    if secure:
        parts.append("Secure")
    if max_age is not None:
        parts.append(f"Max-Age={max_age}")
    return "; ".join(parts)


def content_disposition(kind: str, filename: str) -> str:
    """``attachment``/``inline`` with an ASCII fallback and the RFC 6266 / RFC 8187 ``filename*`` form."""
    cleaned = "".join(c for c in filename if c.isprintable() and c not in "\r\n\0").strip() or "attachment"
    cleaned = cleaned.replace("/", "_").replace("\\", "_")
    ascii_name = "".join(c if 0x20 <= ord(c) < 0x7F and c not in '"%;' else "_" for c in cleaned)
    return f"{kind}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(cleaned, safe='')}"


Handler = Callable[..., Awaitable[Response | Stream]]
