"""SMTP, IMAP and POP3 logins go through one step (mailserver/login.py) that writes one log line per attempt."""

from __future__ import annotations

import imaplib
import poplib
import smtplib

import pytest
from twisted.logger import formatEvent, globalLogPublisher

from tests.harness import running_server

USER = "alice@example.test"


def _smtp(srv, password):
    with smtplib.SMTP("127.0.0.1", srv.port("submission"), timeout=30) as c:
        c.ehlo()
        c.user, c.password = USER, password
        try:
            c.auth("PLAIN", c.auth_plain)  # one attempt (login() would try LOGIN after PLAIN); loopback: no TLS
        except smtplib.SMTPAuthenticationError:
            pass


def _imap(srv, password):
    c = imaplib.IMAP4("127.0.0.1", srv.port("imap"))
    try:
        c.login(USER, password)
    except imaplib.IMAP4.error:
        pass
    c.logout()


def _pop3(srv, password):
    c = poplib.POP3("127.0.0.1", srv.port("pop3"), timeout=30)
    c.user(USER)
    try:
        c.pass_(password)
    except poplib.error_proto:
        pass
    c.quit()


@pytest.mark.parametrize("protocol, attempt", [("smtp", _smtp), ("imap", _imap), ("pop3", _pop3)])
def test_one_login_line_per_attempt(tmp_path, protocol, attempt):
    """A wrong and then a right password give "login failed … (invalid)" and "login ok …", naming the protocol."""
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        with running_server(tmp_path, listeners=("submission", "imap", "pop3")) as srv:
            srv.add_user(USER, "secret")
            attempt(srv, "wrong")
            attempt(srv, "secret")
    finally:
        globalLogPublisher.removeObserver(events.append)
    lines = [formatEvent(e) for e in events if e.get("log_format", "").startswith("login ")]
    assert lines == [f"login failed for '{USER}' from 127.0.0.1 via {protocol} (invalid)",
                     f"login ok for {USER} from 127.0.0.1 via {protocol}"]
