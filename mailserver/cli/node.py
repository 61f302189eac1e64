"""``mailserver node list [--all]``: the server processes sharing this database, from their heartbeat rows."""

from __future__ import annotations

import datetime
import time


def _when(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def node_list(args) -> int:
    from mailserver.cli.admin import open_store
    from mailserver.nodes import list_nodes

    now = time.time()
    rows = list_nodes(open_store(args))
    shown = [r for r in rows if args.all or r.alive(now)]
    for r in shown:
        state = "alive" if r.alive(now) else "dead"
        print(f"{r.node}\t{r.role}\tpid {r.pid}\t{state}\tsince {_when(r.started)}\tseen {now - r.seen:.0f}s ago"
              f"\t{' '.join(r.listeners) or '-'}")
    nodes = {r.node for r in shown if r.alive(now)}
    print(f"{len(nodes)} node(s), {sum(r.alive(now) for r in shown)} live process(es)")
    return 0


def register(sub) -> None:
    d = sub.add_parser("node", help="the server processes sharing this database").add_subparsers(
        dest="action", metavar="ACTION")
    d.required = True
    p = d.add_parser("list", help="live processes (heartbeat rows) by node: role, pid, listeners")
    p.add_argument("--all", action="store_true", help="also processes that stopped beating and were not yet "
                                                      "forgotten")
    p.set_defaults(func=node_list)
