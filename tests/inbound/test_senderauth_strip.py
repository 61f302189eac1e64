"""RFC 8601 5: Authentication-Results fields claiming our authserv-id that arrive with a message are removed
before ours is added; others stay.  The sans-IO stripper at every split offset and one byte past its hold limit,
and through the real listener; who is not checked at all (trusted networks, submission)."""

from __future__ import annotations

import smtplib

import pytest

from mailserver.inbound.authresults import MAX_HELD, AuthResultsStripper
from tests import harness
from tests.inbound.senderauth_env import HOST, RCPT, Keys, auth_results, message, senderauth_server

OURS = "mail.example.test"

HEADER = (b"Received: from x by y; Mon, 01 Jan 2024 00:00:00 +0000\r\n"
          b"Authentication-Results: mail.example.test; spf=pass smtp.mailfrom=a@b\r\n"
          b"Authentication-Results: (a comment (nested)) MAIL.Example.TEST\r\n\t; dkim=pass\r\n"
          b"authentication-results   :\r\n mail.example.test 1; dmarc=pass\r\n"
          b'Authentication-Results: "mail.example.test"; arc=pass\r\n'
          b"Authentication-Results: other.example; spf=pass\r\n"
          b"Authentication-Results: mail.example.test.evil; spf=pass\r\n"
          b"X-Mentions: Authentication-Results: mail.example.test; spf=pass\r\n"
          b"Subject: hi\r\n"
          b"\r\n"
          b"Authentication-Results: mail.example.test; in the body, untouched\r\n")
KEPT = (b"Received: from x by y; Mon, 01 Jan 2024 00:00:00 +0000\r\n"
        b"Authentication-Results: other.example; spf=pass\r\n"
        b"Authentication-Results: mail.example.test.evil; spf=pass\r\n"
        b"X-Mentions: Authentication-Results: mail.example.test; spf=pass\r\n"
        b"Subject: hi\r\n"
        b"\r\n"
        b"Authentication-Results: mail.example.test; in the body, untouched\r\n")


def run(data: bytes, *splits: int) -> tuple[bytes, int]:
    s = AuthResultsStripper(OURS)
    out, last = b"", 0
    for cut in (*splits, len(data)):
        out += s.feed(data[last:cut])
        last = cut
    return out + s.finish(), s.removed


def test_fields_claiming_us_are_removed_at_every_split_offset():
    for i in range(len(HEADER) + 1):
        assert run(HEADER, i) == (KEPT, 4), i


def test_two_splits_and_byte_by_byte():
    for i in range(0, len(HEADER), 7):
        for j in range(i, len(HEADER), 11):
            assert run(HEADER, i, j) == (KEPT, 4), (i, j)
    assert run(HEADER, *range(1, len(HEADER))) == (KEPT, 4)


@pytest.mark.parametrize("eol", [b"\r\n", b"\n", b"\r"])
def test_bare_line_ends_cannot_hide_a_field(eol):
    """A field after a lone LF or CR is a field to lenient readers: it is removed too."""
    data = b"X-A: 1" + eol + b"Authentication-Results: mail.example.test; spf=pass\r\nSubject: s\r\n\r\nbody\r\n"
    assert run(data) == (b"X-A: 1" + eol + b"Subject: s\r\n\r\nbody\r\n", 1)


def test_hold_limit_one_byte_past():
    """A field whose authserv-id does not end within its first MAX_HELD bytes (a huge comment first) is removed;
    one whose id ends on the last byte within is decided by its id."""
    prefix = b"Authentication-Results: ("
    rest = b") other.example; x\r\n"
    within = MAX_HELD - len(prefix) - rest.index(b";") - 1  # the ";" after the id is byte MAX_HELD - 1
    for pad, claims_us in ((within, False), (within + 1, True)):
        field = prefix + b"c" * pad + rest
        data = field + b"Subject: s\r\n\r\nbody\r\n"
        out, removed = run(data, 1000, 40000)
        assert removed == int(claims_us), pad
        assert out == (b"" if claims_us else field) + b"Subject: s\r\n\r\nbody\r\n"


def test_a_long_line_that_is_not_ours_passes_whole():
    """Lines longer than the hold limit are passed on in pieces, never held whole."""
    line = b"X-Long: " + b"a" * (3 * MAX_HELD) + b"\r\n"
    s = AuthResultsStripper(OURS)
    first = s.feed(line[: 2 * MAX_HELD])
    assert len(first) > MAX_HELD  # passed on before the line ended
    assert first + s.feed(line[2 * MAX_HELD:] + b"\r\nbody") + s.finish() == line + b"\r\nbody"


def test_header_only_message_and_empty_input():
    assert run(b"Authentication-Results: mail.example.test; x\r\nSubject: s\r\n") == (b"Subject: s\r\n", 1)
    assert run(b"Authentication-Results: mail.example.test") == (b"", 1)
    assert run(b"") == (b"", 0)


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return Keys(tmp_path_factory.mktemp("keys"))


def test_through_the_listener_only_ours_is_left(tmp_path, keys):
    forged = ("Authentication-Results: mail.example.test; dmarc=pass header.from=bank.example\r\n"
              "Authentication-Results: other.example; spf=pass\r\n")
    with senderauth_server(tmp_path, keys) as env:
        env.send(message(sender="alice@other.test", extra=forged), "bounce@sender.test")
        fields = auth_results(env.only())
        assert len(fields) == 2
        assert fields[0].startswith(HOST + ";\r\n\tiprev=pass")
        assert fields[1] == "other.example; spf=pass"


def test_trusted_networks_and_submission_are_not_checked(tmp_path, keys):
    """No checks, no Authentication-Results, nothing removed: a trusted relay's fields are its own business."""
    forged = "Authentication-Results: mail.example.test; spf=pass\r\n"
    with senderauth_server(tmp_path, keys, smtp={"trusted_networks": ["127.0.0.0/8"]}) as env:
        env.send(message(extra=forged), "bounce@other.test")  # would be refused by DMARC if checked
        assert auth_results(env.only()) == ["mail.example.test; spf=pass"]
        assert not any(name.endswith("sender.test") for name, _ in env.dns.queries)
    with harness.running_server(tmp_path / "sub", listeners=("submission",), senderauth={"enabled": True}) as srv:
        srv.add_user(RCPT, "pw")
        with smtplib.SMTP("127.0.0.1", srv.port("submission")) as c:
            c.login(RCPT, "pw")
            c.sendmail(RCPT, [RCPT], message(sender=RCPT))
        acct = srv.store.get_account(RCPT)
        mb = srv.store.get_mailbox(acct.id, "INBOX")
        (m,) = srv.store.get_messages(mb.id, [x.uid for x in srv.store.list_messages(mb.id)])
        assert auth_results(srv.store.read_blob(m.blob_id)) == []


def _run_with(shortcut: bool, data: bytes, splits: list[int]) -> tuple[bytes, int]:
    s = AuthResultsStripper(OURS, shortcut=shortcut)
    out, last = b"", 0
    for cut in (*splits, len(data)):
        out += s.feed(data[last:cut])
        last = cut
    return out + s.finish(), s.removed


def test_whole_header_shortcut_same_as_line_by_line():
    """A piece holding a whole header without such a field passes at once: the same bytes and count as the
    line-by-line pass, over (seeded) random messages cut at random places."""
    import random

    rnd = random.Random(6)
    pieces = [b"Subject: hi", b"Authentication-Results: mail.example.test; spf=pass", b"AUTHENTICATION-RESULTS :",
              b"authentication-results: other.example; x", b"X-A: authentication-results", b"\r\n", b"\n", b"\r",
              b"\r\n\r\n", b" folded", b"\t", b"body text", b"x" * 100, b"mail.example.test"]
    for _ in range(5000):
        data = b"".join(rnd.choice(pieces) for _ in range(rnd.randint(0, 16)))
        splits = sorted(rnd.sample(range(len(data) + 1), min(len(data) + 1, rnd.randint(0, 3))))
        assert _run_with(True, data, splits) == _run_with(False, data, splits), (data, splits)
    assert _run_with(True, HEADER, []) == (KEPT, 4)
    assert _run_with(True, KEPT.replace(b"Authentication-Results", b"X-Other"), []) == \
        (KEPT.replace(b"Authentication-Results", b"X-Other"), 0)
