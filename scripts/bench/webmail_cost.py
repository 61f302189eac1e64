"""Webmail cost per request, in figures that do not move with the machine's load: SQL statements, transactions and
server CPU per page, optionally a CPU-clock profile of the server's threads.

    .venv/bin/python scripts/bench/webmail_cost.py [--messages 1000] [--requests 200] [--sql]
        [--profile OUT.pstats] [--route list|open|folders]

One server in this process (``tests.harness.running_server``, https only, SQLite), one account with a folder of
``--messages`` messages (filled as ``webmail.py`` does), one keep-alive HTTPS client on the main thread.  For each
route (the list page, opening a message, the folders page) it prints, over ``--requests`` requests after a warm-up:

- statements per request: every ``before_cursor_execute`` on the store's engine (``BEGIN`` counted apart, as
  transactions);
- server CPU per request: the process's CPU time minus the main thread's (the client), in ms;
- with ``--sql``: the statements of one request, in order.

``--profile``: yappi (``pip install yappi``) with its CPU clock over every thread but the client's, written as
pstats (read it with ``python -m pstats``); CPU figures taken while profiling are not comparable to those without.

The script only uses what the pre-redesign revision also has (``compare.py``'s ``--before``), so the same file can be
copied into that tree and run there for a before/after of these counts.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from sqlalchemy import event  # noqa: E402

from tests.harness import running_server  # noqa: E402


def _webmail_bench():
    """scripts/bench/webmail.py (its fill, login and client), loaded by path: ``webmail`` is the app's package."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("webmail_bench", Path(__file__).with_name("webmail.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_wb = _webmail_bench()
fill, login, PW, Session = _wb.fill, _wb.login, _wb.PW, _wb.Session


class Counter:
    """Statements on one engine, from any thread."""

    def __init__(self, engine):
        self.lock = threading.Lock()
        self.statements = 0
        self.begins = 0
        self.record: list[str] | None = None
        event.listen(engine, "before_cursor_execute", self._on_execute)

    def _on_execute(self, conn, cursor, statement, parameters, context, executemany):
        with self.lock:
            if statement.lstrip().upper().startswith("BEGIN"):
                self.begins += 1
            else:
                self.statements += 1
            if self.record is not None:
                self.record.append(" ".join(statement.split()))

    def snapshot(self) -> tuple[int, int]:
        with self.lock:
            return self.statements, self.begins


def server_cpu() -> float:
    """CPU seconds of every thread of this process but the calling one."""
    return time.process_time() - time.thread_time()


def measure(session: Session, counter: Counter, path: str, n: int) -> tuple[float, float, float]:
    """(statements, transactions, server CPU ms) per request of ``path``."""
    for _ in range(5):
        session.get(path)
    time.sleep(0.2)  # let deferred work of the warm-up (session touches) settle
    s0, b0 = counter.snapshot()
    c0 = server_cpu()
    for _ in range(n):
        session.get(path)
    c1 = server_cpu()
    s1, b1 = counter.snapshot()
    return (s1 - s0) / n, (b1 - b0) / n, (c1 - c0) * 1000 / n


def _save_profile(yappi, out: str) -> None:
    """Every thread's stats but the main (client) thread's, merged into one pstats file."""
    import os
    import pstats

    threads = [t.id for t in yappi.get_thread_stats() if t.name != "_MainThread"]
    merged = None
    for ctx_id in threads:
        part = f"{out}.{ctx_id}"
        yappi.get_func_stats(filter={"ctx_id": ctx_id}).save(part, type="pstat")
        if merged is None:
            merged = pstats.Stats(part)
        else:
            merged.add(part)
        os.unlink(part)
    if merged is not None:
        merged.dump_stats(out)
    print(f"profile (yappi, CPU clock, {len(threads)} server threads) written to {out}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=1000)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--sql", action="store_true", help="print the statements of one request of each route")
    ap.add_argument("--profile", help="write a yappi CPU-clock profile (pstats) of the server's threads here")
    ap.add_argument("--route", action="append", choices=("list", "open", "folders"),
                    help="only these routes (default all)")
    args = ap.parse_args()
    routes = args.route or ["list", "open", "folders"]
    with tempfile.TemporaryDirectory() as tmp, running_server(Path(tmp), listeners=("https",)) as srv:
        acct = srv.add_user("bench@example.test", PW)
        srv.store.create_mailbox(acct.id, "Small")
        fill(srv.store, acct.id, "Small", args.messages)
        mb = srv.store.get_mailbox(acct.id, "Small")
        port = srv.port("https")
        session = Session(port, login(port, acct.address))
        counter = Counter(srv.store.engine)
        paths = {"list": f"/m/{mb.id}", "open": f"/m/{mb.id}/{args.messages // 2}", "folders": "/folders"}
        if args.profile:
            import yappi

            yappi.set_clock_type("cpu")
            yappi.start(builtins=False, profile_threads=True)
        for name in routes:
            st, tx, cpu = measure(session, counter, paths[name], args.requests)
            print(f"{name:8s} {paths[name]:14s} statements/request {st:5.2f}  transactions/request {tx:5.2f}  "
                  f"server CPU {cpu:6.3f} ms/request")
        if args.profile:
            yappi.stop()
            _save_profile(yappi, args.profile)
        if args.sql:
            for name in routes:
                session.get(paths[name])
                time.sleep(0.2)
                counter.record = []
                session.get(paths[name])
                time.sleep(0.1)
                stmts, counter.record = counter.record, None
                print(f"\n{name}: {len(stmts)} statements (BEGIN included)")
                for s in stmts:
                    print("  " + re.sub(r"SELECT .{200,}? FROM", "SELECT ... FROM", s)[:300])


if __name__ == "__main__":
    main()
