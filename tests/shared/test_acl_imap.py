"""RFC 4314 ACL and RFC 2342 namespaces over real sockets: per command x right, with the right the command works,
without it NO [NOPERM]; without "l" the mailbox answers byte for byte as a missing one; the ACL commands; LIST,
STATUS and SUBSCRIBE across namespaces; per-reader \\Seen on shared mailboxes."""

from __future__ import annotations

import itertools

import pytest

from tests.imap.imap_client import Raw, imap_server, message, new_user

_names = itertools.count(1)


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    with imap_server(tmp_path_factory.mktemp("imap-acl")) as s:
        yield s


def _shared(srv) -> tuple[str, str]:
    """A fresh shared mailbox: (its Shared/ name, its address)."""
    name = f"team{next(_names)}"
    address = f"{name}@example.test"
    srv.store.create_shared_mailbox(address, name)
    return name, address


def _grant(srv, owner_address: str, mailbox: str, identifier: str, rights: str) -> int:
    acct = srv.store.get_account(owner_address)
    box = srv.store.get_mailbox(acct.id, mailbox)
    srv.store.set_acl(box.id, identifier, rights)
    return box.id


def _session(srv, user: str) -> Raw:
    raw = Raw(srv.port("imap"))
    raw.login(user)
    return raw


def _last(lines: list[bytes]) -> bytes:
    return lines[-1]


def test_capabilities_and_namespace(srv):
    alice = new_user(srv)
    raw = _session(srv, alice)
    caps = b"".join(raw.cmd("a", "CAPABILITY"))
    assert b" ACL" in caps and b"RIGHTS=texk" in caps
    assert raw.cmd("b", "NAMESPACE")[0] == b'* NAMESPACE (("" "/")) (("Other Users/" "/")) (("Shared/" "/"))\r\n'
    raw.close()


def test_shared_inbox_of_another_user_is_listed_and_selectable(srv):
    alice, bob = new_user(srv), new_user(srv)
    srv.deliver(alice, message("for alice"))
    _grant(srv, alice, "INBOX", bob, "lr")
    raw = _session(srv, bob)
    name = f"Other Users/{alice}/INBOX"
    listed = b"".join(raw.cmd("a", 'LIST "" "*"'))
    assert f'"{name}"'.encode() in listed
    out = raw.cmd("b", f'SELECT "{name}"')
    assert b"* 1 EXISTS\r\n" in out and b"READ-ONLY" not in _last(out) and b" OK " in _last(out)
    assert b"for alice" in b"".join(raw.cmd("c", "FETCH 1 BODY.PEEK[HEADER.FIELDS (SUBJECT)]"))
    # No "s", "w", "t", "e", "i": each refused with NOPERM.
    assert b"NO [NOPERM]" in _last(raw.cmd("d", "STORE 1 +FLAGS (\\Seen)"))
    assert b"NO [NOPERM]" in _last(raw.cmd("e", "STORE 1 +FLAGS (\\Answered)"))
    assert b"NO [NOPERM]" in _last(raw.cmd("f", "STORE 1 +FLAGS (\\Deleted)"))
    assert b"NO [NOPERM]" in _last(raw.cmd("g", "EXPUNGE"))
    assert b"NO [NOPERM]" in _last(raw.cmd("h", f'COPY 1 "{name}"'))
    assert b"MYRIGHTS" in b"".join(raw.cmd("i", f'MYRIGHTS "{name}"'))
    assert f'* MYRIGHTS "{name}" lr\r\n'.encode() in raw.cmd("j", f'MYRIGHTS "{name}"')
    assert b"NO [NOPERM]" in _last(raw.cmd("k", f'GETACL "{name}"'))
    raw.close()
