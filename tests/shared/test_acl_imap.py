"""RFC 4314 ACL and RFC 2342 namespaces over real sockets: per command x right, with the right the command works,
without it NO [NOPERM]; without "l" the mailbox answers byte for byte as a missing one; the ACL commands; LIST,
STATUS and SUBSCRIBE across namespaces; per-reader \\Seen on shared mailboxes."""

from __future__ import annotations

import itertools

import pytest

from tests.imap.imap_client import Raw, message, new_user
from tests.shared.nodes import NODES, nodes

_names = itertools.count(1)


@pytest.fixture(scope="module", params=NODES)
def cluster(request, tmp_path_factory):
    """One server, or two nodes on one PostgreSQL database with the sessions handed out to them in turn."""
    with nodes(request.param, tmp_path_factory.mktemp("imap-acl"), ("imap", "imaps")) as s:
        yield s


@pytest.fixture
def srv(cluster):
    cluster.reset()
    return cluster


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


ALL = "lrswipkxtea"


def _append(raw: Raw, tag: str, mailbox: str, body: bytes = b"Subject: appended\r\n\r\nhi\r\n") -> bytes:
    """APPEND with a synchronizing literal: the tagged answer (a refusal comes before the literal is sent)."""
    raw.send(f'{tag} APPEND "{mailbox}" {{{len(body)}}}\r\n'.encode())
    first = raw.line()
    if not first.startswith(b"+"):
        return first
    raw.send(body + b"\r\n")
    return raw.until(tag.encode())[-1]


#: (setup run first, the command, base rights it needs to get there, the right under test). ``{mb}`` is the
#: shared mailbox (holding one message), ``{child}`` a child mailbox of it with the same ACL.
CASES = [
    ([], "SELECT {mb}", "", "r"),
    ([], "EXAMINE {mb}", "", "r"),
    ([], "STATUS {mb} (MESSAGES UNSEEN)", "", "r"),
    ([], "GETQUOTAROOT {mb}", "", "r"),
    (["SELECT {mb}"], "STORE 1 +FLAGS (\\Seen)", "r", "s"),
    (["SELECT {mb}"], "STORE 1 +FLAGS (\\Answered)", "r", "w"),
    (["SELECT {mb}"], "STORE 1 +FLAGS ($Label)", "r", "w"),
    (["SELECT {mb}"], "STORE 1 +FLAGS (\\Deleted)", "r", "t"),
    (["SELECT {mb}"], "EXPUNGE", "r", "e"),
    (["SELECT {mb}"], "MOVE 1 INBOX", "rt", "e"),
    (["SELECT {mb}"], "MOVE 1 INBOX", "re", "t"),
    (["SELECT INBOX"], "COPY 1 {mb}", "", "i"),
    (["SELECT INBOX"], "MOVE 1 {mb}", "", "i"),
    ([], "APPEND", "", "i"),
    ([], "CREATE {new}", "", "k"),
    ([], "DELETE {child}", "", "x"),
    ([], "RENAME {child} {renamed}", "k", "x"),
    ([], "RENAME {child} {renamed}", "x", "k"),
    ([], "SETACL {mb} anyone lr", "", "a"),
    ([], "DELETEACL {mb} anyone", "", "a"),
    ([], "GETACL {mb}", "", "a"),
    ([], "LISTRIGHTS {mb} anyone", "", "a"),
]


def _case_mailbox(srv, user: str, rights: str) -> tuple[str, str]:
    name, _address = _shared(srv)
    acct = srv.store.get_account(f"{name}@example.test")
    srv.deliver(f"{name}@example.test", message("shared one"))
    srv.store.create_mailbox(acct.id, "child")
    for box in ("INBOX", "child"):
        _grant(srv, f"{name}@example.test", box, user, rights)
    return f"Shared/{name}", f"Shared/{name}/child"


def _run_case(srv, user: str, setup, command: str, rights: str) -> bytes:
    mb, child = _case_mailbox(srv, user, rights)
    srv.deliver(user, message("own one"))
    raw = _session(srv, user)
    names = {"mb": f'"{mb}"', "child": f'"{child}"', "new": f'"{mb}/new"', "renamed": f'"{mb}/renamed"'}
    try:
        for i, line in enumerate(setup):
            assert b" OK " in _last(raw.cmd(f"s{i}", line.format(**names)))
        if command == "APPEND":
            return _append(raw, "t", mb)
        return _last(raw.cmd("t", command.format(**names)))
    finally:
        raw.close()


@pytest.mark.parametrize("setup,command,base,right", CASES,
                         ids=[f"{c[1].split()[0]}-{c[3]}-{i}" for i, c in enumerate(CASES)])
def test_command_needs_its_right(srv, setup, command, base, right):
    """With the right (and "l" plus what it takes to get there) the command works; without it, NO [NOPERM]."""
    user = new_user(srv)
    with_right = "l" + base + right
    answer = _run_case(srv, user, setup, command, with_right)
    assert answer.startswith(b"t OK"), (command, with_right, answer)
    without = "l" + base
    answer = _run_case(srv, user, setup, command, without)
    assert answer.startswith(b"t NO [NOPERM]"), (command, without, answer)


def test_fetch_without_s_does_not_set_seen(srv):
    user = new_user(srv)
    mb, _child = _case_mailbox(srv, user, "lr")
    raw = _session(srv, user)
    raw.cmd("a", f'SELECT "{mb}"')
    raw.cmd("b", "FETCH 1 BODY[]")
    assert b"\\Seen" not in b"".join(raw.cmd("c", "FETCH 1 FLAGS"))
    raw.close()


#: Every command naming a mailbox; run against a mailbox the user may not "l" and against a missing name.
INVISIBLE_SCRIPT = [
    "ENABLE IMAP4rev2", "SELECT {mb}", "EXAMINE {mb}", "STATUS {mb} (MESSAGES UNSEEN)", "GETQUOTAROOT {mb}",
    "CREATE {mbx}",
    "DELETE {mb}", "RENAME {mb} Elsewhere", "GETACL {mb}", "SETACL {mb} anyone lr", "DELETEACL {mb} anyone",
    "LISTRIGHTS {mb} anyone", "MYRIGHTS {mb}", "SELECT INBOX", "COPY 1 {mb}", "MOVE 1 {mb}", "APPEND",
    'LIST "" "Shared/*"', 'LIST "" "*"', 'LIST "Shared/" "%"', "LSUB \"\" \"*\"",
]


@pytest.mark.parametrize("rights", ["", "rswipkxtea"])
def test_without_lookup_the_mailbox_answers_as_a_missing_one(srv, rights):
    """A mailbox without "l" (even with every other right) gets the bytes a missing name of the same length
    gets, from every command."""
    user = new_user(srv)
    srv.deliver(user, message("own one"))
    real, _child = _case_mailbox(srv, user, rights)
    ghost = "Shared/" + "q" * (len(real) - len("Shared/"))

    def script(name: str) -> list[bytes]:
        raw = _session(srv, user)
        out = []
        for i, line in enumerate(INVISIBLE_SCRIPT):
            if line == "APPEND":
                out.append(_append(raw, f"t{i}", name))
            else:
                out.append(b"".join(raw.cmd(f"t{i}", line.format(mb=f'"{name}"', mbx=f'"{name}/x"'))))
        raw.close()
        return [o.replace(name.encode(), b"NAME") for o in out]

    assert script(real) == script(ghost)
    assert srv.store.get_mailbox(srv.store.get_account(real[7:] + "@example.test").id, "INBOX").message_count == 1


def test_acl_commands_on_ones_own_mailbox(srv):
    """An owner shares a folder with SETACL; GETACL, LISTRIGHTS, MYRIGHTS, DELETEACL answer as RFC 4314 3 says."""
    alice, bob = new_user(srv), new_user(srv)
    raw = _session(srv, alice)
    assert raw.cmd("c", "CREATE Projects")[-1].startswith(b"c OK")
    assert raw.cmd("a", f"SETACL Projects {bob} lrcd")[-1].startswith(b"a OK")  # c -> k, d -> x t e
    assert raw.cmd("b", "GETACL Projects")[0] == f'* ACL "Projects" {alice} lrswipkxtea {bob} lrkxte\r\n'.encode()
    assert raw.cmd("d", f"SETACL Projects {bob} +w")[-1].startswith(b"d OK")
    assert raw.cmd("e", "GETACL Projects")[0].endswith(f"{bob} lrwkxte\r\n".encode())
    assert raw.cmd("f", f"LISTRIGHTS Projects {bob}")[0] == \
        f'* LISTRIGHTS "Projects" {bob} "" l r s w i p k x t e a\r\n'.encode()
    assert raw.cmd("g", f"LISTRIGHTS Projects {alice}")[0] == f'* LISTRIGHTS "Projects" {alice} lrswipkxtea\r\n'.encode()
    assert raw.cmd("h", "MYRIGHTS Projects")[0] == b'* MYRIGHTS "Projects" lrswipkxtea\r\n'
    assert raw.cmd("i", "SETACL Projects anyone lrz")[-1].startswith(b"i BAD")  # RFC 4314 3.1: unknown right
    assert raw.cmd("j", f"SETACL Projects {alice} lr")[-1].startswith(b"j NO [CANNOT]")  # the owner keeps all
    # An address without an account is kept like any other: SETACL does not tell which addresses exist.
    assert raw.cmd("k", "SETACL Projects nobody-here@example.test lr")[-1].startswith(b"k OK")
    assert raw.cmd("l", "SETACL Projects $no-such-group lr")[-1].startswith(b"l NO [CANNOT]")
    other = _session(srv, bob)
    name = f"Other Users/{alice}/Projects"
    assert f'* MYRIGHTS "{name}" lrwkxte\r\n'.encode() in other.cmd("a", f'MYRIGHTS "{name}"')
    assert other.cmd("b", f'CREATE "{name}/Sub"')[-1].startswith(b"b OK")  # k
    assert other.cmd("b2", f'CREATE "{name}/Sub2"')[-1].startswith(b"b2 OK")
    # The new mailboxes take Projects' ACL (as Dovecot): bob may see and delete what he made.
    assert other.cmd("c", f'DELETE "{name}/Sub2"')[-1].startswith(b"c OK")
    assert raw.cmd("m", f"DELETEACL Projects {bob}")[-1].startswith(b"m OK")
    assert other.cmd("d", f'MYRIGHTS "{name}"')[-1] == f'd NO [NONEXISTENT] no mailbox {name}\r\n'.encode()
    # Projects is gone for bob; Sub (made by him, with the ACL it took) is still his to see, under a \Noselect level.
    listed = other.cmd("e", 'LIST "" "*"')
    assert any(ln.endswith(f'"{name}/Sub"\r\n'.encode()) for ln in listed)
    assert [ln for ln in listed if ln.endswith(f'"{name}"\r\n'.encode())] == \
        [f'* LIST (\\Noselect \\HasChildren) "/" "{name}"\r\n'.encode()]
    alice_id = srv.store.get_account(alice).id
    assert srv.store.get_mailbox(alice_id, "Projects/Sub") is not None  # alice's, in her tree
    assert srv.store.get_mailbox(alice_id, "Projects/Sub2") is None
    raw.close()
    other.close()
