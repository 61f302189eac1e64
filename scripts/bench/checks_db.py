#!/usr/bin/env python3
"""What the inbound checks cost in database work: SQL statements, transactions and thread hand-overs per message.

Runs ``scripts/bench/smtp.py``'s load (the same server, messages, DNS server and checks) with counters in the server
process, which start once it listens (account set-up is not counted):

* ``statements`` - every SQL statement sent (SQLAlchemy ``before_cursor_execute``; an executemany counts once);
* ``transactions`` - every transaction begun (SQLAlchemy ``begin``);
* ``hand-overs`` - every piece of work handed to a thread pool (``mailserver.threads.run_in``), by pool, and the
  store methods the reactor asked for (``AsyncStore``), by name.

These are load-independent: they are the same on a loaded or a quiet machine.  The server CPU per message is also
printed (as smtp.py measures it), and, with ``--checks both``, what the checks add per message::

    .venv/bin/python scripts/bench/checks_db.py [--checks off|on|both] [--messages 1000] [--repeat 1]
                                                [--rules N] [--greylist]

``--rules N`` gives every account N sender rules (none of which matches the benchmark's sender, as most rules of a
real account do not match a given message), so the policy's read is not of an empty table.  ``--greylist`` adds
greylisting after DATA with every triplet already passed (the steady state of a greylisting server: the first
attempt of each triplet is deferred, which is not what this measures).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import smtp  # noqa: E402  (scripts/bench/smtp.py)

_COUNTS = "CHECKS_DB_COUNTS"
_SETUP = "CHECKS_DB_SETUP"


class _Counted:
    """A port queue that starts the counters when the server says it listens."""

    def __init__(self, q, start):
        self.q, self.start = q, start

    def put(self, item):
        self.start()
        self.q.put(item)


def counted_serve(data_dir, port_queue, stop_event, extra, dns_port=0, dns_cache=10000, profile=""):
    """smtp.serve with counters (the spawned server process)."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    import mailserver.threads as threads_mod

    lock = threading.Lock()
    counts = collections.Counter()
    on = [False]

    def bump(key):
        if on[0]:
            with lock:
                counts[key] += 1

    event.listen(Engine, "before_cursor_execute", lambda *a: bump("statements"))
    event.listen(Engine, "begin", lambda *a: bump("transactions"))
    run_in = threads_mod.run_in

    def counted_run_in(reactor, pool, f, *args, **kwargs):
        bump("handover:" + pool.name)
        bump("handovers")
        return run_in(reactor, pool, f, *args, **kwargs)

    threads_mod.run_in = counted_run_in  # before mailserver's modules import it
    from mailserver import asyncstore

    getattr_ = asyncstore.AsyncStore.__getattr__

    def counted_getattr(self, name):
        call = getattr_(self, name)

        def counted(*args, **kwargs):
            bump("store:" + name)
            return call(*args, **kwargs)

        self.__dict__[name] = counted
        return counted

    asyncstore.AsyncStore.__getattr__ = counted_getattr
    setup = json.loads(os.environ.get(_SETUP) or "{}")
    if setup:
        _patch_setup(setup)
    try:
        smtp.serve(data_dir, _Counted(port_queue, lambda: on.__setitem__(0, True)), stop_event, extra, dns_port,
                   dns_cache, profile)
    finally:
        with open(os.environ[_COUNTS], "w") as f:
            json.dump(dict(counts), f)


def _patch_setup(setup: dict) -> None:
    """Sender rules and passed greylisting triplets for the benchmark's accounts, made as they are added."""
    from storage.store import Store

    add_account = Store.add_account

    def add(self, address, *args, **kwargs):
        acct = add_account(self, address, *args, **kwargs)
        for i in range(setup.get("rules", 0)):
            self.set_sender_rule(acct.id, f"sender{i}@rules{i % 7}.example" if i % 3 else f"@rules{i}.example",
                                 "allow" if i % 2 else "block")
        if setup.get("greylist"):
            import time

            from storage import greylist

            now = time.time()
            with self.transaction() as conn:  # a first attempt and a retry that passed, a moment ago
                p = greylist.GreylistPolicy(0.0, 1e9, 1e9)
                greylist.record(conn, "127.0.0.0/24", "bench@example.net", address, now - 10, p)
                greylist.record(conn, "127.0.0.0/24", "bench@example.net", address, now - 5, p)
        return acct

    Store.add_account = add


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checks", choices=("off", "on", "both"), default="both")
    ap.add_argument("--messages", type=int, default=1000)
    ap.add_argument("--sessions", type=int, default=10)
    ap.add_argument("--size", type=int, default=5 * 1024)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--rules", type=int, default=0, help="sender rules per account")
    ap.add_argument("--greylist", action="store_true", help="greylisting after DATA, every triplet passed")
    ap.add_argument("--lists", choices=("on", "off"), default="on")
    ap.add_argument("--dns-cache", type=int, default=10000)
    args = ap.parse_args()
    # What smtp.run reads of its arguments.
    args.callgrind, args.profile, args.scan, args.bayes = "", "", False, False
    smtp.serve = counted_serve  # smtp.run starts this one
    body, dkim_p = smtp.signed_body(args.size)
    extra = {}
    if args.greylist:
        extra["antispam"] = {"greylist": {"enabled": True, "stage": "data"}}
    os.environ[_SETUP] = json.dumps({"rules": args.rules, "greylist": args.greylist})
    import tempfile

    results = collections.defaultdict(list)
    with tempfile.TemporaryDirectory(prefix="checks-db-") as tmp:
        path = os.path.join(tmp, "counts.json")
        os.environ[_COUNTS] = path
        for _ in range(args.repeat):
            for checks in (("off", "on") if args.checks == "both" else (args.checks,)):
                got = smtp.run(args, body, dkim_p if checks == "on" else "", _merge(extra, checks))
                if got is None:
                    return 1
                with open(path) as f:
                    counts = json.load(f)
                n = args.messages // args.sessions * args.sessions
                per = {k: v / n for k, v in sorted(counts.items())}
                print(f"  checks={checks} per message: " + " ".join(f"{k}={v:.2f}" for k, v in per.items()))
                results[checks].append((got[1], per))
    if results["off"] and results["on"]:
        def median(xs):
            return sorted(xs)[len(xs) // 2]

        off = median([c for c, _ in results["off"]])
        on = median([c for c, _ in results["on"]])
        print(f"median server CPU {1000 * off:.2f} -> {1000 * on:.2f} ms/msg: the checks cost "
              f"{100 * (1 - off / on):.0f}% of CPU-bound throughput")
        last_off, last_on = results["off"][-1][1], results["on"][-1][1]
        for key in ("statements", "transactions", "handovers"):
            print(f"{key} per message: {last_off.get(key, 0):.2f} -> {last_on.get(key, 0):.2f}")
    return 0


def _merge(extra: dict, checks: str) -> dict:
    """The run's extra configuration (greylisting only with the checks on: it is one of them)."""
    return dict(extra) if checks == "on" else {}


if __name__ == "__main__":
    sys.exit(main())
