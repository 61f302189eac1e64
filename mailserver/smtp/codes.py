"""SMTP replies as named constants, each with its RFC 3463 enhanced status code.

RFC 2034 3: every reply carries an enhanced status code except the 220 greeting and the EHLO/HELO reply.
Handlers raise :class:`SmtpError` with one of these; the session maps it to the wire in one place.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property


@dataclass(frozen=True)
class Reply:
    code: int
    enhanced: str  # "" only for the greeting and EHLO/HELO (RFC 2034 3)
    text: str | tuple[str, ...]

    @property
    def lines(self) -> tuple[str, ...]:
        return (self.text,) if isinstance(self.text, str) else self.text

    @property
    def is_error(self) -> bool:
        return self.code >= 400

    @property
    def is_temporary(self) -> bool:
        return 400 <= self.code < 500

    def with_text(self, text: str) -> "Reply":
        return replace(self, text=text)

    def encode(self) -> bytes:
        """Wire form: ``code-text`` continuation lines, ``code text`` on the last (RFC 5321 4.2.1); computed once
        per reply (the constants below are sent over and over)."""
        return self._wire

    @cached_property
    def _wire(self) -> bytes:
        lines = self.lines or ("",)
        out = []
        for i, line in enumerate(lines):
            sep = " " if i == len(lines) - 1 else "-"
            # Never let a CR or LF from text (a client's argument, an error message) break the reply framing.
            line = line.replace("\r", " ").replace("\n", " ")
            prefix = f"{self.enhanced} " if self.enhanced else ""
            out.append(f"{self.code}{sep}{prefix}{line}\r\n")
        return "".join(out).encode("utf-8")

    def __str__(self) -> str:
        return self.encode().decode("utf-8").rstrip("\r\n")


class SmtpError(Exception):
    """A command failed; the session answers with ``reply`` (and closes the connection when ``close``)."""

    def __init__(self, reply: Reply, close: bool = False):
        super().__init__(str(reply))
        self.reply = reply
        self.close = close


# --------------------------------------------------------------------------------------------- 2xx / 3xx
OK = Reply(250, "2.0.0", "OK")
SENDER_OK = Reply(250, "2.1.0", "Sender OK")
RECIPIENT_OK = Reply(250, "2.1.5", "Recipient OK")
RESET_OK = Reply(250, "2.0.0", "Reset OK")
NOOP_OK = Reply(250, "2.0.0", "OK")
QUEUED = Reply(250, "2.0.0", "Message accepted")
# RFC 5321 3.5.3: VRFY answered 252 so accounts are never disclosed.
CANNOT_VRFY = Reply(252, "2.5.0", "Cannot VRFY user, but will accept message and attempt delivery")
HELP = Reply(214, "2.0.0", ("Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS AUTH",
                            "See RFC 5321"))
BYE = Reply(221, "2.0.0", "Bye")
READY_TLS = Reply(220, "2.0.0", "Ready to start TLS")
AUTH_OK = Reply(235, "2.7.0", "Authentication successful")
START_DATA = Reply(354, "", "End data with <CR><LF>.<CR><LF>")

# --------------------------------------------------------------------------------------------- 4xx
SHUTTING_DOWN = Reply(421, "4.3.2", "Service shutting down, closing connection")
TIMEOUT = Reply(421, "4.4.2", "Timeout, closing connection")
TOO_MANY_ERRORS = Reply(421, "4.7.0", "Too many errors, closing connection")
TOO_MANY_CONNECTIONS = Reply(421, "4.7.0", "Too many connections from your address")
TOO_MANY_MESSAGES = Reply(421, "4.7.0", "Too many messages in this session, closing connection")
LOCAL_ERROR = Reply(451, "4.3.0", "Local error in processing, try again later")
TOO_MANY_RECIPIENTS = Reply(452, "4.5.3", "Too many recipients")  # RFC 5321 4.5.3.1.10
OVER_QUOTA_TEMP = Reply(452, "4.2.2", "Mailbox full")
AUTH_TEMPFAIL = Reply(454, "4.7.0", "Temporary authentication failure")
TLS_UNAVAILABLE = Reply(454, "4.7.0", "TLS not available")

# --------------------------------------------------------------------------------------------- 5xx
UNRECOGNIZED = Reply(500, "5.5.1", "Command unrecognized")
LINE_TOO_LONG = Reply(500, "5.5.6", "Line too long")  # RFC 5321 4.5.3.1.4 / 4.5.3.1.6
BAD_UTF8 = Reply(500, "5.5.2", "Invalid UTF-8 in command")
BARE_NEWLINE_COMMAND = Reply(500, "5.5.2", "Bare CR or LF in command line")
SYNTAX = Reply(501, "5.5.2", "Syntax error")
BAD_ARGUMENTS = Reply(501, "5.5.4", "Invalid command arguments")
BAD_SENDER_SYNTAX = Reply(501, "5.1.7", "Bad sender address syntax")
BAD_RECIPIENT_SYNTAX = Reply(501, "5.1.3", "Bad recipient address syntax")
AUTH_CANCELLED = Reply(501, "5.0.0", "Authentication cancelled")  # RFC 4954 4
SASL_MALFORMED = Reply(501, "5.5.2", "Cannot decode authentication response")  # RFC 4954 4
NOT_IMPLEMENTED = Reply(502, "5.5.1", "Command not implemented")
BAD_SEQUENCE = Reply(503, "5.5.1", "Bad sequence of commands")
HELO_FIRST = Reply(503, "5.5.1", "Send EHLO or HELO first")
MAIL_FIRST = Reply(503, "5.5.1", "Need MAIL before RCPT")
RCPT_FIRST = Reply(503, "5.5.1", "Need RCPT before DATA")
NESTED_MAIL = Reply(503, "5.5.1", "Sender already specified")
ALREADY_AUTHENTICATED = Reply(503, "5.5.1", "Already authenticated")
AUTH_NOT_AVAILABLE = Reply(503, "5.5.1", "AUTH not available")
MIXED_DATA_BDAT = Reply(503, "5.5.1", "DATA and BDAT cannot be mixed in one transaction")
BDAT_FAILED_TRANSACTION = Reply(503, "5.5.1", "Transaction failed earlier, send RSET")
UNKNOWN_MECHANISM = Reply(504, "5.5.4", "Unrecognized authentication mechanism")
AUTH_REQUIRED = Reply(530, "5.7.0", "Authentication required")  # RFC 4954 6
AUTH_INVALID = Reply(535, "5.7.8", "Authentication credentials invalid")  # RFC 4954 6
ENCRYPTION_REQUIRED = Reply(538, "5.7.11", "Encryption required for requested authentication mechanism")
NO_VALID_RECIPIENTS = Reply(554, "5.5.1", "No valid recipients")
UNKNOWN_USER = Reply(550, "5.1.1", "Mailbox does not exist")
# Gateway mode: the relay host could not say whether the recipient exists (RFC 3463 X.4.3: routing server failure).
VERIFY_TEMPFAIL = Reply(451, "4.4.3", "Recipient verification failed, try again later")
# RFC 5321 2.3.8 (lines end with CRLF only) and the SMTP smuggling advisories: a DATA body holding a bare CR or LF
# is rejected after the real <CRLF>.<CRLF>.  RFC 3463 3.7: X.6.0 "Other or undefined media error" (the registry has
# no dedicated code for bare line ends).
BARE_NEWLINE_DATA = Reply(550, "5.6.0", "Message contains bare CR or LF (only CRLF line ends are allowed)")
OVER_QUOTA_PERM = Reply(552, "5.2.2", "Mailbox full")
MESSAGE_TOO_BIG = Reply(552, "5.3.4", "Message size exceeds fixed maximum message size")  # RFC 1870 6.1
TEXT_LINE_TOO_LONG = Reply(500, "5.5.6", "Line too long in message text")  # RFC 5321 4.5.3.1.6
NOT_OWNED_SENDER = Reply(553, "5.7.1", "Sender address not owned by the authenticated user")
NON_ASCII_ADDRESS = Reply(553, "5.6.7", "Non-ASCII address requires SMTPUTF8")  # RFC 6531 3.5
RELAY_DENIED = Reply(554, "5.7.1", "Relay access denied")
LOOP_DETECTED = Reply(554, "5.4.6", "Routing loop detected (too many Received headers)")
UNKNOWN_PARAMETER = Reply(555, "5.5.4", "MAIL FROM/RCPT TO parameter not recognized or not implemented")
TRANSACTION_FAILED = Reply(554, "5.0.0", "Transaction failed")
