"""Sending through the real SMTP listeners and reading what was delivered, for the inbound tests."""

from __future__ import annotations

import email
import email.policy
import smtplib
import ssl

PW = "correct horse battery"


def tls() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def send(srv, raw: bytes, rcpts=("bob@example.test",), sender="someone@remote.test", *, submission=False,
         helo="mx.remote.test") -> tuple[int, bytes]:
    """One message over SMTP (the MX listener, or authenticated submission as alice); the reply to the data."""
    listener = "submission" if submission else "smtp"
    with smtplib.SMTP("127.0.0.1", srv.port(listener), timeout=60) as c:
        c.ehlo(helo)
        if submission:
            c.starttls(context=tls())
            c.login("alice@example.test", PW)
        code, text = c.mail(sender)
        assert code == 250, (code, text)
        for r in rcpts:
            code, text = c.rcpt(r)
            assert code == 250, (r, code, text)
        return c.data(raw)


def copies(srv, address: str, mailbox: str = "INBOX") -> list[tuple[email.message.EmailMessage, tuple[str, ...]]]:
    """Every message in the mailbox: its parsed copy and its keywords."""
    store = srv.store
    acct = store.get_account(address)
    box = store.get_mailbox(acct.id, mailbox)
    if box is None or not box.message_count:
        return []
    out = []
    for m in store.get_messages(box.id, range(1, box.uid_next)):
        raw = store.read_blob(m.blob_id)
        out.append((email.message_from_bytes(raw, policy=email.policy.compat32), tuple(m.keywords)))
    return out


def message(subject: str = "hello", body: bytes = b"Hi Bob, lunch tomorrow?\r\n", extra: bytes = b"") -> bytes:
    return (b"From: Someone <someone@remote.test>\r\nTo: bob@example.test\r\nSubject: " + subject.encode() +
            b"\r\nDate: Tue, 1 Dec 2026 10:00:00 +0000\r\nMessage-ID: <" + subject.encode().replace(b" ", b".") +
            b"@remote.test>\r\n" + extra + b"\r\n" + body)
