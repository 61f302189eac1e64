#!/usr/bin/env python3
"""The IDLE fan-out of ``imap.py`` (b) counted in ways load does not move: from one delivery until every one of N
IDLE sessions has its EXISTS, the server's instructions (under callgrind), pool calls and SQL statements.

    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=DIR/callgrind.out.%p \
        .venv/bin/python scripts/bench/imap_idle_cost.py --idle 200 --callgrind DIR

The sessions are opened by ``imap.py``'s client process (not traced). Runs unchanged in a worktree of 1e6b12a.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--idle", type=int, default=200)
    ap.add_argument("--deliveries", type=int, default=1)
    ap.add_argument("--callgrind", default="")
    ap.add_argument("--profile", default="", help="write a cProfile (CPU clock) of the reactor thread's window here")
    args = ap.parse_args()
    from imap_cpu import _callgrind, _callgrind_window
    from sqlalchemy import event
    from twisted.python.threadpool import ThreadPool

    from tests.harness import call, running_server
    from tests.imap.imap_client import message

    hops = [0]
    call_in_thread = ThreadPool.callInThreadWithCallback

    def counted(self, *a, **kw):
        hops[0] += 1
        return call_in_thread(self, *a, **kw)
    ThreadPool.callInThreadWithCallback = counted
    with tempfile.TemporaryDirectory() as tmp:
        with running_server(Path(tmp), listeners=("imap",), limits={"imap_max_sessions_per_ip": args.idle + 100}) \
                as srv:
            srv.add_user("idle@example.test", "bench-password")
            statements = [0]
            event.listen(srv.store.engine, "before_cursor_execute", lambda *a: statements.__setitem__(0, statements[0] + 1))
            raw = message("wake up", to="idle@example.test")
            srv.deliver("idle@example.test", raw)  # warm the delivery path once
            proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("imap.py")), "--clients",
                                     str(args.idle), "--port", str(srv.port("imap")), "--user", "idle@example.test", "--hold"],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            json.loads(proc.stdout.readline())
            time.sleep(1.0)
            profiler = None
            if args.profile:
                import cProfile
                profiler = cProfile.Profile(time.thread_time)
                call(profiler.enable)
            if args.callgrind:
                _callgrind("--zero", "--instr=on")
            import reactor_counts
            counts = call(reactor_counts.install)
            k0 = reactor_counts.snapshot(counts)
            h0, s0, t0 = hops[0], statements[0], time.perf_counter()
            srv.deliver("idle@example.test", raw)
            done = json.loads(proc.stdout.readline())
            h1, s1, t1 = hops[0], statements[0], time.perf_counter()
            k1 = reactor_counts.snapshot(counts)
            ir = _callgrind_window(args.callgrind, "idle") if args.callgrind else 0
            if profiler is not None:
                call(profiler.disable)
                profiler.dump_stats(args.profile)
            proc.stdin.write("\n")  # the window is closed: the sessions may leave IDLE now
            proc.stdin.close()
            proc.wait(timeout=120)
            print(f"{args.idle} IDLE sessions, seen by {done['seen']}: pool calls {h1 - h0}  statements {s1 - s0}  "
                  f"wall {(t1 - t0) * 1000:.1f} ms" + (f"  Ir {ir:,}" if ir else ""), flush=True)
            print(f"    {reactor_counts.per(k1, k0, 1)}", flush=True)


if __name__ == "__main__":
    main()
