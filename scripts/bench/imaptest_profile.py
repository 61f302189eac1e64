#!/usr/bin/env python3
"""Where an imaptest stress operation spends our CPU: imaptest stress against the in-process server, profiled.

Starts the server in this process (tests/harness.py), adds the users, logs each in once (the argon2 upgrade of the
first login is not what stress measures), then runs imaptest stress for ``--secs`` with yappi (CPU clock, every
thread) on, and prints the server process's CPU per imaptest operation (``/proc/self/stat``: every thread, with
the profiler's own overhead when ``--profile`` is given), the operation counts and the top functions::

    .venv/bin/python scripts/bench/imaptest_profile.py --imaptest /work/tools/imaptest.sh [--secs 20]
        [--profile OUT.pstat] [--top 40]

Without ``--profile`` only the CPU per operation is printed (the figure to compare before/after; yappi is
``pip install yappi``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import imaptest as bench  # noqa: E402  (scripts/bench/imaptest.py)


def process_cpu() -> float:
    with open("/proc/self/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--imaptest", default=os.environ.get("IMAPTEST", ""))
    ap.add_argument("--secs", type=int, default=20)
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--users", type=int, default=100)
    ap.add_argument("--seed", type=int, default=124)
    ap.add_argument("--profile", default="", help="write a yappi profile (pstats format) here")
    ap.add_argument("--top", type=int, default=40)
    args = ap.parse_args()

    from mailserver.service import raise_open_files_limit
    from tests.harness import running_server

    raise_open_files_limit()
    work = Path(tempfile.mkdtemp(prefix="imaptest-profile-"))
    mbox = work / "sample.mbox"
    subprocess.run([sys.executable, str(ROOT.parent / "shared" / "bench" / "make-mbox.py"), "300", str(mbox),
                    "--seed", "1"], check=True, stdout=subprocess.DEVNULL, timeout=300)
    limits = {"imap_max_sessions_per_ip": max(50, args.clients * 3)}
    with running_server(work / "ours", listeners=("imap",), limits=limits) as srv:
        for n in range(1, args.users + 1):
            srv.add_user(f"user{n}@{bench.OUR_DOMAIN}", bench.PASSWORD)
        target = bench.Target("ours", srv.port("imap"), f"@{bench.OUR_DOMAIN}")
        bench.warm_up(target, [target.user(n) for n in range(1, args.users + 1)])
        yappi = None
        if args.profile:
            import yappi

            yappi.set_clock_type("cpu")
            yappi.start(builtins=True, profile_threads=True)
        load0, cpu0 = os.getloadavg()[0], process_cpu()
        res = bench.stress(Path(args.imaptest), target, user=target.user_template(), users=(1, args.users),
                           clients=args.clients, secs=args.secs, seed=args.seed, mbox=mbox, log=work / "stress.log",
                           cwd=work)
        cpu = process_cpu() - cpu0
        if yappi is not None:
            yappi.stop()
            yappi.get_func_stats().save(args.profile, type="pstat")
    print(f"{res.ops_per_s:.1f} ops/s, {len(res.errors)} errors, load {load0:.1f}-{os.getloadavg()[0]:.1f}; "
          f"server CPU {cpu:.2f} s = {1000 * cpu / max(1, res.ops):.3f} ms/op")
    print("  " + " ".join(f"{k}={v}" for k, v in res.counts.items()))
    for e in bench.error_kinds(res.errors):
        print("   ", e)
    if args.profile:
        import pstats

        pstats.Stats(args.profile).sort_stats("tottime").print_stats(args.top)
    return 1 if res.errors else 0


if __name__ == "__main__":
    sys.exit(main())
