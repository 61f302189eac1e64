"""``mailserver sendas grant ACCOUNT ADDRESS [--on-behalf] | revoke ACCOUNT ADDRESS | list [--account A] [--address X]``.

Who may submit mail under an address that is not their own (``storage/sendgrants.py``): ``send-as`` lets the account
use the address as From and as envelope sender; ``--on-behalf`` (send-on-behalf) only as From, with a ``Sender:``
naming the account. These write the database directly and take effect on the next message, also while the server
runs.
"""

from __future__ import annotations

import datetime

from mailserver.cli.main import CliError
from storage.sendgrants import SEND_AS, SEND_ON_BEHALF


def _store(args):
    from mailserver.cli.admin import open_store

    return open_store(args)


def _call(f, *a):
    from storage.errors import StoreError

    try:
        return f(*a)
    except StoreError as e:
        raise CliError(str(e)) from None


def sendas_grant(args) -> int:
    kind = SEND_ON_BEHALF if args.on_behalf else SEND_AS
    g = _call(_store(args).grant_send, args.account, args.address, kind)
    print(f"{g.account} may send {'on behalf of' if kind == SEND_ON_BEHALF else 'as'} {g.address}")
    return 0


def sendas_revoke(args) -> int:
    _call(_store(args).revoke_send, args.account, args.address)
    print(f"revoked {args.account} on {args.address.strip().lower()}")
    return 0


def sendas_list(args) -> int:
    grants = _call(_store(args).list_send_grants, args.account, args.address)
    if not grants:
        print("no grants")
        return 0
    for g in grants:
        when = datetime.datetime.fromtimestamp(g.created, datetime.timezone.utc).strftime("%Y-%m-%d")
        print(f"{g.address}\t{g.kind}\t{g.account}\t{when}")
    return 0


def register(sub) -> None:
    s = sub.add_parser("sendas", help="send-as / send-on-behalf grants").add_subparsers(dest="action",
                                                                                       metavar="ACTION")
    s.required = True
    p = s.add_parser("grant", help="let ACCOUNT send as ADDRESS (From and MAIL FROM), or --on-behalf of it")
    p.add_argument("account")
    p.add_argument("address")
    p.add_argument("--on-behalf", action="store_true",
                   help="send-on-behalf: ADDRESS only as From, with Sender: naming ACCOUNT")
    p.set_defaults(func=sendas_grant)
    p = s.add_parser("revoke", help="remove ACCOUNT's grant on ADDRESS")
    p.add_argument("account")
    p.add_argument("address")
    p.set_defaults(func=sendas_revoke)
    p = s.add_parser("list", help="list grants (address, kind, account, date)")
    p.add_argument("--account", help="only this account's")
    p.add_argument("--address", help="only those on this address")
    p.set_defaults(func=sendas_list)
