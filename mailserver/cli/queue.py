"""``mailserver queue list | show ID | retry [ID|--all] | delete ID | bounce ID``: the outbound queue.

These work on the database directly, so they also work while the server runs: ``retry`` makes recipients due now
(the running server picks them up at its next poll, at most a minute later), ``bounce`` hands the recipients to the
runner to fail with a report to the sender, ``delete`` drops a message without a report.  ID is the queue id of
the log lines (16 characters, any case; storage/queueid.py).
"""

from __future__ import annotations

import datetime

from mailserver.cli.main import CliError
from storage.queueid import QUEUE_ID_LENGTH, normalize_queue_id


def _queue(args):
    from mailserver.cli.admin import open_store
    from storage.queue import QueueStore

    return QueueStore(open_store(args))


def _when(t: float) -> str:
    if not t:
        return "now"
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _queue_id(text: str) -> str:
    qid = normalize_queue_id(text)
    if qid is None:
        raise CliError(f"no queued message {text} (a queue id is {QUEUE_ID_LENGTH} characters A-Z and 2-7)")
    return qid


def queue_list(args) -> int:
    entries = _queue(args).list()
    if not entries:
        print("queue is empty")
        return 0
    print(f"{'ID':<{QUEUE_ID_LENGTH}}  {'SIZE':>9}  {'ARRIVED':<23}  SENDER -> RECIPIENTS")
    for e in entries:
        m = e.message
        rcpts = ", ".join(f"{r.recipient} ({r.status}{', ' + str(r.attempts) + ' tries' if r.attempts else ''})"
                          for r in e.recipients)
        print(f"{m.public_id:<{QUEUE_ID_LENGTH}}  {m.size:>9}  {_when(m.created):<23}  <{m.sender}> -> {rcpts}")
    print(f"{len(entries)} message(s)")
    return 0


def queue_show(args) -> int:
    e = _queue(args).get(_queue_id(args.id))
    if e is None:
        raise CliError(f"no queued message {args.id}")
    m = e.message
    print(f"id:        {m.public_id}\nsender:    <{m.sender}>\nsize:      {m.size}\narrived:   {_when(m.created)}\n"
          f"source:    {m.source}\nenvid:     {m.envid}\nret:       {m.ret}\nsmtputf8:  {m.smtputf8}\n"
          f"8bit:      {m.body_8bit}\nblob:      {m.blob_id}")
    for r in e.recipients:
        print(f"\n  recipient:    {r.recipient}\n  status:       {r.status}\n  attempts:     {r.attempts}\n"
              f"  next attempt: {_when(r.next_attempt)}\n  last reply:   {r.last_reply}\n"
              f"  remote MTA:   {r.remote_mta}\n  notify:       {r.notify or '(default)'}\n"
              f"  route:        {r.route or 'MX'}\n  delay warned: {r.delay_warned}")
    if args.body:
        print()
        print(_queue(args).read_blob(m.blob_id).decode("utf-8", "replace"))
    return 0


def queue_retry(args) -> int:
    if args.id is None and not args.all:
        raise CliError("give a queue ID or --all")
    n = _queue(args).retry(None if args.all else _queue_id(args.id))
    print(f"{n} recipient(s) due now")
    return 0 if n or args.all else 1


def queue_delete(args) -> int:
    qid = _queue_id(args.id)
    if not _queue(args).delete(qid):
        raise CliError(f"no queued message {args.id}")
    print(f"deleted {qid}")
    return 0


def queue_bounce(args) -> int:
    q, qid = _queue(args), _queue_id(args.id)
    if q.get(qid) is None:
        raise CliError(f"no queued message {args.id}")
    n = q.bounce(qid)
    print(f"{n} recipient(s) will be returned to the sender")
    return 0


def register(sub) -> None:
    q = sub.add_parser("queue", help="the outbound queue").add_subparsers(dest="action", metavar="ACTION")
    q.required = True
    p = q.add_parser("list", help="list queued messages")
    p.set_defaults(func=queue_list)
    p = q.add_parser("show", help="show one queued message and its recipients")
    p.add_argument("id", type=str)
    p.add_argument("--body", action="store_true", help="print the message too")
    p.set_defaults(func=queue_show)
    p = q.add_parser("retry", help="try again now")
    p.add_argument("id", type=str, nargs="?")
    p.add_argument("--all", action="store_true", help="every queued message")
    p.set_defaults(func=queue_retry)
    p = q.add_parser("delete", help="remove a message without a report")
    p.add_argument("id", type=str)
    p.set_defaults(func=queue_delete)
    p = q.add_parser("bounce", help="give up on a message and report it to the sender")
    p.add_argument("id", type=str)
    p.set_defaults(func=queue_bounce)
