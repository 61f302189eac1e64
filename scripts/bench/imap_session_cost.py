#!/usr/bin/env python3
"""The per-session IMAP figures of ``imap.py`` (a), counted in ways load does not move: process CPU (client and
server share this process, as in ``imap.py``), garbage collections and context switches per operation.

    .venv/bin/python scripts/bench/imap_session_cost.py [--messages 5000] [--small 1000] [--sessions 50]

Each session is what ``imap.py`` times (LOGIN, SELECT, ``UID FETCH 1:* (UID FLAGS)``, headers of the newest 50,
SEARCH UNSEEN, LOGOUT), the client in the main thread and the server in its reactor thread of the same process;
per operation the process's CPU (``getrusage``), its voluntary and involuntary context switches and the garbage
collections (per generation, with their time) are summed and divided by the sessions. The first session of each
mailbox (the first SELECT after start: ``cold``) is reported alone. It runs unchanged in a worktree of 1e6b12a.
"""

from __future__ import annotations

import argparse
import gc
import imaplib
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

PASSWORD = "bench-password"
USER = "bench@example.test"
GC = {"n": [0, 0, 0], "t": 0.0, "t0": 0.0}


def _gc_callback(phase, info):
    if phase == "start":
        GC["t0"] = time.thread_time()
    else:
        GC["n"][info["generation"]] += 1
        GC["t"] += time.thread_time() - GC["t0"]


def sample():
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return (ru.ru_utime + ru.ru_stime, ru.ru_nvcsw, ru.ru_nivcsw, *GC["n"], GC["t"], time.perf_counter())


def session(port: int, mailbox: str, n: int, acc: dict) -> None:
    def op(name, f):
        a = sample()
        result = f()
        b = sample()
        acc.setdefault(name, [0.0] * len(a))
        for i in range(len(a)):
            acc[name][i] += b[i] - a[i]
        return result
    c = imaplib.IMAP4("127.0.0.1", port)
    c._mode_utf8 = False
    c.login(USER, PASSWORD)
    op("select", lambda: c.select(mailbox))
    typ, data = op("uid_fetch_flags", lambda: c.uid("FETCH", "1:*", "(UID FLAGS)"))
    assert typ == "OK" and len(data) == n
    op("headers_newest_50", lambda: c.fetch(f"{max(1, n - 49)}:{n}", "(UID BODY.PEEK[HEADER])"))
    op("search_unseen", lambda: c.search(None, "UNSEEN"))
    c.logout()


def show(label: str, acc: dict, per: int) -> None:
    for name, v in acc.items():
        cpu, vcs, ics, g0, g1, g2, gt, wall = (x / per for x in v)
        print(f"    {label:<6} {name:<18} CPU {cpu * 1000:7.3f} ms  ctx switches {vcs:6.1f} vol {ics:5.1f} invol  "
              f"gc {g0:5.2f}/{g1:5.2f}/{g2:5.3f} ({gt * 1000:6.3f} ms)  wall {wall * 1000:7.3f} ms", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=5000)
    ap.add_argument("--small", type=int, default=1000)
    ap.add_argument("--sessions", type=int, default=50)
    args = ap.parse_args()
    from imap import fill

    from tests.harness import running_server

    gc.callbacks.append(_gc_callback)
    with tempfile.TemporaryDirectory() as tmp, running_server(Path(tmp), listeners=("imap",)) as srv:
        srv.add_user(USER, PASSWORD)
        acct = srv.store.get_account(USER)
        srv.store.create_mailbox(acct.id, "Large")
        srv.store.create_mailbox(acct.id, "Small")
        fill(srv.store, acct.id, "Large", args.messages)
        fill(srv.store, acct.id, "Small", args.small)
        port = srv.port("imap")
        print(f"{args.messages} + {args.small} messages, {args.sessions} sessions each; gc objects "
              f"{len(gc.get_objects())}", flush=True)
        for mailbox, n in (("Small", args.small), ("Large", args.messages)):
            acc: dict = {}
            session(port, mailbox, n, acc)
            show("cold", {"select": acc["select"]}, 1)
        for mailbox, n in (("Large", args.messages), ("Small", args.small)):
            acc = {}
            for _ in range(args.sessions):
                session(port, mailbox, n, acc)
            show(mailbox, acc, args.sessions)


if __name__ == "__main__":
    main()
