"""IMAP authorization over real sockets: another account's mailboxes are invisible to every command that takes a
mailbox name or lists mailboxes, and answered byte for byte as a mailbox that does not exist (SELECT, EXAMINE,
STATUS, GETQUOTAROOT: NO [NONEXISTENT]; APPEND, COPY, MOVE, UID COPY, UID MOVE: NO [TRYCREATE]; DELETE, RENAME:
NO [NONEXISTENT]; CREATE, SUBSCRIBE: the caller's own namespace; LIST, LSUB: not listed).

IMAP names a mailbox in the principal's own namespace, so the check is: the same script, run once before and once
after the other account creates, fills and subscribes mailboxes of those names, gets the same bytes; and a name that
spells another account's mailbox id is only a name."""

from __future__ import annotations

import re

import pytest

from tests.imap.imap_client import Raw, imap_server, message, new_user


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    with imap_server(tmp_path_factory.mktemp("imap-authz")) as s:
        yield s


#: Every command taking a mailbox name, with the other account's names (and LIST/LSUB patterns matching them).
#: ENABLE IMAP4rev2 keeps \Recent out of SELECT, so running the script twice tells the same.
SCRIPT = [
    "ENABLE IMAP4rev2",
    "SELECT INBOX",
    "COPY 1 Secret",
    "COPY 1 Secret/Inner",
    "MOVE 1 Secret",
    "UID COPY 1 Secret",
    "UID MOVE 1 Secret",
    "UID MOVE 1 Secret/Inner",
    "STATUS Secret (MESSAGES UIDNEXT UIDVALIDITY UNSEEN SIZE DELETED)",
    "STATUS Secret/Inner (MESSAGES)",
    "GETQUOTAROOT Secret",
    "DELETE Secret/Inner",
    "DELETE Secret",
    "RENAME Secret Mine",
    "RENAME Secret/Inner Mine",
    b"APPEND Secret {5}",  # refused before the literal is sent
    b"APPEND Secret/Inner (\\Seen) {5}",
    'LIST "" "*"',
    'LIST "" "%"',
    'LIST "" "Secret*"',
    'LIST "Secret/" "*"',
    'LIST (SUBSCRIBED) "" "*"',
    'LIST (SUBSCRIBED RECURSIVEMATCH) "" "%"',
    'LIST "" "*" RETURN (STATUS (MESSAGES UIDNEXT) SUBSCRIBED CHILDREN SPECIAL-USE)',
    'LSUB "" "*"',
    "SUBSCRIBE Secret",  # a name of one's own namespace (RFC 9051 6.3.7)
    'LSUB "" "*"',
    'LIST (SUBSCRIBED) "" "*"',
    "UNSUBSCRIBE Secret",
    "SELECT Secret",
    "EXAMINE Secret/Inner",
    "SELECT INBOX",
    "CREATE Secret/Child",  # created in the caller's own namespace
    'LIST "" "Secret*"',
    "DELETE Secret/Child",
    "DELETE Secret",
    'LIST "" "Secret*"',
    "NOOP",
]


def _run(srv, user: str) -> list[tuple[str, list[bytes]]]:
    raw = Raw(srv.port("imap"))
    raw.login(user)
    out = []
    for i, line in enumerate(SCRIPT):
        tag = f"t{i}"
        if isinstance(line, bytes):
            raw.send(tag.encode() + b" " + line + b"\r\n")
            answer = [raw.line()]
            assert not answer[0].startswith(b"+"), line  # the target is missing: no continuation
        else:
            answer = raw.cmd(tag, line)
        out.append((str(line), answer))
    raw.cmd("z", "LOGOUT")
    raw.close()
    return out


def _other_account_fills(srv, other: str) -> None:
    store = srv.store
    acct = store.get_account(other)
    store.create_mailbox(acct.id, "Secret")
    store.create_mailbox(acct.id, "Secret/Inner")
    store.create_mailbox(acct.id, "Mine")
    srv.deliver(other, message("their secret"), mailbox="Secret")
    srv.deliver(other, message("their inner secret"), mailbox="Secret/Inner")
    store.set_subscribed(acct.id, "Secret", True)


def test_another_accounts_mailboxes_answer_as_missing_ones(srv):
    """The same commands get the same bytes before and after another account has mailboxes of those names."""
    alice, bob = new_user(srv), new_user(srv)
    srv.deliver(alice, message("mine"))
    before = _run(srv, alice)
    _other_account_fills(srv, bob)
    after = _run(srv, alice)
    for (line, b), (_line, a) in zip(before, after, strict=True):
        assert a == b, line
    answers: dict[str, bytes] = {}
    for line, lines in after:
        answers.setdefault(line, lines[-1])  # the first time a command is run
    nonexistent = ("STATUS Secret/Inner (MESSAGES)", "GETQUOTAROOT Secret", "DELETE Secret/Inner", "DELETE Secret",
                   "RENAME Secret Mine", "SELECT Secret", "EXAMINE Secret/Inner")
    for line in nonexistent:
        assert b" NO [NONEXISTENT] no mailbox Secret" in answers[line], line
    for line in ("COPY 1 Secret", "MOVE 1 Secret", "UID COPY 1 Secret", "UID MOVE 1 Secret/Inner",
                 "b'APPEND Secret {5}'", "b'APPEND Secret/Inner (\\\\Seen) {5}'"):
        assert b" NO [TRYCREATE] no mailbox Secret" in answers[line], line
    listed = b"".join(b"".join(lines) for line, lines in after if line.startswith(("LIST", "LSUB")))
    assert b'"Secret/Inner"' not in listed and b'"Mine"' not in listed
    assert b"their" not in b"".join(b"".join(lines) for _line, lines in after)
    # The other account's mailboxes are as they were.
    bob_id = srv.store.get_account(bob).id
    counts = {m.name: m.message_count for m in srv.store.list_mailboxes(bob_id)}
    assert counts["Secret"] == counts["Secret/Inner"] == 1 and counts["INBOX"] == 0


def test_a_name_spelling_another_accounts_mailbox_id_is_only_a_name(srv):
    """Mailbox ids are never read from IMAP names: "<id of another's INBOX>" answers as a missing name of the
    same length."""
    alice, bob = new_user(srv), new_user(srv)
    srv.deliver(alice, message("mine"))
    srv.deliver(bob, message("theirs"))
    theirs = srv.store.get_mailbox(srv.store.get_account(bob).id, "INBOX").id
    taken = {m.id for a in srv.store.list_accounts() for m in srv.store.list_mailboxes(a.id)}
    digits = len(str(theirs))
    missing = next(n for n in range(10 ** (digits - 1), 10 ** digits) if n not in taken)

    def answers(ident: int) -> list[bytes]:
        raw = Raw(srv.port("imap"))
        raw.login(alice)
        out = []
        for i, line in enumerate([f'STATUS "{ident}" (MESSAGES)', f'GETQUOTAROOT "{ident}"', f'DELETE "{ident}"',
                                  f'RENAME "{ident}" Other', "ENABLE IMAP4rev2", "SELECT INBOX",
                                  f'COPY 1 "{ident}"', f'UID MOVE 1 "{ident}"', f'EXAMINE "{ident}"']):
            out += raw.cmd(f"t{i}", line)
        raw.send(f't9 APPEND "{ident}" {{5}}\r\n'.encode())
        out.append(raw.line())
        raw.close()
        return [re.sub(rb"\b%d\b" % ident, b"ID", ln) for ln in out]

    assert answers(theirs) == answers(missing)


def test_idle_session_hears_only_its_own_mailbox(srv):
    """An IDLE session on its INBOX hears nothing of another account's deliveries, then its own at once (the hub
    subscription is the selected mailbox's)."""
    alice, bob = new_user(srv), new_user(srv)
    raw = Raw(srv.port("imap"))
    raw.login(alice)
    raw.cmd("e", "ENABLE IMAP4rev2")
    raw.cmd("s", "SELECT INBOX")
    raw.send(b"i IDLE\r\n")
    assert raw.line() == b"+ idling\r\n"
    for n in range(3):
        srv.deliver(bob, message(f"theirs {n}"))
    srv.deliver(alice, message("mine"))
    assert raw.line() == b"* 1 EXISTS\r\n"  # the first thing told is alice's own message
    raw.send(b"DONE\r\n")
    assert raw.until(b"i")[-1].startswith(b"i OK")
    raw.close()


def test_reselecting_moves_the_subscription(srv):
    """After SELECT of another mailbox, changes of the previous one are no longer told; the new one's are."""
    alice = new_user(srv)
    raw = Raw(srv.port("imap"))
    raw.login(alice)
    raw.cmd("e", "ENABLE IMAP4rev2")
    raw.cmd("a", "SELECT INBOX")
    raw.cmd("b", "SELECT Archive")
    srv.deliver(alice, message("to inbox"))
    srv.deliver(alice, message("to archive"), mailbox="Archive")
    out = raw.cmd("c", "NOOP")
    assert out[0] == b"* 1 EXISTS\r\n" and len(out) == 2
    raw.cmd("d", "UNSELECT")
    srv.deliver(alice, message("to archive again"), mailbox="Archive")
    assert raw.cmd("f", "NOOP") == [b"f OK NOOP completed\r\n"]
    raw.close()
