"""SMTP command lines -> typed commands (sans-IO, no Twisted).

``parse_command(line, ext)`` raises :class:`~mailserver.smtp.codes.SmtpError` with the reply for a malformed line;
the verb table of the session decides whether a well-formed command is allowed now.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mailserver.smtp import codes
from mailserver.smtp.address import (
    AddressError,
    Extensions,
    Mailbox,
    MailParams,
    RcptParams,
    mail_params,
    parse_params,
    parse_path,
    rcpt_params,
    split_path,
)
from mailserver.smtp.codes import SmtpError


@dataclass(frozen=True)
class Ehlo:
    domain: str
    extended: bool  # EHLO (True) or HELO (False)


@dataclass(frozen=True)
class Mail:
    reverse_path: Mailbox | None  # None = the null reverse-path "<>"
    params: MailParams


@dataclass(frozen=True)
class Rcpt:
    forward_path: Mailbox
    params: RcptParams


@dataclass(frozen=True)
class Data:
    pass


@dataclass(frozen=True)
class Bdat:
    size: int
    last: bool


@dataclass(frozen=True)
class Rset:
    pass


@dataclass(frozen=True)
class Noop:
    pass


@dataclass(frozen=True)
class Quit:
    pass


@dataclass(frozen=True)
class Vrfy:
    argument: str


@dataclass(frozen=True)
class Expn:
    argument: str


@dataclass(frozen=True)
class Help:
    argument: str


@dataclass(frozen=True)
class StartTls:
    pass


@dataclass(frozen=True)
class Auth:
    mechanism: str  # upper-case
    initial_response: str | None  # base64 text as sent ("=" = empty), None when absent


Command = Ehlo | Mail | Rcpt | Data | Bdat | Rset | Noop | Quit | Vrfy | Expn | Help | StartTls | Auth

#: Longest BDAT chunk size we parse (digits); the size itself is bounded by the message size limit.
MAX_BDAT_DIGITS = 20
_HELO_RE = re.compile(r"[\x21-\x7e\u0080-\U0010ffff]+")
_MECH_RE = re.compile(r"[A-Z0-9\-_]{1,20}")  # RFC 4422 3.1 mechanism names
_B64_RE = re.compile(r"[A-Za-z0-9+/]*={0,2}")


def _no_args(verb: str, args: str) -> None:
    if args:
        raise SmtpError(codes.BAD_ARGUMENTS.with_text(f"{verb} takes no arguments"))


def _ehlo(verb: str, args: str, ext: Extensions) -> Ehlo:
    # RFC 5321 4.1.1.1: EHLO/HELO domain (or address literal).  Many clients send other names; accept one token.
    if not args or not _HELO_RE.fullmatch(args):
        raise SmtpError(codes.BAD_ARGUMENTS.with_text(f"{verb} needs a domain name"))
    return Ehlo(args, verb == "EHLO")


def _from_to(args: str, keyword: str) -> tuple[str, str]:
    if args[: len(keyword)].upper() != keyword:
        raise SmtpError(codes.SYNTAX.with_text(f"Syntax: {keyword}<address>"))
    # RFC 5321 4.1.1.2 has no space after the colon; accept one anyway, as most servers do.
    return split_path(args[len(keyword):].lstrip(" "))


def _mail(verb: str, args: str, ext: Extensions) -> Mail:
    try:
        path, rest = _from_to(args, "FROM:")
        reverse_path = parse_path(path, allow_null=True)
    except AddressError as e:
        raise SmtpError(codes.BAD_SENDER_SYNTAX.with_text(e.reply.lines[0])) from None
    return Mail(reverse_path, mail_params(parse_params(rest), ext))


def _rcpt(verb: str, args: str, ext: Extensions) -> Rcpt:
    try:
        path, rest = _from_to(args, "TO:")
        forward_path = parse_path(path, allow_null=False, allow_postmaster=True)
    except AddressError as e:
        raise SmtpError(codes.BAD_RECIPIENT_SYNTAX.with_text(e.reply.lines[0])) from None
    assert forward_path is not None
    return Rcpt(forward_path, rcpt_params(parse_params(rest), ext))


def _bdat(verb: str, args: str, ext: Extensions) -> Bdat:
    # RFC 3030 2: BDAT SP chunk-size [SP end-marker]
    parts = args.split(" ")
    if not 1 <= len(parts) <= 2 or not parts[0].isdigit() or len(parts[0]) > MAX_BDAT_DIGITS:
        raise SmtpError(codes.BAD_ARGUMENTS.with_text("Syntax: BDAT size [LAST]"))
    if len(parts) == 2 and parts[1].upper() != "LAST":
        raise SmtpError(codes.BAD_ARGUMENTS.with_text("Syntax: BDAT size [LAST]"))
    return Bdat(int(parts[0]), len(parts) == 2)


def _auth(verb: str, args: str, ext: Extensions) -> Auth:
    # RFC 4954 4: AUTH mechanism [initial-response]
    parts = args.split(" ")
    mech = parts[0].upper()
    if not args or len(parts) > 2 or not _MECH_RE.fullmatch(mech):
        raise SmtpError(codes.BAD_ARGUMENTS.with_text("Syntax: AUTH mechanism [initial-response]"))
    initial = parts[1] if len(parts) == 2 else None
    if initial is not None and initial != "=" and not _B64_RE.fullmatch(initial):
        raise SmtpError(codes.BAD_ARGUMENTS.with_text("Invalid base64 in initial response"))
    return Auth(mech, initial)


def _simple(cls, takes_args=False):
    def parse(verb: str, args: str, ext: Extensions):
        if takes_args:
            return cls(args)
        _no_args(verb, args)
        return cls()

    return parse


def _noop(verb: str, args: str, ext: Extensions) -> Noop:
    return Noop()  # RFC 5321 4.1.1.9: a parameter string is allowed and ignored


PARSERS = {
    "EHLO": _ehlo,
    "HELO": _ehlo,
    "MAIL": _mail,
    "RCPT": _rcpt,
    "DATA": _simple(Data),
    "BDAT": _bdat,
    "RSET": _simple(Rset),
    "NOOP": _noop,
    "QUIT": _simple(Quit),
    "VRFY": _simple(Vrfy, True),
    "EXPN": _simple(Expn, True),
    "HELP": _simple(Help, True),
    "STARTTLS": _simple(StartTls),
    "AUTH": _auth,
}


def split_verb(line: str) -> tuple[str, str]:
    verb, _, args = line.partition(" ")
    return verb.upper(), args.strip(" ")


def parse_command(line: str, ext: Extensions) -> Command:
    """Parse one command line (already without CRLF, decoded as UTF-8)."""
    verb, args = split_verb(line)
    parser = PARSERS.get(verb)
    if parser is None:
        raise SmtpError(codes.UNRECOGNIZED)
    return parser(verb, args, ext)
