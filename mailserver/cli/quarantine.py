"""``mailserver quarantine list [--domain D | --account A] [--search TEXT] | show ID | release ID | delete ID``.

These work on the database directly, so they also work while the server runs (a release is the same one-transaction
release as the webmail's: of two at once, one delivers).  Every release and deletion is logged with who did it
(``cli:<user>``).
"""

from __future__ import annotations

import datetime
import getpass
import json

from mailserver.cli.main import CliError


def _store(args):
    from mailserver.cli.admin import open_store

    return open_store(args)


def _when(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _actor() -> str:
    try:
        return "cli:" + getpass.getuser()
    except Exception:
        return "cli"


def _item(store, text: str):
    try:
        item = store.quarantined(int(text))
    except ValueError:
        item = None
    if item is None:
        raise CliError(f"no quarantined message {text}")
    return item


def quarantine_list(args) -> int:
    store = _store(args)
    scope = {}
    if args.domain:
        d = store.get_domain(args.domain)
        if d is None:
            raise CliError(f"no domain {args.domain}")
        scope["domain_ids"] = [d.id]
    if args.account:
        a = store.get_account(args.account)
        if a is None:
            raise CliError(f"no account {args.account}")
        scope["account_ids"] = [a.id]
    total, items = store.list_quarantined(**scope, text=args.search or "", limit=args.limit)
    if not items:
        print("quarantine is empty")
        return 0
    print(f"{'ID':>8}  {'ARRIVED':<23}  {'REASON':<8}  RECIPIENT  <SENDER>  SUBJECT")
    for i in items:
        print(f"{i.id:>8}  {_when(i.arrived):<23}  {i.reason:<8}  {i.recipient}  <{i.sender}>  {i.subject}")
    print(f"{total} held copies" + (f" (first {len(items)} shown)" if total > len(items) else ""))
    return 0


def quarantine_show(args) -> int:
    i = _item(_store(args), args.id)
    print(f"id:         {i.id}\nrecipient:  {i.recipient}\nsender:     <{i.sender}>\nfrom:       {i.from_header}\n"
          f"subject:    {i.subject}\nreason:     {i.reason}: {i.reason_text}\narrived:    {_when(i.arrived)}\n"
          f"expires:    {_when(i.expires)}\nqueue id:   {i.queue_id}\nsize:       {i.size}\nblob:       {i.blob_id}\n"
          f"envelope:   {json.dumps(i.envelope)}\nclient:     {json.dumps(i.client)}")
    for f in i.facts:
        score = "" if f.get("score") is None else f" {f['score']}"
        print(f"  fact: {f.get('check', '')} {f.get('name', '')} {f.get('result', '')}{score} {f.get('detail', '')}"
              .rstrip())
    return 0


def quarantine_release(args) -> int:
    from mailserver.cli.mail import cli_pipeline
    from mailserver.delivery.runner import result_now

    store = _store(args)
    item = _item(store, args.id)
    outcome = result_now(cli_pipeline(args.config_obj, store).release(item, by=_actor()))
    if not outcome.ok:
        raise CliError(f"not released: {outcome.status} {outcome.text}")
    print(f"released {item.id} to {item.recipient} (uid {outcome.uid})")
    return 0


def quarantine_delete(args) -> int:
    from twisted.logger import Logger

    store = _store(args)
    item = _item(store, args.id)
    if not store.delete_quarantined([item.id]):
        raise CliError(f"no quarantined message {args.id}")
    Logger().info("quarantine delete {id} {qid} for <{rcpt}> by {by}", id=item.id, qid=item.queue_id,
                  rcpt=item.recipient, by=_actor())
    print(f"deleted {item.id}")
    return 0


def register(sub) -> None:
    q = sub.add_parser("quarantine", help="held copies").add_subparsers(dest="action", metavar="ACTION")
    q.required = True
    p = q.add_parser("list", help="list held copies, newest first")
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("--domain", help="only this domain's")
    scope.add_argument("--account", help="only this account's")
    p.add_argument("--search", help="sender or subject contains this")
    p.add_argument("--limit", type=int, default=100)
    p.set_defaults(func=quarantine_list)
    for name, func, text in (("show", quarantine_show, "show one held copy with its reason and facts"),
                             ("release", quarantine_release, "deliver it to the recipient's INBOX"),
                             ("delete", quarantine_delete, "remove it")):
        p = q.add_parser(name, help=text)
        p.add_argument("id")
        p.set_defaults(func=func)
