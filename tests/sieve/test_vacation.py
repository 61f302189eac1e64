"""RFC 3834 / RFC 5230 rules for vacation replies and the reply itself (sans-IO)."""

from __future__ import annotations

import email

import pytest

from mailserver.sieve import MessageFacts, Vacation
from mailserver.sieve import vacation as vac

BASE = b"From: Carol <carol@remote.test>\r\nTo: Bob <bob@example.test>\r\nSubject: Lunch?\r\n" \
       b"Message-ID: <m1@remote.test>\r\nReferences: <m0@remote.test>\r\n"
OWN = ["bob@example.test", "robert@example.test"]


@pytest.mark.parametrize("sender,extra,why", [
    ("carol@remote.test", b"", None),
    ("", b"", "null sender"),
    ("bob@example.test", b"", "the sender is the recipient"),
    ("ROBERT@example.test", b"", "the sender is the recipient"),
    ("MAILER-DAEMON@remote.test", b"", "system address"),
    ("owner-dev@lists.remote.test", b"", "system address"),
    ("dev-request@lists.remote.test", b"", "system address"),
    ("carol@remote.test", b"Auto-Submitted: auto-generated\r\n", "Auto-Submitted"),
    ("carol@remote.test", b"Auto-Submitted: no\r\n", None),
    ("carol@remote.test", b"Precedence: bulk\r\n", "Precedence: bulk"),
    ("carol@remote.test", b"Precedence: junk\r\n", "Precedence: junk"),
    ("carol@remote.test", b"Precedence: list\r\n", "Precedence: list"),
    ("carol@remote.test", b"List-Unsubscribe: <mailto:u@remote.test>\r\n", "mailing list"),
    ("carol@remote.test", b"List-Id: <x.remote.test>\r\n", "mailing list"),
])
def test_reasons_not_to_reply(sender, extra, why):
    facts = MessageFacts.from_bytes(BASE + extra + b"\r\nhi\r\n")
    got = vac.reason_not_to_reply(facts, sender, OWN, Vacation("away"))
    assert (got is None) if why is None else (why in got)


def test_not_addressed_to_us_unless_listed_in_addresses():
    facts = MessageFacts.from_bytes(BASE.replace(b"To: Bob <bob@example.test>", b"To: all@example.test") +
                                    b"\r\nhi\r\n")
    assert "none of our addresses" in vac.reason_not_to_reply(facts, "carol@remote.test", OWN, Vacation("a"))
    assert vac.reason_not_to_reply(facts, "carol@remote.test", OWN,
                                   Vacation("a", addresses=("all@example.test",))) is None


def test_the_reply_has_the_headers_rfc_3834_asks_for():
    facts = MessageFacts.from_bytes(BASE + b"\r\nhi\r\n")
    raw = vac.build_reply(facts, Vacation("Back on Monday.\nBob"), sender="carol@remote.test",
                          from_address="robert@example.test", hostname="mail.example.test", now=1_700_000_000)
    m = email.message_from_bytes(raw)
    assert m["Subject"] == "Auto: Lunch?"
    assert m["From"] == "<robert@example.test>" and m["To"] == "<carol@remote.test>"
    assert m["Auto-Submitted"].startswith("auto-replied")
    assert m["In-Reply-To"] == "<m1@remote.test>"
    assert m["References"] == "<m0@remote.test> <m1@remote.test>"
    assert m.get_payload() == "Back on Monday.\r\nBob\r\n"
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")


def test_handles_differ_with_the_reply_and_follow_an_explicit_handle():
    assert vac.handle_of(Vacation("a")) != vac.handle_of(Vacation("b"))
    assert vac.handle_of(Vacation("a", handle="h")) == vac.handle_of(Vacation("b", handle="h"))
