"""``mailserver shared create|list|remove``, ``mailserver acl set|get|remove`` and ``mailserver group
add|list|remove|members``: shared mailboxes, RFC 4314 ACLs and the groups ACLs name as ``$group``.

A MAILBOX is named as an administrator sees every account: ``Shared/<name>[/<child>]`` for a shared mailbox, or
``<address>/<mailbox>`` (``alice@example.test/INBOX``; ``Other Users/`` in front is accepted) for a person's.
These work on the database directly, so they also work while the server runs.
"""

from __future__ import annotations

import argparse

from mailserver.cli.main import CliError
from storage.errors import StoreError


def _store(args):
    from mailserver.cli.admin import open_store

    return open_store(args)


def _mailbox(store, text: str):
    from storage.shared import OTHER_USERS, SHARED

    name = text if text.startswith((SHARED, OTHER_USERS)) else OTHER_USERS + text
    target = store.resolve_owner(0, name)
    box = store.get_mailbox(target[0], target[1]) if target is not None else None
    if box is None:
        raise CliError(f"no mailbox {text}")
    return box


def _run(func):
    def wrapped(args) -> int:
        try:
            return func(args)
        except StoreError as e:
            raise CliError(str(e)) from None

    return wrapped


@_run
def shared_create(args) -> int:
    store = _store(args)
    acct = store.create_shared_mailbox(args.address, args.name or "", args.quota or 0)
    box = store.get_mailbox(acct.id, "INBOX")
    for ident in args.members or ():
        store.set_acl(box.id, ident, args.rights)
    print(f"shared mailbox Shared/{acct.display_name} receives mail for {acct.address}")
    return 0


@_run
def shared_list(args) -> int:
    store = _store(args)
    rows = store.list_shared_mailboxes()
    if not rows:
        print("no shared mailboxes")
    for name, address in rows:
        box = _mailbox(store, "Shared/" + name)
        acl = " ".join(f"{i}={r}" for i, r in store.get_acl(box.id))
        print(f"Shared/{name}\t{address}\t{box.message_count} messages\t{acl}")
    return 0


@_run
def shared_remove(args) -> int:
    _store(args).remove_shared_mailbox(args.name)
    print(f"removed shared mailbox {args.name}")
    return 0


def _entry(args, count: int) -> list[str]:
    """IDENTIFIER [RIGHTS], taken as written: "-bob@x" (a negative entry) and "-w" are not options."""
    if len(args.entry) != count:
        raise CliError("expected " + ("IDENTIFIER RIGHTS" if count == 2 else "IDENTIFIER"))
    return args.entry


@_run
def acl_set(args) -> int:
    args.identifier, args.rights = _entry(args, 2)
    store = _store(args)
    box = _mailbox(store, args.mailbox)
    now = store.set_acl(box.id, args.identifier, args.rights)
    print(f"{args.mailbox}: {args.identifier} {now or '(none)'}")
    return 0


@_run
def acl_get(args) -> int:
    store = _store(args)
    box = _mailbox(store, args.mailbox)
    for ident, rights in store.get_acl(box.id):
        print(f"{ident}\t{rights}")
    return 0


@_run
def acl_remove(args) -> int:
    (args.identifier,) = _entry(args, 1)
    store = _store(args)
    box = _mailbox(store, args.mailbox)
    if not store.delete_acl(box.id, args.identifier):
        raise CliError(f"{args.mailbox} has no entry for {args.identifier}")
    print(f"{args.mailbox}: {args.identifier} removed")
    return 0


@_run
def group_add(args) -> int:
    store = _store(args)
    store.add_group(args.name)
    for address in args.members or ():
        store.set_group_member(args.name, address, True)
    print(f"group ${args.name.lstrip('$')} added")
    return 0


@_run
def group_list(args) -> int:
    groups = _store(args).list_groups()
    if not groups:
        print("no groups")
    for name, members in groups:
        print(f"${name}\t{' '.join(members)}")
    return 0


@_run
def group_remove(args) -> int:
    _store(args).remove_group(args.name)
    print(f"group {args.name} removed (and its ACL entries)")
    return 0


@_run
def group_members(args) -> int:
    store = _store(args)
    for address in args.add or ():
        store.set_group_member(args.name, address, True)
    for address in args.remove or ():
        store.set_group_member(args.name, address, False)
    for name, members in store.list_groups():
        if name == args.name.lstrip("$"):
            for m in members:
                print(m)
    return 0


def register(sub) -> None:
    s = sub.add_parser("shared", help="shared mailboxes (Shared/<name>)").add_subparsers(dest="action",
                                                                                         metavar="ACTION")
    s.required = True
    p = s.add_parser("create", help="a shared mailbox receiving mail for ADDRESS")
    p.add_argument("address")
    p.add_argument("--name", help="its name under Shared/ (default: the local part)")
    p.add_argument("--quota", type=int, help="quota in bytes (default: none)")
    p.add_argument("--member", dest="members", action="append", help="grant this account or $group --rights")
    p.add_argument("--rights", default="lrswipkte", help="rights for --member (default: lrswipkte)")
    p.set_defaults(func=shared_create)
    p = s.add_parser("list", help="list shared mailboxes with their ACL")
    p.set_defaults(func=shared_list)
    p = s.add_parser("remove", help="remove a shared mailbox (by name or address) and its messages")
    p.add_argument("name")
    p.set_defaults(func=shared_remove)

    a = sub.add_parser("acl", help="RFC 4314 access control lists").add_subparsers(dest="action", metavar="ACTION")
    a.required = True
    p = a.add_parser("set", help="give IDENTIFIER (address, anyone, $group; -IDENTIFIER takes rights away) RIGHTS on"
                     " MAILBOX (+/- to add/remove)")
    p.add_argument("mailbox")
    p.add_argument("entry", nargs=argparse.REMAINDER, metavar="IDENTIFIER RIGHTS")
    p.set_defaults(func=acl_set)
    p = a.add_parser("get", help="show MAILBOX's ACL")
    p.add_argument("mailbox")
    p.set_defaults(func=acl_get)
    p = a.add_parser("remove", help="remove IDENTIFIER's entry from MAILBOX's ACL")
    p.add_argument("mailbox")
    p.add_argument("entry", nargs=argparse.REMAINDER, metavar="IDENTIFIER")
    p.set_defaults(func=acl_remove)

    g = sub.add_parser("group", help="groups of accounts ($name in ACLs)").add_subparsers(dest="action",
                                                                                         metavar="ACTION")
    g.required = True
    p = g.add_parser("add", help="add a group")
    p.add_argument("name")
    p.add_argument("members", nargs="*", help="accounts to put in it")
    p.set_defaults(func=group_add)
    p = g.add_parser("list", help="list groups and their members")
    p.set_defaults(func=group_list)
    p = g.add_parser("remove", help="remove a group and its ACL entries")
    p.add_argument("name")
    p.set_defaults(func=group_remove)
    p = g.add_parser("members", help="show (and change) a group's members")
    p.add_argument("name")
    p.add_argument("--add", action="append", help="add this account")
    p.add_argument("--remove", action="append", help="remove this account")
    p.set_defaults(func=group_members)
