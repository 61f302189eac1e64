"""RFC 4314 2 negative rights and ACL changes on a selected mailbox, over real imaplib sessions.

A selected mailbox of another account has its rights read again for each command that uses them, so a change of
its ACL (by SETACL in another session, on another node or from the CLI) holds from the next command: the session
stays selected and a command that needs a right taken away answers NO [NOPERM]."""

from __future__ import annotations

import imaplib

import pytest

from tests.imap.imap_client import imap_server, login, message, new_user


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    with imap_server(tmp_path_factory.mktemp("imap-aclneg"), listeners=("imap",)) as s:
        yield s


def _acl(c: imaplib.IMAP4, mailbox: str) -> bytes:
    typ, data = c.getacl(mailbox)
    assert typ == "OK", data
    return b"".join(d for d in data if isinstance(d, bytes))


def test_setacl_negative_entry_is_listed_and_taken_away(srv):
    alice, bob, carol = new_user(srv), new_user(srv), new_user(srv)
    srv.deliver(alice, message("negative"))
    owner = login(srv, alice)
    assert owner.create("Team")[0] == "OK"
    assert owner.append("Team", None, None, message("in team"))[0] == "OK"
    assert owner.setacl("Team", "anyone", "lrsw")[0] == "OK"
    typ, data = owner.setacl("Team", f"-{bob}", "w")
    assert typ == "OK", data
    acl = _acl(owner, "Team")
    assert f'"-{bob}" w'.encode() in acl or f"-{bob} w".encode() in acl, acl
    name = f"Other Users/{alice}/Team"
    b = login(srv, bob)
    typ, data = b.myrights(f'"{name}"')
    assert typ == "OK" and data[0].endswith(b" lrs"), data
    c = login(srv, carol)
    assert c.myrights(f'"{name}"')[1][0].endswith(b" lrsw")
    assert b.select(f'"{name}"')[0] == "OK"
    typ, data = b.store("1", "+FLAGS", "(\\Answered)")
    assert typ == "NO" and b"[NOPERM]" in data[0], data
    assert b.store("1", "+FLAGS", "(\\Seen)")[0] == "OK"  # "s" is not taken away
    # Taken away from everyone matching: bob's own positive entry does not bring it back.
    assert owner.setacl("Team", bob, "lrsw")[0] == "OK"
    assert b.store("1", "+FLAGS", "(\\Answered)")[0] == "NO"
    assert owner.deleteacl("Team", f"-{bob}")[0] == "OK"
    assert b.store("1", "+FLAGS", "(\\Answered)")[0] == "OK"
    assert f"-{bob}".encode() not in _acl(owner, "Team")
    # Malformed negative identifiers are refused, as every unknown identifier is.
    assert owner.setacl("Team", f"--{bob}", "w")[0] == "NO"
    for conn in (owner, b, c):
        conn.logout()


def test_acl_change_reaches_a_selected_session(srv):
    alice, bob = new_user(srv), new_user(srv)
    srv.deliver(alice, message("shared one"))
    owner = login(srv, alice)
    assert owner.setacl("INBOX", bob, "lrsw")[0] == "OK"
    b = login(srv, bob)
    name = f'"Other Users/{alice}/INBOX"'
    assert b.select(name)[0] == "OK"
    assert b.store("1", "+FLAGS", "(\\Answered)")[0] == "OK"
    assert b.fetch("1", "(FLAGS)")[0] == "OK"
    # "w" removed while selected: the next STORE of a flag that needs it is refused; FETCH still works.
    assert owner.setacl("INBOX", bob, "-w")[0] == "OK"
    typ, data = b.store("1", "-FLAGS", "(\\Answered)")
    assert typ == "NO" and b"[NOPERM]" in data[0], data
    assert b.fetch("1", "(FLAGS)")[0] == "OK"
    # "r" taken by a negative entry: FETCH and SEARCH are refused (the session stays selected).
    assert owner.setacl("INBOX", f"-{bob}", "r")[0] == "OK"
    typ, data = b.fetch("1", "(FLAGS)")
    assert typ == "NO" and b"[NOPERM]" in data[0], data
    assert b.search(None, "ALL")[0] == "NO"
    # Given back: the next command works again, without a new SELECT.
    assert owner.deleteacl("INBOX", f"-{bob}")[0] == "OK"
    assert owner.setacl("INBOX", bob, "+w")[0] == "OK"
    assert b.fetch("1", "(FLAGS)")[0] == "OK"
    assert b.store("1", "-FLAGS", "(\\Answered)")[0] == "OK"
    # A change made outside any IMAP session (the store, as the CLI or another node does) holds as well.
    acct = srv.store.get_account(alice)
    srv.store.set_acl(srv.store.get_mailbox(acct.id, "INBOX").id, bob, "-r")
    assert b.fetch("1", "(FLAGS)")[0] == "NO"
    for conn in (owner, b):
        conn.logout()
