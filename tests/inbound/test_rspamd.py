"""rspamd (Debian's package, a private instance on loopback) scores mail from the MX: GTUBE gets rspamd's reject
and so a 550 5.7.1 at the end of DATA; its score and symbols reach the delivered copy; each recipient's domain
thresholds choose tag, Junk or refuse; authenticated submission is not spam-scored."""

from __future__ import annotations

import pytest

from tests.harness import running_server
from tests.inbound.daemons import GTUBE
from tests.inbound.mail import PW, copies, message, send


def _server(tmp_path, rspamd_daemon, **antispam):
    return running_server(tmp_path, listeners=("smtp", "submission"), domains=("example.test", "other.test"),
                          antispam={"rspamd": rspamd_daemon.address, "timeout": 60.0, **antispam})


@pytest.fixture
def srv(tmp_path, rspamd_daemon):
    with _server(tmp_path, rspamd_daemon) as s:
        for a in ("alice@example.test", "bob@example.test", "carol@other.test"):
            s.add_user(a, PW)
        yield s


def test_gtube_is_refused_at_data_with_550_5_7_1(srv):
    code, text = send(srv, message("gtube", body=GTUBE + b"\r\n"))
    assert (code, text[:6]) == (550, b"5.7.1 "), text
    assert b"spam" in text
    assert copies(srv, "bob@example.test") == []


def test_ham_is_delivered_with_its_score_and_symbols(srv):
    code, _ = send(srv, message("lunch"))
    assert code == 250
    ((msg, keywords),) = copies(srv, "bob@example.test")
    assert msg["X-Spam"] is None and keywords == ()
    assert float(msg["X-Spam-Score"]) < 5.0
    assert msg["X-Spam-Status"] is None  # it was checked


def test_a_score_over_junk_files_into_junk_with_the_why(srv):
    code, _ = send(srv, message("cheap pills", extra=b"X-Test-Score: 8\r\n"))
    assert code == 250
    assert copies(srv, "bob@example.test") == []
    ((msg, keywords),) = copies(srv, "bob@example.test", "Junk")
    assert msg["X-Spam"] == "yes" and keywords == ("$Junk",)
    assert float(msg["X-Spam-Score"]) >= 8.0
    assert "TEST_SCORE(8.00)" in msg["X-Spam-Symbols"]


def test_rspamd_soft_reject_and_greylist_defer_with_451_4_7_1(srv):
    for action in (b"soft reject", b"greylist"):
        code, text = send(srv, message("later", extra=b"X-Test-Action: " + action + b"\r\n"))
        assert (code, text[:6]) == (451, b"4.7.1 "), text
    assert copies(srv, "bob@example.test") == []


def test_rspamd_add_header_tags_even_under_our_thresholds(srv):
    code, _ = send(srv, message("tagged", extra=b"X-Test-Action: add header\r\n"))
    assert code == 250
    ((msg, keywords),) = copies(srv, "bob@example.test")  # INBOX: a tag, not Junk
    assert msg["X-Spam"] == "yes" and keywords == ()


def test_thresholds_differ_per_recipient_domain_with_one_rspamd_check(tmp_path, rspamd_daemon):
    """other.test files at 8 into Junk; example.test only tags below 10: one message, two decisions."""
    with _server(tmp_path, rspamd_daemon, junk=10.0, domain={"other.test": {"junk": 7.0}}) as s:
        for a in ("bob@example.test", "carol@other.test"):
            s.add_user(a, PW)
        code, _ = send(s, message("pills", extra=b"X-Test-Score: 8\r\n"),
                       rcpts=("bob@example.test", "carol@other.test"))
        assert code == 250
        ((bob, bob_kw),) = copies(s, "bob@example.test")
        ((carol, carol_kw),) = copies(s, "carol@other.test", "Junk")
        assert bob["X-Spam"] == carol["X-Spam"] == "yes"
        assert bob_kw == () and carol_kw == ("$Junk",)
        assert bob["X-Spam-Score"] == carol["X-Spam-Score"]  # one score: rspamd was asked once


def test_authenticated_submission_is_not_spam_scored(srv):
    raw = message("gtube from alice", body=GTUBE + b"\r\n").replace(b"someone@remote.test", b"alice@example.test")
    code, _ = send(srv, raw, sender="alice@example.test", submission=True)
    assert code == 250
    ((msg, _),) = copies(srv, "bob@example.test")
    assert msg["X-Spam-Score"] is None and msg["X-Spam"] is None


def test_trusted_networks_are_not_spam_scored(tmp_path, rspamd_daemon):
    with running_server(tmp_path, antispam={"rspamd": rspamd_daemon.address},
                        smtp={"trusted_networks": ["127.0.0.0/8"]}) as s:
        s.add_user("bob@example.test", PW)
        assert send(s, message("gtube", body=GTUBE + b"\r\n"))[0] == 250
        ((msg, _),) = copies(s, "bob@example.test")
        assert msg["X-Spam-Score"] is None
