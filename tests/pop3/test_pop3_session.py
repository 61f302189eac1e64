"""The sans-IO POP3 session: every command, every response code, limits, pipelining, STLS, SASL."""

import base64

import pytest

from mailserver.config import LimitsConfig
from mailserver.pop3 import wire
from mailserver.pop3.session import (
    AUTHORIZATION,
    MAX_SASL_LINE,
    TRANSACTION,
    UPDATE,
    Authenticate,
    Close,
    Expunge,
    Maildrop,
    MaildropEntry,
    MaildropLocks,
    OpenMaildrop,
    Pop3Session,
    Retrieve,
    Send,
    StartTls,
)

LIMITS = LimitsConfig()

MSG1 = b"From: a@example.org\r\nSubject: one\r\n\r\nHello\r\n.dot line\r\n"
MSG2 = b"Subject: two\r\n\r\nl1\r\nl2\r\nl3\r\n"
MSG3 = b"Subject: three\r\n\r\n..\r\n.\r\n"
BLOBS = {"b1": MSG1, "b2": MSG2, "b3": MSG3}
MAILDROP = Maildrop(
    mailbox_id=7,
    uid_validity=1700000000,
    entries=(MaildropEntry(11, len(MSG1), "b1"), MaildropEntry(12, len(MSG2), "b2"),
             MaildropEntry(15, len(MSG3), "b3")),
)
TOTAL = len(MSG1) + len(MSG2) + len(MSG3)
USERS = {"alice@example.org": ("secret", 1), "bob@example.org": ("pw2", 2)}


class Driver:
    """Runs a session and fulfils its requests at once (``auto``) or keeps them for the test (``pending``)."""

    def __init__(self, *, locks=None, limits=LIMITS, auto=True, expunge_ok=True, auth_reason="invalid",
                 **kw):
        kw.setdefault("plaintext_without_tls", True)
        self.locks = locks if locks is not None else MaildropLocks()
        self.s = Pop3Session(hostname="mx.example.org", limits=limits, locks=self.locks, **kw)
        self.auto = auto
        self.expunge_ok = expunge_ok
        self.auth_reason = auth_reason
        self.out = bytearray()
        self.closed = False
        self.tls = 0
        self.expunged: list[Expunge] = []
        self.logins: list[Authenticate] = []
        self.pending: list = []
        self.handle(self.s.greeting())

    def handle(self, outputs):
        for o in outputs:
            if isinstance(o, Send):
                assert not self.closed, "sent after Close"
                self.out += o.data
            elif isinstance(o, Close):
                self.closed = True
            elif isinstance(o, StartTls):
                self.tls += 1
            elif not self.auto:
                self.pending.append(o)
            else:
                self.fulfil(o)

    def fulfil(self, o):
        if isinstance(o, Authenticate):
            self.logins.append(o)
            user = USERS.get(o.username)
            if user and user[0] == o.password:
                self.handle(self.s.auth_result(True, user[1]))
            else:
                self.handle(self.s.auth_result(False, None, self.auth_reason))
        elif isinstance(o, OpenMaildrop):
            self.handle(self.s.maildrop_opened(MAILDROP, "alice@example.org"))
        elif isinstance(o, Retrieve):
            self.handle(self.s.retrieve_begin())
            enc = wire.BodyEncoder(o.top_lines)
            self.out += enc.encode(BLOBS[o.entry.blob_id]) + enc.finish()
            self.handle(self.s.retrieve_done())
        elif isinstance(o, Expunge):
            self.expunged.append(o)
            self.handle(self.s.update_done(self.expunge_ok))
        else:  # pragma: no cover
            raise AssertionError(o)

    def send(self, data: bytes) -> bytes:
        self.out.clear()
        self.handle(self.s.data_received(data))
        got = bytes(self.out)
        self.out.clear()
        return got

    def cmd(self, line: str) -> bytes:
        return self.send(line.encode() + b"\r\n")

    def login(self, user="alice@example.org", pw="secret"):
        assert self.cmd(f"USER {user}").startswith(b"+OK")
        reply = self.cmd(f"PASS {pw}")
        assert reply.startswith(b"+OK maildrop has"), reply
        return reply


def multiline(reply: bytes) -> list[bytes]:
    assert reply.startswith(b"+OK") and reply.endswith(b"\r\n.\r\n"), reply
    return reply.split(b"\r\n")[1:-2]


# --------------------------------------------------------------------------------------------- greeting, CAPA


def test_greeting_has_no_apop_timestamp():
    d = Driver()
    d.out.clear()
    assert Pop3Session(hostname="h", limits=LIMITS, locks=MaildropLocks()).greeting() == [
        Send(b"+OK h POP3 server ready\r\n")]


def test_capa_lists_exactly_what_is_supported():
    """RFC 2449 section 5: CAPA lists the capabilities; STLS only when TLS can start."""
    d = Driver(tls_available=True)
    assert multiline(d.cmd("CAPA")) == [
        b"TOP", b"UIDL", b"RESP-CODES", b"AUTH-RESP-CODE", b"PIPELINING", b"USER", b"SASL PLAIN LOGIN",
        b"STLS", b"EXPIRE NEVER", b"IMPLEMENTATION mailserver"]


def test_capa_without_plaintext_hides_user_and_sasl_until_tls():
    """Without TLS from a remote client, USER and SASL are not offered; after STLS they are, STLS is not."""
    d = Driver(tls_available=True, plaintext_without_tls=False)
    caps = multiline(d.cmd("CAPA"))
    assert b"USER" not in caps and not any(c.startswith(b"SASL") for c in caps) and b"STLS" in caps
    assert d.cmd("STLS") == b"+OK begin TLS negotiation\r\n" and d.tls == 1
    caps = multiline(d.cmd("CAPA"))
    assert b"USER" in caps and b"SASL PLAIN LOGIN" in caps and b"STLS" not in caps


def test_capa_in_transaction_state_and_on_implicit_tls():
    """The same list in TRANSACTION (RFC 2449 section 5); implicit TLS never lists STLS."""
    d = Driver(tls_active=True, tls_available=False, plaintext_without_tls=False)
    d.login()
    caps = multiline(d.cmd("CAPA"))
    assert b"STLS" not in caps and b"USER" in caps and b"TOP" in caps


def test_capa_expire_as_configured():
    d = Driver(expire="30")
    assert b"EXPIRE 30" in multiline(d.cmd("CAPA"))
    d = Driver(expire="")
    assert not any(c.startswith(b"EXPIRE") for c in multiline(d.cmd("CAPA")))


# --------------------------------------------------------------------------------------------- USER/PASS


def test_user_pass_login_opens_maildrop():
    d = Driver()
    assert d.cmd("USER alice@example.org") == b"+OK send PASS\r\n"
    assert d.cmd("PASS secret") == f"+OK maildrop has 3 messages ({TOTAL} octets)\r\n".encode()
    assert d.s.state is TRANSACTION and d.s.account_id == 1 and d.locks.held(1)
    assert d.logins == [Authenticate("alice@example.org", "secret", "USER")]


def test_password_with_spaces_is_passed_whole():
    d = Driver()
    d.cmd("USER bob@example.org")
    d.cmd("PASS  a b ")
    assert d.logins[-1].password == " a b "


def test_wrong_password_is_auth_response_code():
    """RFC 3206: a credentials failure is -ERR [AUTH]; the session stays in AUTHORIZATION."""
    d = Driver()
    d.cmd("USER alice@example.org")
    assert d.cmd("PASS wrong") == b"-ERR [AUTH] authentication failed\r\n"
    assert d.s.state is AUTHORIZATION and not d.locks.held(1)
    d.login()


@pytest.mark.parametrize("reason,reply", [
    ("invalid", b"-ERR [AUTH] authentication failed\r\n"),
    ("disabled", b"-ERR [AUTH] account disabled\r\n"),
    ("throttled", b"-ERR [SYS/TEMP] too many failed logins, try again later\r\n"),
])
def test_auth_failure_reasons(reason, reply):
    d = Driver(auth_reason=reason)
    d.cmd("USER alice@example.org")
    assert d.cmd("PASS nope") == reply


def test_auth_backend_error_is_sys_temp():
    d = Driver(auto=False)
    d.cmd("USER alice@example.org")
    d.cmd("PASS secret")
    assert isinstance(d.pending.pop(), Authenticate)
    d.handle(d.s.auth_error())
    assert bytes(d.out) == b"-ERR [SYS/TEMP] authentication temporarily unavailable\r\n"


def test_pass_without_user():
    d = Driver()
    assert d.cmd("PASS secret") == b"-ERR USER first\r\n"


def test_pass_must_follow_user_immediately():
    """RFC 1939 section 7: another command between USER and PASS cancels the USER."""
    d = Driver()
    d.cmd("USER alice@example.org")
    d.cmd("CAPA")
    assert d.cmd("PASS secret") == b"-ERR USER first\r\n"


def test_plaintext_refused_without_tls_from_remote():
    """USER/PASS and AUTH PLAIN/LOGIN need TLS (or loopback): -ERR [AUTH]."""
    d = Driver(tls_available=True, plaintext_without_tls=False)
    refusal = b"-ERR [AUTH] plaintext authentication disallowed without TLS, use STLS\r\n"
    assert d.cmd("USER alice@example.org") == refusal
    assert d.cmd("AUTH PLAIN " + base64.b64encode(b"\0alice@example.org\0secret").decode()) == refusal
    assert d.cmd("AUTH LOGIN") == refusal
    assert d.logins == []


def test_apop_not_offered():
    assert Driver().cmd("APOP alice c4c9334bac560ecc979e58001b3e22fb") == b"-ERR APOP not supported\r\n"


# --------------------------------------------------------------------------------------------- [IN-USE]


def test_second_session_on_same_maildrop_is_in_use():
    """RFC 2449 section 8.1.1: a second POP3 session on a locked maildrop gets -ERR [IN-USE]."""
    locks = MaildropLocks()
    first, second = Driver(locks=locks), Driver(locks=locks)
    first.login()
    second.cmd("USER alice@example.org")
    assert second.cmd("PASS secret") == b"-ERR [IN-USE] maildrop already locked by another session\r\n"
    assert second.s.state is AUTHORIZATION
    # Another account is not affected.
    Driver(locks=locks).login("bob@example.org", "pw2")
    first.cmd("QUIT")
    assert not locks.held(1)
    second.login()


def test_dropped_connection_releases_lock_and_deletes_nothing():
    """RFC 1939 section 6: without QUIT there is no UPDATE state; the lock goes with the connection."""
    locks = MaildropLocks()
    d = Driver(locks=locks)
    d.login()
    d.cmd("DELE 1")
    d.s.connection_lost()
    assert d.expunged == [] and not locks.held(1)


def test_lock_released_when_connection_drops_while_maildrop_loads():
    locks = MaildropLocks()
    d = Driver(locks=locks, auto=False)
    d.cmd("USER alice@example.org")
    d.cmd("PASS secret")
    d.fulfil(d.pending.pop())  # the Authenticate: answers with OpenMaildrop, kept pending
    assert isinstance(d.pending[-1], OpenMaildrop) and locks.held(1)
    d.s.connection_lost()
    assert not locks.held(1)
    assert d.s.maildrop_opened(MAILDROP) == []  # a late result is ignored


def test_maildrop_failure_is_sys_temp_and_unlocks():
    locks = MaildropLocks()
    d = Driver(locks=locks, auto=False)
    d.cmd("USER alice@example.org")
    d.cmd("PASS secret")
    d.fulfil(d.pending.pop())
    d.pending.clear()
    d.handle(d.s.maildrop_failed())
    assert bytes(d.out).endswith(b"-ERR [SYS/TEMP] cannot open maildrop\r\n")
    assert d.s.state is AUTHORIZATION and not locks.held(1)


# --------------------------------------------------------------------------------------------- SASL


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_auth_plain_with_initial_response():
    """RFC 5034 section 4: AUTH PLAIN with an initial response logs in with no continuation."""
    d = Driver()
    reply = d.cmd("AUTH PLAIN " + b64(b"\0alice@example.org\0secret"))
    assert reply.startswith(b"+OK maildrop has 3 messages")
    assert d.logins == [Authenticate("alice@example.org", "secret", "PLAIN")]


def test_auth_plain_with_authzid_equal_to_authcid():
    d = Driver()
    assert d.cmd("AUTH PLAIN " + b64(b"alice@example.org\0alice@example.org\0secret")).startswith(b"+OK")


def test_auth_plain_acting_as_another_identity_is_refused():
    d = Driver()
    assert d.cmd("AUTH PLAIN " + b64(b"bob@example.org\0alice@example.org\0secret")).startswith(b"-ERR [AUTH]")
    assert d.logins == []


def test_auth_plain_without_initial_response():
    """The server sends an empty continuation "+ " and takes the response on the next line."""
    d = Driver()
    assert d.cmd("AUTH PLAIN") == b"+ \r\n"
    assert d.cmd(b64(b"\0alice@example.org\0secret")).startswith(b"+OK maildrop")


def test_auth_login_exchange():
    d = Driver()
    assert d.cmd("AUTH LOGIN") == b"+ " + base64.b64encode(b"Username:") + b"\r\n"
    assert d.cmd(b64(b"alice@example.org")) == b"+ " + base64.b64encode(b"Password:") + b"\r\n"
    assert d.cmd(b64(b"secret")).startswith(b"+OK maildrop")
    assert d.logins == [Authenticate("alice@example.org", "secret", "LOGIN")]


def test_auth_login_with_initial_response():
    d = Driver()
    assert d.cmd("AUTH LOGIN " + b64(b"alice@example.org")) == b"+ " + base64.b64encode(b"Password:") + b"\r\n"
    assert d.cmd(b64(b"wrong")) == b"-ERR [AUTH] authentication failed\r\n"


def test_auth_cancelled_with_star():
    """RFC 5034 section 4: "*" cancels; the AUTH command is answered -ERR and commands resume."""
    d = Driver()
    d.cmd("AUTH PLAIN")
    assert d.cmd("*") == b"-ERR authentication cancelled\r\n"
    assert d.cmd("CAPA").startswith(b"+OK")


@pytest.mark.parametrize("line,reply", [
    ("AUTH PLAIN !!!", b"-ERR [AUTH] authentication failed: response is not valid base64\r\n"),
    ("AUTH PLAIN =", b"-ERR [AUTH] authentication failed"),
    ("AUTH CRAM-MD5", b"-ERR unsupported authentication mechanism\r\n"),
    ("AUTH GSSAPI", b"-ERR unsupported authentication mechanism\r\n"),
])
def test_auth_errors(line, reply):
    d = Driver()
    assert d.cmd(line).startswith(reply)
    assert d.s.state is AUTHORIZATION


def test_auth_bad_continuation():
    d = Driver()
    d.cmd("AUTH PLAIN")
    assert d.cmd("%%%").startswith(b"-ERR [AUTH]")
    assert d.cmd("NOOP") == b"-ERR command not valid in this state\r\n"  # back to commands


def test_auth_without_mechanism_lists_mechanisms():
    assert multiline(Driver().cmd("AUTH")) == [b"PLAIN", b"LOGIN"]
    assert multiline(Driver(plaintext_without_tls=False).cmd("AUTH")) == []


def test_sasl_continuation_may_exceed_command_line_limit():
    """Continuation lines are bounded by the SASL limit, not the 512-octet command limit."""
    d = Driver()
    d.cmd("AUTH PLAIN")
    long_pw = "p" * 900
    reply = d.send(b64(b"\0alice@example.org\0" + long_pw.encode()).encode() + b"\r\n")
    assert reply == b"-ERR [AUTH] authentication failed\r\n"
    assert d.logins[-1].password == long_pw
    d.cmd("AUTH PLAIN")
    assert d.send(b"A" * (MAX_SASL_LINE - 1) + b"\r\n").startswith(b"-ERR line longer")
    assert d.cmd("CAPA").startswith(b"+OK")


# --------------------------------------------------------------------------------------------- STLS


def test_stls_discards_pipelined_plaintext():
    """RFC 2595 section 4 / CVE-2011-0411 class: commands sent with STLS before the handshake are dropped."""
    d = Driver(tls_available=True, plaintext_without_tls=False)
    reply = d.send(b"STLS\r\nUSER injected\r\nPASS x\r\n")
    assert reply == b"+OK begin TLS negotiation\r\n" and d.tls == 1 and d.logins == []
    assert d.s.tls_active and d.s._reader.buffered() == 0
    d.login()


def test_stls_forgets_user_given_before():
    d = Driver(tls_available=True)
    d.cmd("USER alice@example.org")
    d.cmd("STLS")
    assert d.cmd("PASS secret") == b"-ERR USER first\r\n"


@pytest.mark.parametrize("kw,reply", [
    ({"tls_available": False}, b"-ERR TLS not available\r\n"),
    ({"tls_available": False, "tls_active": True}, b"-ERR TLS already active\r\n"),
])
def test_stls_refused(kw, reply):
    assert Driver(**kw).cmd("STLS") == reply


def test_stls_twice():
    d = Driver(tls_available=True)
    d.cmd("STLS")
    assert d.cmd("STLS") == b"-ERR TLS already active\r\n" and d.tls == 1


def test_stls_in_transaction_state():
    d = Driver(tls_available=True)
    d.login()
    assert d.cmd("STLS") == b"-ERR command not valid in this state\r\n"


# --------------------------------------------------------------------------------------------- TRANSACTION


@pytest.fixture
def d():
    drv = Driver()
    drv.login()
    return drv


def test_stat(d):
    assert d.cmd("STAT") == f"+OK 3 {TOTAL}\r\n".encode()


def test_list(d):
    assert multiline(d.cmd("LIST")) == [f"1 {len(MSG1)}".encode(), f"2 {len(MSG2)}".encode(),
                                        f"3 {len(MSG3)}".encode()]
    assert d.cmd("LIST 2") == f"+OK 2 {len(MSG2)}\r\n".encode()
    assert d.cmd("LIST 4") == b"-ERR no such message\r\n"
    assert d.cmd("LIST x") == b"-ERR invalid message number\r\n"


def test_uidl(d):
    """UIDL is uid_validity.uid: stable across sessions, never reused."""
    assert multiline(d.cmd("UIDL")) == [b"1 1700000000.11", b"2 1700000000.12", b"3 1700000000.15"]
    assert d.cmd("UIDL 3") == b"+OK 3 1700000000.15\r\n"
    assert d.cmd("UIDL 9") == b"-ERR no such message\r\n"
    other = Driver()
    other.login()
    assert other.cmd("UIDL") == d.cmd("UIDL")


def test_retr_sends_exact_size_and_stuffed_body(d):
    reply = d.cmd("RETR 1")
    assert reply == (f"+OK {len(MSG1)} octets\r\n".encode() + MSG1.replace(b"\n.", b"\n..") + b".\r\n")
    reply = d.cmd("RETR 3")
    assert reply == f"+OK {len(MSG3)} octets\r\n".encode() + b"Subject: three\r\n\r\n...\r\n..\r\n.\r\n"
    assert d.cmd("RETR 4") == b"-ERR no such message\r\n"


@pytest.mark.parametrize("n,body", [
    (0, b"Subject: two\r\n\r\n"),
    (2, b"Subject: two\r\n\r\nl1\r\nl2\r\n"),
    (10, MSG2),
])
def test_top(d, n, body):
    assert d.cmd(f"TOP 2 {n}") == b"+OK top of message follows\r\n" + body + b".\r\n"


def test_top_errors(d):
    assert d.cmd("TOP 2") == b"-ERR wrong number of arguments\r\n"
    assert d.cmd("TOP 2 -1") == b"-ERR invalid number of lines\r\n"
    assert d.cmd("TOP 5 1") == b"-ERR no such message\r\n"


def test_dele_marks_and_hides(d):
    """DELE marks; STAT, LIST and UIDL leave the message out; referring to it is an error (RFC 1939 5)."""
    assert d.cmd("DELE 2") == b"+OK message 2 deleted\r\n"
    assert d.cmd("DELE 2") == b"-ERR message 2 already deleted\r\n"
    assert d.cmd("STAT") == f"+OK 2 {len(MSG1) + len(MSG3)}\r\n".encode()
    assert multiline(d.cmd("LIST")) == [f"1 {len(MSG1)}".encode(), f"3 {len(MSG3)}".encode()]
    assert multiline(d.cmd("UIDL")) == [b"1 1700000000.11", b"3 1700000000.15"]
    for c in ("RETR 2", "TOP 2 0", "LIST 2", "UIDL 2"):
        assert d.cmd(c) == b"-ERR message 2 already deleted\r\n"
    assert d.expunged == []


def test_rset_unmarks(d):
    d.cmd("DELE 1")
    d.cmd("DELE 3")
    assert d.cmd("RSET") == f"+OK maildrop has 3 messages ({TOTAL} octets)\r\n".encode()
    assert d.cmd("STAT") == f"+OK 3 {TOTAL}\r\n".encode()


def test_noop(d):
    assert d.cmd("NOOP") == b"+OK\r\n"


def test_quit_expunges_marked_messages(d):
    """RFC 1939 section 6: QUIT in TRANSACTION enters UPDATE and removes exactly the marked uids."""
    d.cmd("DELE 3")
    d.cmd("DELE 1")
    assert d.cmd("QUIT") == b"+OK mx.example.org POP3 server signing off (1 messages left)\r\n"
    assert d.expunged == [Expunge(1, 7, (11, 15))] and d.closed and d.s.state is UPDATE
    assert not d.locks.held(1)


def test_quit_without_deletions_expunges_nothing(d):
    assert d.cmd("QUIT").startswith(b"+OK") and d.expunged == [] and d.closed


def test_quit_when_expunge_fails_is_sys_temp():
    d = Driver(expunge_ok=False)
    d.login()
    d.cmd("DELE 1")
    assert d.cmd("QUIT") == b"-ERR [SYS/TEMP] some deleted messages not removed\r\n" and d.closed


def test_quit_in_authorization():
    d = Driver()
    assert d.cmd("QUIT") == b"+OK mx.example.org POP3 server signing off\r\n" and d.closed
    assert d.cmd("CAPA") == b""


def test_input_after_quit_is_ignored(d):
    assert d.send(b"QUIT\r\nSTAT\r\n").startswith(b"+OK") and d.closed
    assert d.cmd("STAT") == b""


@pytest.mark.parametrize("line", ["STAT", "LIST", "RETR 1", "DELE 1", "NOOP", "RSET", "TOP 1 1", "UIDL"])
def test_transaction_commands_in_authorization(line):
    assert Driver().cmd(line) == b"-ERR command not valid in this state\r\n"


@pytest.mark.parametrize("line", ["USER a", "PASS b", "AUTH PLAIN", "APOP a b", "STLS"])
def test_authorization_commands_in_transaction(d, line):
    assert d.cmd(line) == b"-ERR command not valid in this state\r\n"


def test_unknown_command():
    assert Driver().cmd("XTND XMIT") == b"-ERR unknown command\r\n"


def test_keywords_are_case_insensitive(d):
    assert d.cmd("stat") == d.cmd("StAt") == f"+OK 3 {TOTAL}\r\n".encode()


# --------------------------------------------------------------------------------------------- limits


def test_command_line_at_limit_and_one_over():
    """pop3_max_line octets including CRLF are accepted; one more is -ERR, and the session goes on."""
    d = Driver()
    line = b"USER " + b"a" * (LIMITS.pop3_max_line - 7)
    assert len(line) + 2 == LIMITS.pop3_max_line
    assert d.send(line + b"\r\n") == b"+OK send PASS\r\n"
    assert d.send(line + b"a\r\n") == f"-ERR line longer than {LIMITS.pop3_max_line} octets\r\n".encode()
    assert d.cmd("CAPA").startswith(b"+OK")


def test_commands_without_progress_limit():
    """pop3_max_commands_without_progress -ERRs are answered; one more ends the session."""
    limits = LimitsConfig(pop3_max_commands_without_progress=5)
    d = Driver(limits=limits)
    for _ in range(5):
        assert d.cmd("BOGUS") == b"-ERR unknown command\r\n"
    assert d.cmd("BOGUS") == (b"-ERR unknown command\r\n"
                              b"-ERR too many commands without progress, closing\r\n")
    assert d.closed


def test_authorization_commands_count_until_login():
    """In AUTHORIZATION even successful commands count: a client cannot loop on CAPA forever."""
    limits = LimitsConfig(pop3_max_commands_without_progress=3)
    d = Driver(limits=limits)
    for _ in range(3):
        d.cmd("CAPA")
    d.cmd("CAPA")
    assert d.closed


def test_progress_resets_counter_in_transaction():
    limits = LimitsConfig(pop3_max_commands_without_progress=3)
    d = Driver(limits=limits)
    d.login()  # 2 commands, then reset on login
    for _ in range(10):
        for _ in range(3):
            assert d.cmd("RETR 99") == b"-ERR no such message\r\n"
        assert d.cmd("NOOP") == b"+OK\r\n"
    assert not d.closed


def test_failed_logins_count_as_no_progress():
    limits = LimitsConfig(pop3_max_commands_without_progress=4)
    d = Driver(limits=limits)
    d.cmd("USER alice@example.org")
    d.cmd("PASS x")  # USER, PASS, failure: 3
    d.cmd("USER alice@example.org")  # 4
    assert not d.closed
    d.cmd("PASS x")
    assert d.closed


# --------------------------------------------------------------------------------------------- pipelining


def test_pipelined_session_in_one_packet():
    """RFC 2449 section 6.6: all commands in one write, answered in order."""
    d = Driver()
    reply = d.send(b"USER alice@example.org\r\nPASS secret\r\nSTAT\r\nRETR 2\r\nDELE 2\r\nLIST\r\nQUIT\r\n")
    assert reply == (b"+OK send PASS\r\n"
                     + f"+OK maildrop has 3 messages ({TOTAL} octets)\r\n".encode()
                     + f"+OK 3 {TOTAL}\r\n".encode()
                     + f"+OK {len(MSG2)} octets\r\n".encode() + MSG2 + b".\r\n"
                     + b"+OK message 2 deleted\r\n"
                     + f"+OK 2 messages ({len(MSG1) + len(MSG3)} octets)\r\n1 {len(MSG1)}\r\n3 {len(MSG3)}\r\n.\r\n"
                     .encode()
                     + b"+OK mx.example.org POP3 server signing off (2 messages left)\r\n")
    assert d.expunged == [Expunge(1, 7, (12,))]


def test_pipelined_commands_wait_for_outstanding_request():
    """While a RETR streams, later commands are not answered; they run after retrieve_done, in order."""
    d = Driver(auto=False)
    d.handle(d.s.data_received(b"USER alice@example.org\r\nPASS secret\r\n"))
    d.fulfil(d.pending.pop())
    d.fulfil(d.pending.pop())
    d.out.clear()
    d.handle(d.s.data_received(b"STAT\r\nRETR 1\r\nNOOP\r\nDELE 1\r\n"))
    assert bytes(d.out) == f"+OK 3 {TOTAL}\r\n".encode()
    (r,) = d.pending
    assert isinstance(r, Retrieve) and r.msg == 1 and r.top_lines is None and d.s.busy
    d.out.clear()
    d.handle(d.s.retrieve_begin())
    d.handle(d.s.retrieve_done())
    assert bytes(d.out) == f"+OK {len(MSG1)} octets\r\n".encode() + b"+OK\r\n+OK message 1 deleted\r\n"


def test_retrieve_failure_answers_err_and_continues():
    d = Driver(auto=False)
    d.handle(d.s.data_received(b"USER alice@example.org\r\nPASS secret\r\n"))
    d.fulfil(d.pending.pop())
    d.fulfil(d.pending.pop())
    d.out.clear()
    d.handle(d.s.data_received(b"RETR 1\r\nNOOP\r\n"))
    d.pending.clear()
    d.handle(d.s.retrieve_failed())
    assert bytes(d.out) == b"-ERR message no longer available\r\n+OK\r\n"


def test_pipeline_backlog_limit():
    """More than MAX_PIPELINED octets waiting behind an outstanding request end the session."""
    d = Driver(auto=False)
    d.handle(d.s.data_received(b"USER alice@example.org\r\nPASS secret\r\n"))
    d.out.clear()
    d.handle(d.s.data_received(b"NOOP\r\n" * (wire.MAX_PIPELINED // 6)))
    assert not d.closed
    d.handle(d.s.data_received(b"NOOP\r\n"))
    assert d.closed and bytes(d.out).startswith(b"-ERR more than")
    assert not d.locks.held(1)


def test_late_results_after_close_are_ignored():
    d = Driver(auto=False)
    d.handle(d.s.data_received(b"USER alice@example.org\r\nPASS secret\r\n"))
    d.s.connection_lost()
    assert d.s.auth_result(True, 1) == [] and not d.locks.held(1)
    assert d.s.retrieve_done() == [] and d.s.update_done(True) == [] and d.s.retrieve_begin() == []


def test_every_response_line_fits_512_octets(d):
    """RFC 2449 section 4: response lines are at most 512 octets including CRLF."""
    out = d.cmd("CAPA") + d.cmd("LIST") + d.cmd("UIDL") + d.cmd("STAT") + d.cmd("BOGUS " + "x" * 600)
    assert all(len(ln) + 2 <= 512 for ln in out.split(b"\r\n"))


def test_lock_held_until_update_finishes_even_if_client_leaves():
    """After QUIT the deletion completes even if the connection drops; the lock is held until it has."""
    locks = MaildropLocks()
    d = Driver(locks=locks, auto=False)
    d.handle(d.s.data_received(b"USER alice@example.org\r\nPASS secret\r\n"))
    d.fulfil(d.pending.pop())
    d.fulfil(d.pending.pop())
    d.handle(d.s.data_received(b"DELE 1\r\nQUIT\r\n"))
    (req,) = d.pending
    assert isinstance(req, Expunge) and req.uids == (11,)
    d.s.connection_lost()
    assert locks.held(1)
    assert d.s.update_done(True) == []
    assert not locks.held(1)


def test_command_budget_stops_a_burst_and_proceed_goes_on_in_order():
    """With max_commands=64, 65 pipelined NOOPs are answered 64 in the first call (the rest waits, yielded) and
    one in proceed(); exactly 64 do not yield."""
    d = Driver(max_commands=64)
    d.login()
    assert d.send(b"NOOP\r\n" * 64).count(b"+OK") == 64 and not d.s.yielded
    assert d.send(b"NOOP\r\n" * 65).count(b"+OK") == 64 and d.s.yielded
    d.handle(d.s.proceed())
    assert bytes(d.out) == b"+OK\r\n" and not d.s.yielded


def test_output_budget_ends_the_call_after_the_command_that_passed_it():
    """max_output: the call ends after the command whose replies took its output past the bound (a LIST burst of
    a large maildrop is answered a bounded amount per reactor turn)."""
    d = Driver(max_output=100)
    d.login()
    first = d.send(b"LIST\r\n" * 10)
    assert 0 < first.count(b"\r\n.\r\n") < 10 and d.s.yielded
    rest = bytearray(first)
    while d.s.yielded:
        d.handle(d.s.proceed())
        rest += d.out
        d.out.clear()
    assert rest.count(b"\r\n.\r\n") == 10


def test_pipeline_backlog_is_not_checked_while_the_session_yields():
    """What a yield leaves buffered is ours to take (the glue reads nothing more until it is): not an overflow."""
    d = Driver(max_commands=64)
    d.login()
    d.send(b"NOOP\r\n" * (wire.MAX_PIPELINED // 6 + 100))
    assert d.s.yielded and not d.closed
    while d.s.yielded:
        d.handle(d.s.proceed())
    assert not d.closed
