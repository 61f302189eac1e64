#!/usr/bin/env python3
"""CPU per delivered message of ``pop3.py``'s fill (many ``deliver_raw`` calls to many accounts, gathered).

    scripts/bench/fill_cpu.py [--tree DIR] [--sessions 10] [--messages 200] [--size 5000] [--repeat 1]
    scripts/bench/fill_cpu.py --tree /tmp/before --mode store     # store.py's 1 mailbox 5 KB run instead

The server runs in this process (reactor in a thread, SQLite and file blobs in a temporary directory) from the tree
``--tree`` (default: this one), so the same script measures another revision (``git worktree add --detach DIR
REV``; run it with that tree's venv).  ``pop3`` mode does exactly what ``pop3.py``'s ``fill_ours`` does (accounts
bench1..N, each filled with batches of up to 250 ``deliver_raw`` calls gathered, one account after the other);
``store`` mode what ``store.py`` does for 1 mailbox (3000 calls through a DeferredSemaphore(64)).

Printed per repetition, all per delivered message: process CPU (user + system, every thread), that CPU by thread
role (reactor, each pool; from /proc, 10 ms ticks), SQL statements (every statement the SQLite driver ran: BEGIN
and COMMIT included), thread hand-overs (calls queued to a pool), blob-store flushes, and the wall time (noise on a
loaded machine).  Compare trees in one sitting, alternating runs: the CPU is what counts, not the wall time.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--tree", default=str(Path(__file__).resolve().parents[2]))
ap.add_argument("--mode", choices=("pop3", "store"), default="pop3")
ap.add_argument("--sessions", type=int, default=10)
ap.add_argument("--messages", type=int, default=200)
ap.add_argument("--size", type=int, default=5000)
ap.add_argument("--count", type=int, default=3000, help="store mode: deliveries")
ap.add_argument("--repeat", type=int, default=1, help="fills per process (each on a fresh server)")
ap.add_argument("--profile", default="", help="write a yappi profile (all threads, CPU clock) of the last fill")
ap.add_argument("--collect", action="store_true", help="gc.collect() after the server started (experiment)")
ap.add_argument("--no-yield", action="store_true",
                help="experiment: no time.sleep(0) between the messages of a blob group (delivery/runner.py)")
ap.add_argument("--no-settle", action="store_true",
                help="experiment: no gc.collect() + gc.freeze() at the first start (mailserver/memory.py settle_heap)")
ap.add_argument("--threshold", default="",
                help="experiment: gc.set_threshold(T0[,T1[,T2]]) once the server has started")
ap.add_argument("--callgrind", action="store_true",
                help="under valgrind --tool=callgrind: zero its counters before each fill, dump them after it "
                     "(callgrind_control), so the dump counts the fill's instructions alone")
ap.add_argument("--blob-threads", type=int, default=0, help="experiment: at most N blob pool threads")
ap.add_argument("--no-gc", action="store_true", help="garbage collector off during the fills (its share apart)")
ap.add_argument("--reactor-profile", default="",
                help="write a cProfile profile (pstats) of the reactor thread's CPU time over the last fill")
args = ap.parse_args()
sys.path.insert(0, args.tree)

from twisted.internet import defer, reactor  # noqa: E402
from twisted.internet.threads import blockingCallFromThread  # noqa: E402
from twisted.python import threadpool  # noqa: E402

from mailserver.config import load_dict  # noqa: E402
from mailserver.ingest import deliver_raw  # noqa: E402
from mailserver.service import MailServer  # noqa: E402

if args.no_settle:
    try:
        import mailserver.memory as _memory

        _memory._settled = True
    except ImportError:
        pass

if args.no_yield:
    import types

    import mailserver.delivery.runner as _runner

    _runner.time = types.SimpleNamespace(sleep=lambda s: None)

COUNTS = {"sql": 0, "hops": 0, "gc": 0, "gc2": 0, "gc_s": 0.0}
_gc_t0 = [0.0]


def _gc_watch(phase, info):
    if phase == "start":
        _gc_t0[0] = time.thread_time()
    else:
        COUNTS["gc"] += 1
        COUNTS["gc2"] += info["generation"] == 2
        COUNTS["gc_s"] += time.thread_time() - _gc_t0[0]


gc.callbacks.append(_gc_watch)

_orig_cit = threadpool.ThreadPool.callInThreadWithCallback


def _counted_cit(self, *a, **kw):
    COUNTS["hops"] += 1
    return _orig_cit(self, *a, **kw)


threadpool.ThreadPool.callInThreadWithCallback = _counted_cit


def _trace(_stmt):
    COUNTS["sql"] += 1


def _install_sql_counter():
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    @event.listens_for(Engine, "connect")
    def _on_connect(dbapi_conn, _record):
        if hasattr(dbapi_conn, "set_trace_callback"):
            dbapi_conn.set_trace_callback(_trace)


_install_sql_counter()


def pop3_message(i: int, size: int) -> bytes:  # scripts/bench/pop3.py make_message
    head = (f"From: Sender <sender{i}@remote.test>\r\nTo: rcpt@example.test\r\nSubject: bench message {i}\r\n"
            f"Date: Sun, 22 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{i}.pop3bench@remote.test>\r\n\r\n").encode()
    line = b"Lorem ipsum dolor sit amet, consectetur adipiscing elit.\r\n.A line starting with a dot.\r\n"
    return head + line * max(1, (size - len(head)) // len(line))


def store_message(i: int, size: int) -> bytes:  # scripts/bench/store.py make_message (fixed ids: no random)
    head = (f"From: Sender {i} <sender{i}@remote.test>\r\nTo: rcpt@example.test\r\nSubject: bench message {i}\r\n"
            f"Date: Sun, 22 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{i}.{i * 7919}@remote.test>\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n").encode()
    line = b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.\r\n"
    return head + line * max(1, (size - len(head)) // len(line))


def thread_cpu() -> dict[str, float]:
    names = {t.native_id: t.name for t in threading.enumerate()}
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        name = names.get(int(tid), "other")
        role = "main" if int(tid) == os.getpid() else name.removeprefix("PoolThread-")
        role = role.rsplit("-", 1)[0] if role[-1:].isdigit() else role
        out[role] = out.get(role, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def call(f, *a, **kw):
    return blockingCallFromThread(reactor, f, *a, **kw)


def one_fill(profile: str) -> None:
    from mailserver.auth import PasswordHasher

    tmp = tempfile.mkdtemp(prefix="bench-fillcpu-")
    table = {"hostname": "mail.example.test", "data_dir": tmp, "domain": [{"name": "example.test"}]}
    if args.mode == "pop3":
        table["listen"] = {"pop3": ["127.0.0.1:0"]}
    server = MailServer(load_dict(table, "bench"), reactor)
    call(server.startService)
    if args.collect:
        gc.collect()
    if args.blob_threads:
        call(server.pools.blob.adjustPoolsize, 1, args.blob_threads)
    if args.threshold:
        gc.set_threshold(*(int(t) for t in args.threshold.split(",")))
    h = PasswordHasher("argon2", low_cost=True).hash("bench password")
    services = getattr(server, "provided", server)  # before the typed Services, deliver_raw took the server
    try:
        if args.mode == "pop3":
            ids = [server.store.add_account(f"bench{i}@example.test", h).id for i in range(1, args.sessions + 1)]
            batches = []
            for acct in ids:
                for start in range(0, args.messages, 250):
                    batches.append((acct, [pop3_message(i, args.size)
                                           for i in range(start, min(args.messages, start + 250))]))
            n = args.sessions * args.messages
        else:
            ids = [server.store.add_account("u0@example.test", h).id]
            msgs = [store_message(i, args.size) for i in range(min(args.count, 200))]
            n = args.count
        blobs = server.store.blobs
        syncs0 = getattr(blobs, "syncs", 0)
        prof = None
        if profile and args.profile:
            import yappi

            yappi.set_clock_type("cpu")
            yappi.start(builtins=False)
            prof = yappi
        rprof = None
        if args.reactor_profile and profile:
            import cProfile

            rprof = cProfile.Profile(time.thread_time)
            call(rprof.enable)
        if args.no_gc:
            gc.collect()
            gc.disable()
        cg = args.callgrind
        if cg:
            import subprocess

            subprocess.run(["callgrind_control", "-z", str(os.getpid())], check=True, capture_output=True)
        c0 = dict(COUNTS)
        th0 = thread_cpu()
        t0, cpu0 = time.perf_counter(), os.times()
        if args.mode == "pop3":
            for acct, batch in batches:
                call(lambda b=batch, a=acct: defer.gatherResults([deliver_raw(services, a, raw) for raw in b],
                                                                 consumeErrors=True))
        else:
            def run():
                sem = defer.DeferredSemaphore(64)
                return defer.gatherResults([sem.run(deliver_raw, services, ids[0], msgs[i % len(msgs)])
                                            for i in range(n)])
            results = call(run)
            assert all(r.ok for r in results)
        cpu1, t1 = os.times(), time.perf_counter()
        th1 = thread_cpu()
        c1 = dict(COUNTS)
        if cg:
            subprocess.run(["callgrind_control", "-d", str(os.getpid())], check=True, capture_output=True)
        if args.no_gc:
            gc.enable()
        if rprof is not None:
            call(rprof.disable)
            rprof.dump_stats(args.reactor_profile)
        if prof is not None:
            prof.stop()
            prof.get_func_stats().save(profile, type="pstat")
            prof.clear_stats()
        cpu = (cpu1[0] - cpu0[0]) + (cpu1[1] - cpu0[1])
        by = sorted(((v - th0.get(k, 0.0)) / n * 1e6, k) for k, v in th1.items())
        by_s = ", ".join(f"{k} {v:.0f}" for v, k in reversed(by) if v > 0)
        syncs = getattr(blobs, "syncs", 0) - syncs0
        print(f"{Path(args.tree).name} {args.mode}: {n} msgs, CPU {cpu / n * 1e6:.1f} us/msg "
              f"(user {(cpu1[0] - cpu0[0]) / n * 1e6:.1f}), sql {(c1['sql'] - c0['sql']) / n:.3f}/msg, "
              f"hops {(c1['hops'] - c0['hops']) / n:.3f}/msg, flushes {syncs / n:.4f}/msg, "
              f"gc {c1['gc'] - c0['gc']} ({c1['gc2'] - c0['gc2']} full) {(c1['gc_s'] - c0['gc_s']) / n * 1e6:.1f} us/msg, "
              f"wall {(t1 - t0) / n * 1e6:.0f} us/msg; by thread us/msg: {by_s}", flush=True)
    finally:
        call(server.stopService)
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    t = threading.Thread(target=reactor.run, kwargs={"installSignalHandlers": False}, daemon=True)
    t.start()
    try:
        for k in range(args.repeat):
            one_fill((args.profile or args.reactor_profile) if k == args.repeat - 1 else "")
    finally:
        reactor.callFromThread(reactor.stop)
        t.join(10)


main()
