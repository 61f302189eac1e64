"""The access check is the only way from a protocol to a mailbox: walk the code of IMAP, POP3 and the webmail with
``ast`` and find no mailbox lookup of the store outside mailserver/access.py, no store call handed the session's own
account id as the authorization, and no per-account change subscription where one mailbox is watched; the IMAP
command table names a right for every command that names a mailbox."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

from mailserver.access import Rights
from mailserver.imap import commands as c
from mailserver.imap.session import COMMANDS

ROOT = Path(__file__).resolve().parent.parent
#: Code acting for a signed-in principal.
PROTOCOL_CODE = ("mailserver/imap", "mailserver/pop3", "webmail")
#: Store reads that find a mailbox: only the access module may call them.
MAILBOX_LOOKUPS = {"get_mailbox", "get_mailbox_by_id", "list_mailboxes"}
#: Store calls whose first argument is the account that owns the mailbox (never the caller's own, unchecked).
OWNER_ARGUMENT = {"create_mailbox", "delete_mailbox", "rename_mailbox", "append", "append_many"}


def _sources():
    for top in PROTOCOL_CODE:
        for path in sorted((ROOT / top).rglob("*.py")):
            yield path.relative_to(ROOT).as_posix(), ast.parse(path.read_text(), str(path))


def _calls(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            yield node, node.func.attr


def test_no_mailbox_lookup_outside_the_access_module():
    """IMAP, POP3 and the webmail never look a mailbox up in the store themselves: they open it through the check."""
    found = [f"{path}:{node.lineno} {name}" for path, tree in _sources() for node, name in _calls(tree)
             if name in MAILBOX_LOOKUPS]
    assert found == []
    # ... and the access module does, so the test above is looking at the right names.
    access = ast.parse((ROOT / "mailserver/access.py").read_text())
    assert MAILBOX_LOOKUPS <= {name for _node, name in _calls(access)}


def test_no_store_call_is_authorized_by_the_callers_own_account():
    """Mailbox writes get the owner of the mailbox the check returned, never ``s.account_id``/``ctx.account_id``."""
    found = []
    for path, tree in _sources():
        for node, name in _calls(tree):
            if name in OWNER_ARGUMENT and node.args:
                first = node.args[0]
                if isinstance(first, ast.Attribute) and first.attr == "account_id" and \
                        isinstance(first.value, ast.Name) and first.value.id in ("s", "self", "ctx"):
                    found.append(f"{path}:{node.lineno} {name}")
    assert found == []


def test_imap_watches_mailboxes_not_accounts():
    """An IMAP session subscribes to the mailbox it selected (so any reader of a mailbox sees its EXISTS and
    EXPUNGE), never to its own account's changes."""
    per_account, per_mailbox = [], []
    for path, tree in _sources():
        if not path.startswith("mailserver/imap/"):
            continue
        for node, name in _calls(tree):
            if name == "subscribe":
                per_account.append(f"{path}:{node.lineno}")
            elif name == "subscribe_mailbox":
                per_mailbox.append(f"{path}:{node.lineno}")
    assert per_account == []
    assert per_mailbox


def test_every_imap_command_naming_a_mailbox_has_a_right_in_the_table():
    """The command table names the RFC 4314 rights of every command with a mailbox argument, on the mailbox or (for
    CREATE) on its parent; SUBSCRIBE and UNSUBSCRIBE need none: RFC 9051 6.3.7 subscribes names, not mailboxes."""
    no_right = {c.Subscribe, c.Unsubscribe}
    for cls, spec in COMMANDS.items():
        fields = {f.name for f in dataclasses.fields(cls)}
        if "mailbox" in fields and cls not in no_right:
            assert spec.mailbox != Rights.NONE or spec.parent != Rights.NONE, cls.__name__
    expected = {
        c.Select: Rights.READ, c.Status: Rights.READ, c.GetQuotaRoot: Rights.READ, c.List: Rights.LOOKUP,
        c.Lsub: Rights.LOOKUP, c.Append: Rights.INSERT, c.Copy: Rights.INSERT, c.Move: Rights.INSERT,
        c.Delete: Rights.DELETE_MAILBOX, c.Rename: Rights.DELETE_MAILBOX,
        c.SetAcl: Rights.ADMIN, c.DeleteAcl: Rights.ADMIN, c.GetAcl: Rights.ADMIN, c.ListRights: Rights.ADMIN,
        c.MyRights: Rights.LOOKUP,
    }
    assert {cls: COMMANDS[cls].mailbox for cls in expected} == expected
    assert COMMANDS[c.Create].parent == COMMANDS[c.Rename].parent == Rights.CREATE
    assert COMMANDS[c.Append].missing == COMMANDS[c.Copy].missing == COMMANDS[c.Move].missing == "TRYCREATE"
    assert Rights.parse("te") in COMMANDS[c.Move].selected  # RFC 6851 3.3: the source loses the messages
    assert COMMANDS[c.Expunge].selected == Rights.EXPUNGE
    for cls in (c.Fetch, c.Search, c.Sort, c.Thread, c.Copy):
        assert COMMANDS[cls].selected == Rights.READ, cls.__name__


def test_store_needs_the_rights_of_the_flags_it_changes():
    """RFC 4314 4: +FLAGS/-FLAGS need "s" for \\Seen, "t" for \\Deleted, "w" for the others; FLAGS (replace) may
    clear any of them and needs all three."""
    from mailserver.imap.seqset import SeqSet

    def need(mode, *flags):
        cmd = c.Store(tag="t", seq_set=SeqSet.parse("1"), mode=mode, flags=flags)
        return COMMANDS[c.Store].selected(cmd)

    add, remove, replace = c.StoreMode.ADD, c.StoreMode.REMOVE, c.StoreMode.REPLACE
    assert need(add, "\\Seen") == Rights.SEEN
    assert need(remove, "\\Deleted") == Rights.DELETE_MESSAGES
    assert need(add, "\\Flagged", "$Label") == Rights.WRITE
    assert need(add, "\\Seen", "\\Answered") == Rights.SEEN | Rights.WRITE
    assert need(add) == Rights.NONE
    assert need(replace) == Rights.parse("swt")
