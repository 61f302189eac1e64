"""SASL PLAIN and LOGIN, sans-IO: the exchange of challenges and responses, shared by SMTP AUTH (RFC 4954),
IMAP AUTHENTICATE (RFC 9051 6.2.2, SASL-IR RFC 4959) and POP3 AUTH (RFC 5034).

The protocol layer owns the framing ("334 " / "+ " prefixes, line endings); this module sees the base64 text
of each client response and produces the base64 text of each server challenge::

    exchange = sasl.start("PLAIN", initial_response)   # bytes after the mechanism name, or None
    while not exchange.done:
        send_challenge(exchange.challenge)              # b"" means an empty challenge ("334 " / "+ ")
        exchange.respond(read_line())                   # raises SaslCancelled on "*", SaslError on bad input
    authenticate(exchange.username, exchange.password)

No I/O, no clock, no Twisted.  Errors are exceptions: :class:`SaslCancelled` (the client sent "*"; RFC 4954
answers ``501 5.0.0``, IMAP ``BAD``), :class:`SaslAuthorizationError` (an authorization identity other than the
authentication identity: IMAP ``NO [AUTHORIZATIONFAILED]``, SMTP ``535 5.7.8``) and :class:`SaslError` for
everything malformed (SMTP ``501 5.5.2``, IMAP ``BAD``).  After an exception the exchange is over.
"""

from __future__ import annotations

import base64
import binascii


def plaintext_allowed(*, tls_active: bool, loopback: bool, allow_without_tls: bool) -> bool:
    """The one policy for plaintext mechanisms (PLAIN, LOGIN, IMAP LOGIN, POP3 USER/PASS), for every protocol.

    RFC 3501 6.2.3 / RFC 9051 6.2.3 (LOGINDISABLED), RFC 4954 4, RFC 5034 and RFC 8314: never take passwords in the
    clear, except from loopback (as Dovecot allows) or when ``[auth] allow_plaintext_without_tls`` says so.
    :meth:`mailserver.auth.Authenticator.plaintext_allowed` asks it with a client address; the sans-IO SMTP session
    asks it with its peer's facts.
    """
    return tls_active or loopback or allow_without_tls


# ------------------------------------------------------------------------------------------- named limits

#: Longest client response, in base64 octets, accepted before decoding (fits the largest valid PLAIN
#: message below, 2,050 octets -> 2,736 base64 octets, with room to spare).
MAX_RESPONSE_OCTETS = 4096
#: Longest authentication or authorization identity, in octets.  RFC 4616 2 requires accepting at least 255.
MAX_IDENTITY_OCTETS = 512
#: Longest password, in octets.  RFC 4616 2 requires accepting at least 255.
MAX_PASSWORD_OCTETS = 1024

MECHANISMS = ("PLAIN", "LOGIN")

# draft-murchison-sasl-login-00 2: the server's two prompts.
LOGIN_USERNAME_PROMPT = b"Username:"
LOGIN_PASSWORD_PROMPT = b"Password:"


class SaslError(Exception):
    """The client's SASL exchange is malformed (bad base64, bad message, over a limit, unknown mechanism)."""


class SaslCancelled(SaslError):
    """The client cancelled the exchange with "*" (RFC 4954 4, RFC 9051 6.2.2, RFC 5034 4)."""


class SaslAuthorizationError(SaslError):
    """The client asked to act as another identity (an authzid different from its authcid)."""


def start(mechanism: str, initial_response: bytes | None) -> "SaslExchange":
    """Begin an exchange of ``mechanism`` (case-insensitive).

    ``initial_response`` is the base64 text the client sent with the command (RFC 4954 4 AUTH, RFC 4959
    SASL-IR, RFC 5034 4), ``b"="`` for an empty initial response, or None when there was none.
    """
    name = mechanism.upper()
    if name == "PLAIN":
        exchange: SaslExchange = PlainExchange()
    elif name == "LOGIN":
        exchange = LoginExchange()
    else:
        raise SaslError(f"unsupported mechanism {mechanism[:64]!r}")
    if initial_response is None:
        exchange._begin()
    else:
        # RFC 4954 4 / RFC 4959 3: "=" stands for an empty initial response; an empty string is not one.
        if initial_response == b"=":
            decoded = b""
        elif initial_response == b"":
            raise SaslError("empty initial response: send \"=\" instead")
        else:
            # "*" cancels only a response to a challenge; as an initial response it is just bad base64.
            decoded = _decode(initial_response, may_cancel=False)
        exchange._step(decoded)
    return exchange


def _decode(line: bytes, may_cancel: bool = True) -> bytes:
    """Base64 text of one response -> octets.  "*" cancels (when ``may_cancel``)."""
    if line.endswith(b"\r\n"):
        line = line[:-2]
    elif line.endswith(b"\n"):
        line = line[:-1]
    if line == b"*" and may_cancel:
        # RFC 4954 4: a "*" response cancels the exchange (RFC 9051 6.2.2, RFC 5034 4 likewise).
        raise SaslCancelled("authentication cancelled by the client")
    if len(line) > MAX_RESPONSE_OCTETS:
        raise SaslError(f"response longer than {MAX_RESPONSE_OCTETS} octets")
    try:
        return base64.b64decode(line, validate=True)
    except (binascii.Error, ValueError):
        raise SaslError("response is not valid base64") from None


def _text(raw: bytes, what: str, limit: int) -> str:
    """Check one field: not empty, within ``limit`` octets, no NUL, valid UTF-8 (RFC 4616 2)."""
    if not raw:
        raise SaslError(f"empty {what}")
    if len(raw) > limit:
        raise SaslError(f"{what} longer than {limit} octets")
    if b"\0" in raw:
        raise SaslError(f"NUL in {what}")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SaslError(f"{what} is not UTF-8") from None


class SaslExchange:
    """One server-side SASL exchange.

    ``challenge``: the base64 text to send next (already encoded; ``b""`` for an empty challenge), or None
    when nothing is to be sent.  ``done``: the exchange completed; ``username`` and ``password`` are set.
    """

    mechanism = ""

    def __init__(self) -> None:
        self.challenge: bytes | None = None
        self.done = False
        self.username = ""
        self.password = ""
        self._over = False

    def respond(self, line: bytes) -> None:
        """Feed the client's response to the current challenge (base64 text, or "*" to cancel)."""
        if self._over or self.done:
            raise SaslError("the exchange is already finished")
        try:
            decoded = _decode(line)
        except SaslError:
            self._over = True
            raise
        self._step(decoded)

    def _begin(self) -> None:
        raise NotImplementedError

    def _advance(self, data: bytes) -> None:
        raise NotImplementedError

    def _step(self, data: bytes) -> None:
        try:
            self._advance(data)
        except SaslError:
            self._over = True
            self.challenge = None
            raise

    def _finish(self, username: str, password: str) -> None:
        self.username, self.password = username, password
        self.challenge = None
        self.done = True


class PlainExchange(SaslExchange):
    """RFC 4616: one message ``[authzid] NUL authcid NUL passwd``."""

    mechanism = "PLAIN"

    def _begin(self) -> None:
        # RFC 4616 2 / RFC 4422 5: without an initial response the server sends an empty challenge.
        self.challenge = b""

    def _advance(self, data: bytes) -> None:
        # RFC 4616 2: message = [authzid] UTF8NUL authcid UTF8NUL passwd
        parts = data.split(b"\0")
        if len(parts) != 3:
            raise SaslError("PLAIN message must be authzid NUL authcid NUL password")
        raw_authzid, raw_authcid, raw_password = parts
        authcid = _text(raw_authcid, "authentication identity", MAX_IDENTITY_OCTETS)
        password = _text(raw_password, "password", MAX_PASSWORD_OCTETS)
        if raw_authzid:
            authzid = _text(raw_authzid, "authorization identity", MAX_IDENTITY_OCTETS)
            # RFC 4616 2: the server decides whether authcid may act as authzid; we allow only itself
            # (accounts are case-insensitive).
            if authzid.strip().lower() != authcid.strip().lower():
                raise SaslAuthorizationError("acting as another identity is not allowed")
        self._finish(authcid, password)


class LoginExchange(SaslExchange):
    """The LOGIN mechanism (draft-murchison-sasl-login): prompts "Username:" then "Password:"."""

    mechanism = "LOGIN"

    def _begin(self) -> None:
        self.challenge = base64.b64encode(LOGIN_USERNAME_PROMPT)

    def _advance(self, data: bytes) -> None:
        if not self.username:
            # draft-murchison-sasl-login 2: an initial response, if any, is the user name.
            self.username = _text(data, "user name", MAX_IDENTITY_OCTETS)
            self.challenge = base64.b64encode(LOGIN_PASSWORD_PROMPT)
        else:
            self._finish(self.username, _text(data, "password", MAX_PASSWORD_OCTETS))
