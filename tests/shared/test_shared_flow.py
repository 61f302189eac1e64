"""The department inbox: members of a group share ``Shared/sales``; an SMTP delivery reaches every IDLEing member,
flags one member sets reach the others, \\Seen stays each reader's own; STATUS, LIST-EXTENDED and SUBSCRIBE across
namespaces; POP3 sees only the personal INBOX; a shared mailbox cannot log in."""

from __future__ import annotations

import imaplib
import itertools
import poplib
import smtplib

import pytest

from tests.imap.imap_client import PASSWORD, Raw, message, new_user
from tests.shared.nodes import NODES, nodes

_n = itertools.count(1)


@pytest.fixture(scope="module", params=NODES)
def cluster(request, tmp_path_factory):
    """One server, or two nodes on one PostgreSQL database: members' sessions and SMTP deliveries alternate
    between the nodes (see tests/shared/nodes.py)."""
    with nodes(request.param, tmp_path_factory.mktemp("shared-flow"), ("imap", "smtp", "pop3")) as s:
        yield s


@pytest.fixture
def srv(cluster):
    cluster.reset()
    return cluster


def department(srv, members: int = 2):
    """A group of fresh members and a shared mailbox the group may use (everything but "a" and "x")."""
    group = f"dept{next(_n)}"
    name = f"sales{next(_n)}"
    users = [new_user(srv) for _ in range(members)]
    srv.store.add_group(group)
    for u in users:
        srv.store.set_group_member(group, u)
    acct = srv.store.create_shared_mailbox(f"{name}@example.test", name)
    box = srv.store.get_mailbox(acct.id, "INBOX")
    srv.store.set_acl(box.id, "$" + group, "lrswipkte")
    return f"Shared/{name}", f"{name}@example.test", users


def session(srv, user: str, select: str | None = None) -> Raw:
    raw = Raw(srv.port("imap"))
    raw.login(user)
    if select:
        assert b" OK " in raw.cmd("S", f'SELECT "{select}"')[-1]
    return raw


def wait_for(raw: Raw, needle: bytes) -> bytes:
    """Read unsolicited lines until one contains ``needle`` (the socket timeout bounds the wait)."""
    while True:
        line = raw.line()
        if needle in line:
            return line


def idle(raw: Raw) -> None:
    raw.send(b"I IDLE\r\n")
    assert raw.line() == b"+ idling\r\n"


def done(raw: Raw) -> list[bytes]:
    raw.send(b"DONE\r\n")
    return raw.until(b"I")


def smtp_deliver(srv, rcpt: str, subject: str) -> None:
    with smtplib.SMTP("127.0.0.1", srv.port("smtp"), timeout=30) as c:
        c.sendmail("customer@remote.test", [rcpt], message(subject, to=rcpt, sender="customer@remote.test"))


def test_two_idle_members_get_the_delivery_answered_reaches_the_other_seen_does_not(srv):
    mailbox, address, (m1, m2) = department(srv)
    a, b = session(srv, m1, mailbox), session(srv, m2, mailbox)
    idle(a)
    idle(b)
    smtp_deliver(srv, address, "please call me")
    assert wait_for(a, b"EXISTS") == b"* 1 EXISTS\r\n"
    assert wait_for(b, b"EXISTS") == b"* 1 EXISTS\r\n"
    done(a)
    # Member 1 answers: member 2, still in IDLE, is told at once.
    assert b" OK " in a.cmd("s", "STORE 1 +FLAGS (\\Answered)")[-1]
    line = wait_for(b, b"FETCH")
    assert b"\\Answered" in line and b"\\Seen" not in line
    # Member 1 reads it: member 2's copy stays unseen.
    assert b"\\Seen" in b"".join(a.cmd("f", "FETCH 1 BODY[TEXT]"))
    assert b"\\Seen" in b"".join(a.cmd("g", "FETCH 1 FLAGS"))
    done(b)
    flags = b"".join(b.cmd("f", "FETCH 1 FLAGS"))
    assert b"\\Answered" in flags and b"\\Seen" not in flags
    assert b"UNSEEN 1" in b"".join(b.cmd("u", "SEARCH UNSEEN")).replace(b"SEARCH 1", b"UNSEEN 1")
    # STATUS gives each reader their own unseen count (from another mailbox selected).
    for raw, unseen in ((a, 0), (b, 1)):
        raw.cmd("i", "SELECT INBOX")
        assert f'* STATUS "{mailbox}" (MESSAGES 1 UNSEEN {unseen})\r\n'.encode() in \
            raw.cmd("t", f'STATUS "{mailbox}" (MESSAGES UNSEEN)')
    # A new session of member 2 (a fresh SELECT) still has its own \Seen state; member 1's too.
    c = session(srv, m2, mailbox)
    assert b"\\Seen" not in b"".join(c.cmd("f", "FETCH 1 FLAGS"))
    assert b"* OK [UNSEEN 1]" in b"".join(c.cmd("x", f'EXAMINE "{mailbox}"'))
    d = session(srv, m1, mailbox)
    assert b"\\Seen" in b"".join(d.cmd("f", "FETCH 1 FLAGS"))
    for raw in (a, b, c, d):
        raw.close()


def test_list_extended_status_and_subscribe_across_namespaces(srv):
    mailbox, address, (m1, m2) = department(srv)
    owner = new_user(srv)
    srv.deliver(owner, message("private but shared"))
    acct = srv.store.get_account(owner)
    srv.store.set_acl(srv.store.get_mailbox(acct.id, "INBOX").id, m1, "lrs")
    other = f"Other Users/{owner}/INBOX"
    smtp_deliver(srv, address, "to the team")
    raw = session(srv, m1)
    listed = b"".join(raw.cmd("a", 'LIST "" "*" RETURN (STATUS (MESSAGES UNSEEN))'))
    assert f'"{mailbox}"'.encode() in listed and f'"{other}"'.encode() in listed
    assert f'* STATUS "{mailbox}" (MESSAGES 1 UNSEEN 1)'.encode() in listed
    assert f'* STATUS "{other}" (MESSAGES 1 UNSEEN 1)'.encode() in listed
    assert b'(\\Noselect \\HasChildren) "/" "Shared"' in listed
    assert b" OK " in raw.cmd("s1", f'SUBSCRIBE "{mailbox}"')[-1]
    assert b" OK " in raw.cmd("s2", f'SUBSCRIBE "{other}"')[-1]
    subscribed = raw.cmd("b", 'LIST (SUBSCRIBED) "" "*"')
    for name in (mailbox, other):
        line = next(ln for ln in subscribed if ln.endswith(f' "/" "{name}"\r\n'.encode()))
        assert b"\\Subscribed" in line, line
    assert f'"{mailbox}"'.encode() in b"".join(raw.cmd("c", 'LSUB "" "Shared/*"'))
    # The member of the group sees the shared mailbox; someone else does not.
    stranger = session(srv, new_user(srv))
    listed = b"".join(stranger.cmd("a", 'LIST "" "*"'))
    assert b"Shared" not in listed and b"Other Users" not in listed
    for r in (raw, stranger):
        r.close()


def test_copy_out_of_a_shared_mailbox_and_quota_is_the_owners(srv):
    mailbox, address, (m1,) = department(srv, 1)
    smtp_deliver(srv, address, "copy me")
    raw = session(srv, m1, mailbox)
    assert b"COPYUID" in raw.cmd("c", "COPY 1 INBOX")[-1]
    sales = srv.store.get_account(address)
    srv.store.set_quota(address, 1)
    quota = b"".join(raw.cmd("q", f'GETQUOTAROOT "{mailbox}"'))
    assert b"QUOTAROOT" in quota and b"STORAGE" in quota  # the shared mailbox's own quota, not the member's
    srv.store.set_quota(address, 0)
    me = srv.store.get_account(m1)
    assert srv.store.get_mailbox(me.id, "INBOX").message_count == 1
    assert srv.store.get_mailbox(sales.id, "INBOX").message_count == 1
    raw.close()


def test_pop3_sees_only_the_personal_inbox(srv):
    mailbox, address, (m1,) = department(srv, 1)
    smtp_deliver(srv, address, "shared one")
    srv.deliver(m1, message("mine"))
    p = poplib.POP3("127.0.0.1", srv.port("pop3"), timeout=10)
    p.user(m1)
    p.pass_(PASSWORD)
    assert p.stat()[0] == 1
    assert b"Subject: mine" in b"\r\n".join(p.retr(1)[1])
    p.quit()


def test_a_shared_mailbox_cannot_log_in(srv):
    _mailbox, address, _members = department(srv, 1)
    c = imaplib.IMAP4("127.0.0.1", srv.port("imap"), timeout=10)
    for password in ("", "x", PASSWORD):
        with pytest.raises(imaplib.IMAP4.error):
            c.login(address, password)
    c.logout()


def test_recent_is_per_reader(srv):
    """RFC 3501 \\Recent: one session of each reader gets a new message as \\Recent, not one session of all."""
    mailbox, address, (m1, m2) = department(srv)
    smtp_deliver(srv, address, "recent one")
    a = session(srv, m1)
    assert b"* 1 RECENT\r\n" in a.cmd("s", f'SELECT "{mailbox}"')
    a2 = session(srv, m1)
    assert b"* 0 RECENT\r\n" in a2.cmd("s", f'SELECT "{mailbox}"')  # m1's other session: already taken
    b = session(srv, m2)
    assert f'* STATUS "{mailbox}" (RECENT 1)\r\n'.encode() in b.cmd("t", f'STATUS "{mailbox}" (RECENT)')
    assert b"* 1 RECENT\r\n" in b.cmd("e", f'EXAMINE "{mailbox}"')
    assert b"* 1 RECENT\r\n" in b.cmd("s", f'SELECT "{mailbox}"')  # m2 takes its own
    idle(b)
    smtp_deliver(srv, address, "recent two")
    assert wait_for(b, b"EXISTS") == b"* 2 EXISTS\r\n"
    assert b.line() == b"* 2 RECENT\r\n"
    done(b)
    out = a.cmd("n", "NOOP")
    assert b"* 2 EXISTS\r\n" in out and b"* 2 RECENT\r\n" in out  # m1's first session takes the new one too
    assert b"* 0 RECENT\r\n" in a2.cmd("e", f'EXAMINE "{mailbox}"')
    for raw in (a, a2, b):
        raw.close()
