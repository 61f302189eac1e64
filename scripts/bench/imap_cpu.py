#!/usr/bin/env python3
"""IMAP per-command cost that does not move with the machine's load: server CPU and SQL statements per command.

    .venv/bin/python scripts/bench/imap_cpu.py [--messages 5000] [--small 1000] [--repeat 200] [--profile OUT]

Fills two mailboxes as ``imap.py`` does, then a client in a child process (so its own CPU is not counted) runs each
operation ``--repeat`` times on one logged-in connection. Per operation the server process's CPU (every thread:
``/proc/self/stat`` utime+stime, as ``smtp.py`` counts it) and the SQL statements SQLite ran (the driver's
trace callback, without BEGIN/COMMIT/ROLLBACK; an executemany counts per row) are divided by the repeat count. ``--profile OUT`` also
runs cProfile with a CPU clock (``time.thread_time``) in the reactor thread during the SELECTs and writes its
``pstats`` to OUT (the database threads are not in it: their work is the statement count).

Under callgrind the instructions of each measured window (every thread of the server; the client is not traced) are
counted too, which load does not move: ``valgrind --tool=callgrind --instr-atstart=no
--callgrind-out-file=DIR/callgrind.out.%p .venv/bin/python scripts/bench/imap_cpu.py --callgrind DIR``; the script
switches instrumentation on and off around each window with ``callgrind_control`` and prints Ir per operation.

The script uses only what both revisions of ``compare.py`` have (``tests.harness.running_server``, ``deliver_batch``),
so it can be run in a worktree of the pre-redesign build to get a same-run reference.
"""

from __future__ import annotations

import argparse
import imaplib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

PASSWORD = "bench-password"
USER = "bench@example.test"
OPERATIONS = ("select_small", "select_large", "headers_newest_50_small", "search_unseen_large", "noop")
# The rest of the read path (``--ops all``): each runs on the same connection, except login_logout (a fresh one).
MORE_OPERATIONS = ("examine_small", "status_small", "list", "uid_fetch_flags_small", "envelope_newest_50_small",
                   "bodystructure_newest_50_small", "body_newest_10_small", "search_unseen_small",
                   "select_close_small", "login_logout")


def cpu_seconds(tid: int = 0) -> float:
    """utime + stime of this process (every thread), or of its thread ``tid``."""
    with open(f"/proc/self/task/{tid}/stat" if tid else "/proc/self/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _callgrind(*options: str) -> None:
    subprocess.run(["callgrind_control", *options, str(os.getpid())], check=True, stdout=subprocess.DEVNULL)


def _callgrind_window(out_dir: str, name: str) -> int:
    """Dump the counts of the window that ends now (instrumentation off again); its total Ir."""
    before = set(Path(out_dir).glob("callgrind.out.*"))
    _callgrind("--instr=off")
    _callgrind(f"--dump={name}")
    for _ in range(600):
        new = set(Path(out_dir).glob("callgrind.out.*")) - before
        for f in new:
            for line in f.read_text(errors="replace").splitlines():
                if line.startswith("totals:"):
                    return int(line.split()[1])
        time.sleep(0.1)
    raise RuntimeError("no callgrind dump appeared")


def child(port: int, repeat: int) -> None:
    """The client: on each ``go`` line from the parent, run one operation ``repeat`` times, then say ``done``."""
    c = imaplib.IMAP4("127.0.0.1", port)
    c._mode_utf8 = False
    c.login(USER, PASSWORD)
    n_small = 0
    fetch = ("", "(UID BODY.PEEK[HEADER])")

    def first_selects():
        nonlocal n_small, fetch
        n_small = int(c.select("Small")[1][0])
        c.select("Large")
        fetch = (f"{n_small - 49}:{n_small}", "(UID BODY.PEEK[HEADER])")

    def login_logout():
        other = imaplib.IMAP4("127.0.0.1", port)
        other.login(USER, PASSWORD)
        other.logout()
    ops = {  # operation: (run once before, run ``repeat`` times)
        # The first SELECT of each mailbox after the server started (listed afresh): once each, first of all.
        "cold_select_small": (None, lambda: c.select("Small")),
        "cold_select_large": (None, lambda: c.select("Large")),
        "select_small": (None, lambda: c.select("Small")),
        "select_large": (None, lambda: c.select("Large")),
        "headers_newest_50_small": (lambda: c.select("Small"), lambda: c.fetch(*fetch)),
        "search_unseen_large": (lambda: c.select("Large"), lambda: c.search(None, "UNSEEN")),
        "noop": (None, lambda: c.noop()),
        "examine_small": (None, lambda: c.select("Small", readonly=True)),
        "status_small": (None, lambda: c.status("Small", "(MESSAGES UIDNEXT UNSEEN)")),
        "list": (None, lambda: c.list()),
        "uid_fetch_flags_small": (lambda: c.select("Small"), lambda: c.uid("FETCH", "1:*", "(UID FLAGS)")),
        "envelope_newest_50_small": (lambda: c.select("Small"), lambda: c.fetch(fetch[0], "(UID ENVELOPE)")),
        "bodystructure_newest_50_small": (lambda: c.select("Small"),
                                          lambda: c.fetch(fetch[0], "(UID BODYSTRUCTURE)")),
        "body_newest_10_small": (lambda: c.select("Small"),
                                 lambda: c.fetch(f"{n_small - 9}:{n_small}", "(UID BODY.PEEK[])")),
        "search_unseen_small": (lambda: c.select("Small"), lambda: c.search(None, "UNSEEN")),
        "select_close_small": (None, lambda: (c.select("Small"), c.close())),
        "login_logout": (None, login_logout),
    }
    for line in sys.stdin:
        op = line.strip()
        if op == "quit":
            break
        prep, run = ops[op]
        if not op.startswith("cold_") and not n_small:
            first_selects()
        if prep is not None:
            prep()
        print("ready", flush=True)
        sys.stdin.readline()
        for _ in range(1 if op.startswith("cold_") else repeat):
            run()
        print("done", flush=True)
    c.logout()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=5000)
    ap.add_argument("--small", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=200)
    ap.add_argument("--ops", default="", help="comma-separated operations, or 'all' (default: the first five)")
    ap.add_argument("--profile", default="", help="write a cProfile (CPU clock, reactor thread) of the SELECTs here")
    ap.add_argument("--profile-ops", default="select_small,select_large", help="the operations --profile covers")
    ap.add_argument("--callgrind", default="", help="running under callgrind: its output directory (see above)")
    ap.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.repeat)
        return
    from imap import fill
    from sqlalchemy import event
    from twisted.internet import reactor

    from tests.harness import running_server

    with tempfile.TemporaryDirectory() as tmp, running_server(Path(tmp), listeners=("imap",)) as srv:
        srv.add_user(USER, PASSWORD)
        acct = srv.store.get_account(USER)
        srv.store.create_mailbox(acct.id, "Large")
        srv.store.create_mailbox(acct.id, "Small")
        fill(srv.store, acct.id, "Large", args.messages)
        fill(srv.store, acct.id, "Small", args.small)
        statements = [0]
        seen: list[str] = []

        def count(statement: str) -> None:
            if statement.startswith(("BEGIN", "COMMIT", "ROLLBACK")):
                return  # a transaction's own (SQLite's trace shows them; SQLAlchemy's events never saw BEGIN)
            statements[0] += 1
            if capture[0]:
                seen.append(statement.split("\n")[0][:100])

        def trace(dbapi_conn, _record, _proxy):
            dbapi_conn.set_trace_callback(count)

        capture = [False]
        # Hand-overs to a thread pool (each a hop there and back to the reactor), counted on every pool.
        from twisted.python.threadpool import ThreadPool
        hops = [0]
        call_in_thread = ThreadPool.callInThreadWithCallback

        def counted(self, *a, **kw):
            hops[0] += 1
            return call_in_thread(self, *a, **kw)
        ThreadPool.callInThreadWithCallback = counted
        import reactor_counts
        counts = reactor_counts.install()
        # Statements as SQLite runs them (the driver's trace callback, set at every checkout: a pool event), not a
        # SQLAlchemy statement listener: any connection event makes SQLAlchemy dispatch events around every
        # statement and transaction, which would be measured too (storage/db.py).  An executemany counts once per
        # row here.
        event.listen(srv.store.engine, "checkout", trace)
        proc = subprocess.Popen([sys.executable, __file__, "--child", str(srv.port("imap")), "--repeat",
                                 str(args.repeat)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        import threading
        got = threading.Event()
        reactor_tid = [0]
        reactor.callFromThread(lambda: (reactor_tid.__setitem__(0, threading.get_native_id()), got.set()))
        got.wait(10)
        profiler = None
        if args.profile:
            import cProfile
            profiler = cProfile.Profile(time.thread_time)
        try:
            print(f"{args.messages} + {args.small} messages, {args.repeat} repeats per operation; load average "
                  f"{os.getloadavg()[0]:.1f}")
            ops = (OPERATIONS + MORE_OPERATIONS if args.ops == "all"
                   else tuple(args.ops.split(",")) if args.ops else OPERATIONS)
            for op in ops:
                # One warm-up round (snapshots loaded, caches filled), then the measured one; a cold_ operation
                # (the first SELECT of a mailbox: give them first) runs once, unwarmed.
                for measured in ((True,) if op.startswith("cold_") else (False, True)):
                    if measured and profiler is not None and op in args.profile_ops.split(","):
                        reactor.callFromThread(profiler.enable)
                    capture[0] = measured
                    seen.clear()
                    proc.stdin.write(op + "\n")
                    proc.stdin.flush()
                    assert proc.stdout.readline().strip() == "ready"
                    if measured and args.callgrind:
                        _callgrind("--zero", "--instr=on")
                    k0 = reactor_counts.snapshot(counts)
                    s0, c0, t0, h0 = statements[0], cpu_seconds(), time.perf_counter(), hops[0]
                    r0 = cpu_seconds(reactor_tid[0])
                    proc.stdin.write("go\n")
                    proc.stdin.flush()
                    assert proc.stdout.readline().strip() == "done"
                    c1, s1, t1, h1 = cpu_seconds(), statements[0], time.perf_counter(), hops[0]
                    r1 = cpu_seconds(reactor_tid[0])
                    k1 = reactor_counts.snapshot(counts)
                    if measured and args.callgrind:
                        ir = _callgrind_window(args.callgrind, op)
                    if measured and profiler is not None and op in args.profile_ops.split(","):
                        reactor.callFromThread(profiler.disable)
                capture[0] = False
                per = 1 if op.startswith("cold_") else args.repeat
                print(f"    {op:<26} server CPU {(c1 - c0) * 1000 / per:7.3f} ms "
                      f"(reactor thread {(r1 - r0) * 1000 / per:7.3f})   statements "
                      f"{(s1 - s0) / per:6.2f}   pool calls {(h1 - h0) / per:5.2f}   wall {(t1 - t0) * 1000 / per:7.3f} ms"
                      + (f"   Ir {ir / per:,.0f}" if args.callgrind else ""), flush=True)
                print(f"    {'':<26} {reactor_counts.per(k1, k0, per)}", flush=True)
                if os.environ.get("IMAP_CPU_STATEMENTS") and op == "select_small":
                    kinds: dict[str, int] = {}
                    for s in seen:
                        kinds[s] = kinds.get(s, 0) + 1
                    for s, k in sorted(kinds.items(), key=lambda kv: -kv[1]):
                        print(f"        {k / per:6.2f}  {s}")
            proc.stdin.write("quit\n")
            proc.stdin.flush()
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if profiler is not None:
            time.sleep(0.2)
            profiler.dump_stats(args.profile)
            print(f"profile in {args.profile}")


if __name__ == "__main__":
    main()
