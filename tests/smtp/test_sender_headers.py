"""Authenticated submission refuses From:/Sender: header addresses the account does not own (RFC 6409 8.1).

The envelope sender was checked already; the header is what a reader sees, so ``From: Bob <bob@...>`` with
alice's envelope was a way to impersonate another user of the same server."""

from __future__ import annotations

import smtplib
import ssl

import pytest

from mailserver.delivery.sender_headers import header_addresses
from tests.harness import running_server


def _tls() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


@pytest.fixture
def srv(tmp_path):
    with running_server(tmp_path, listeners=("submission",)) as s:
        s.add_user("alice@example.test", "secret")
        s.add_user("bob@example.test", "secret")
        s.store.add_alias("sales@example.test", "alice@example.test")
        yield s


def _send(srv, headers: str):
    with smtplib.SMTP("127.0.0.1", srv.port("submission"), timeout=30) as c:
        c.starttls(context=_tls())
        c.login("alice@example.test", "secret")
        c.mail("alice@example.test")
        c.rcpt("bob@example.test")
        return c.data(f"{headers}Subject: x\r\n\r\nbody\r\n".encode())


def _bob_inbox(srv) -> int:
    return srv.store.get_mailbox(srv.store.get_account("bob@example.test").id, "INBOX").message_count


@pytest.mark.parametrize("headers", [
    "From: Bob <bob@example.test>\r\n",
    "From: Alice <alice@example.test>\r\nSender: bob@example.test\r\n",
    "From: alice@example.test, bob@example.test\r\n",
    "From: \"alice@example.test\" <BOB@example.test>\r\n",
    "From: alice@example.test\r\nFrom: bob@example.test\r\n",
    # What readers (and our own ENVELOPE) take for a From field, white space before the colon included
    # (RFC 5322 4.5.3): these went through unchecked.
    "FROM : Bob <bob@example.test>\r\n",
    "From\t:bob@example.test\r\n",
    "Sender :bob@example.test\r\nFrom: alice@example.test\r\n",
    "From: Alice <alice@example.test> bob@example.test\r\n",
    "From: Alice\r\n <bob@example.test>\r\n",
    # A From past the first 256 KiB of header, where the check did not look.
    ("X-Pad: " + "p" * 90 + "\r\n") * 2700 + "From: bob@example.test\r\n",
])
def test_header_in_another_users_name_is_refused_at_data(srv, headers):
    code, text = _send(srv, headers)
    assert code == 550 and text.startswith(b"5.7.1")
    assert _bob_inbox(srv) == 0


@pytest.mark.parametrize("headers", [
    "From: Alice <alice@example.test>\r\n",
    "From: Sales <sales@example.test>\r\nSender: alice@example.test\r\n",  # an alias of hers
    "From: Alice <ALICE+lists@example.test>\r\n",  # a subaddress, any case
    "",  # no From at all: nothing claimed
    "From : alice@example.test\r\nX-Original-From: bob@example.test\r\n",  # other fields are not From
    ("X-Pad: " + "p" * 90 + "\r\n") * 2000 + "From: alice@example.test\r\n",  # a long header that ends in time
])
def test_own_addresses_and_aliases_pass(srv, headers):
    code, _ = _send(srv, headers)
    assert code == 250
    assert _bob_inbox(srv) == 1


def test_header_addresses_reads_every_from_and_sender():
    head = (b"Received: x\r\nFrom: A <a@x.test>, b@y.test\r\nSender: s@z.test\r\nTo: t@t.test\r\n\r\n"
            b"From: body@not.header\r\n")
    assert header_addresses(head) == ["a@x.test", "b@y.test", "s@z.test"]
    assert header_addresses(b"FROM :a@x.test\r\nX-From: b@y.test\r\n continued\r\n\r\n") == ["a@x.test"]
    assert header_addresses(b"\r\nFrom: body@x.test\r\n") == []  # no header at all
