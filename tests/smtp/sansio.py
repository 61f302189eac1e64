"""A driver for the sans-IO SMTP session: no sockets, checks answered by small policies."""

from __future__ import annotations

import base64

from mailserver.smtp import codes
from mailserver.smtp.codes import Reply
from mailserver.smtp.session import (
    AuthResult,
    CheckAuth,
    CheckMail,
    CheckRcpt,
    Close,
    Identity,
    MessageAbort,
    MessageData,
    MessageEnd,
    MessageStart,
    Peer,
    RcptResult,
    Send,
    SessionConfig,
    SmtpSession,
    StartTlsNow,
)

CFG = SessionConfig(hostname="mx.example.org", max_message_size=10_000, max_recipients=100)
SUBMISSION = SessionConfig(hostname="mx.example.org", offer_auth=True, require_auth=True)
REMOTE = Peer("192.0.2.10", 40000)
LOOPBACK = Peer("127.0.0.1", 40000, loopback=True)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class Driver:
    """Feeds bytes, answers checks (automatically unless ``auto=False``) and records what the session did."""

    def __init__(self, config: SessionConfig = CFG, peer: Peer = REMOTE, *, tls: bool = False, auto: bool = True,
                 users: dict[str, str] | None = None, unknown: tuple[str, ...] = ("nobody@example.org",),
                 end_reply: Reply = codes.QUEUED):
        self.session = SmtpSession(config, peer, tls=tls)
        self.auto = auto
        self.users = users if users is not None else {"alice@example.org": "secret"}
        self.unknown = unknown
        self.end_reply = end_reply
        self.replies: list[Reply] = []
        self.events: list[str] = []
        self.body = bytearray()
        self.messages: list[bytes] = []
        self.envelopes = []
        self.pending: list = []
        self.closed = False
        self.handle(self.session.start())

    def answer(self, action):
        if isinstance(action, CheckMail):
            return None
        if isinstance(action, CheckRcpt):
            if action.recipient.mailbox.address in self.unknown:
                return RcptResult(codes.UNKNOWN_USER)
            return RcptResult(None, route="local")
        if isinstance(action, CheckAuth):
            if self.users.get(action.username) == action.password:
                return AuthResult(Identity(action.username, 1, action.username))
            return AuthResult(None)
        if isinstance(action, MessageEnd):
            self.messages.append(bytes(self.body))
            self.envelopes.append(action.envelope)
            return self.end_reply
        raise AssertionError(action)

    def handle(self, actions) -> None:
        for a in actions:
            if isinstance(a, Send):
                self.replies.append(a.reply)
            elif isinstance(a, MessageData):
                self.events.append("data")
                self.body += a.data
            elif isinstance(a, MessageStart):
                self.events.append("start")
                self.body = bytearray()
            elif isinstance(a, MessageAbort):
                self.events.append("abort")
            elif isinstance(a, StartTlsNow):
                self.events.append("starttls")
            elif isinstance(a, Close):
                self.events.append("close")
                self.closed = True
            else:
                self.events.append(type(a).__name__)
                if self.auto:
                    self.handle(self.session.resolve(self.answer(a)))
                else:
                    self.pending.append(a)

    def resolve_next(self, result=None):
        a = self.pending.pop(0)
        self.handle(self.session.resolve(self.answer(a) if result is None else result))

    def send(self, data: bytes | str) -> list[Reply]:
        if isinstance(data, str):
            data = data.encode("utf-8")
        n = len(self.replies)
        self.handle(self.session.receive(data))
        return self.replies[n:]

    def codes(self, data: bytes | str) -> list[int]:
        return [r.code for r in self.send(data)]

    def ehlo(self) -> "Driver":
        assert self.codes("EHLO client.example\r\n") == [250]
        return self


def transaction(sender="<a@example.net>", rcpts=("<bob@example.org>",)) -> str:
    return f"MAIL FROM:{sender}\r\n" + "".join(f"RCPT TO:{r}\r\n" for r in rcpts)
