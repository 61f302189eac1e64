#!/usr/bin/env python3
"""pop3_threads.py TREE WORKERS ROUNDS [MESSAGES]: where the server's CPU goes over a POP3 round.

``mailserver serve --workers N`` from TREE (e.g. 1,2) on one data directory filled once (10 sessions x MESSAGES
RETR of 5 KB, the clients of ``pop3.py``); per round: messages/s, server CPU per message of every process (user,
system), the CPU and context switches of each thread that ran, and the sessions each worker held 0.3 s into the
round (``ss -tnp``).  ``STRACE=1`` also counts the workers' system calls (``strace -f -c``, into
/tmp/pop3_threads-strace-N-PID.txt; it slows the server down many times, so only the counts mean anything).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pop3 as B  # noqa: E402


def proc_cpu(pid: int) -> tuple[float, float]:
    with open(f"/proc/{pid}/stat") as f:
        x = f.read().rsplit(")", 1)[1].split()
    return (int(x[11]) + int(x[13])) / B.CLK_TCK, (int(x[12]) + int(x[14])) / B.CLK_TCK


def thread_stats(pid: int) -> dict[int, tuple[int, int, int]]:
    """tid -> (CPU ticks, voluntary, involuntary context switches)."""
    out = {}
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{t}/stat") as f:
                x = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/task/{t}/status") as f:
                st = f.read()
        except FileNotFoundError:
            continue
        v = int(re.search(r"\nvoluntary_ctxt_switches:\s+(\d+)", st).group(1))
        nv = int(re.search(r"nonvoluntary_ctxt_switches:\s+(\d+)", st).group(1))
        out[int(t)] = (int(x[11]) + int(x[12]), v, nv)
    return out


def tree_pids(root: int) -> list[int]:
    out = [root]
    for c in B._children(root):
        out += tree_pids(c)
    return out


def one_round(srv, clients, port: int, users: list[str], n: int) -> None:
    clients.warm_up("127.0.0.1", port, users, B.PASSWORD)
    ps = tree_pids(srv.proc.pid)
    workers = ps[1:] if len(ps) > 1 else ps
    c0 = {p: proc_cpu(p) for p in ps}
    t0 = {p: thread_stats(p) for p in ps}
    tracers = []
    if os.environ.get("STRACE"):
        for p in workers:
            tracers.append(subprocess.Popen(["strace", "-f", "-c", "-o", f"/tmp/pop3_threads-strace-{n}-{p}.txt",
                                             "-p", str(p)]))
        time.sleep(1)
    balance: list[int] = []
    probe = threading.Timer(1.3, lambda: balance.extend(B.sessions_per_process(port)))
    probe.start()
    res = clients.run("127.0.0.1", port, users, B.PASSWORD, srv.cpu)
    probe.join()
    c1 = {p: proc_cpu(p) for p in ps}
    t1 = {p: thread_stats(p) for p in ps}
    for q in tracers:
        q.send_signal(signal.SIGINT)
        q.wait()
    per = {p: (c1[p][0] - c0[p][0], c1[p][1] - c0[p][1]) for p in ps}
    total = sum(u + s for u, s in per.values())
    m = res.messages
    print(f"workers {n}: {res.rate:.0f} msg/s, {total / m * 1e6:.0f} us/msg; "
          + "; ".join(f"pid {p} user {u / m * 1e6:.0f} sys {s / m * 1e6:.0f}" for p, (u, s) in per.items())
          + f"; sessions per worker {'/'.join(map(str, balance))} [load {os.getloadavg()[0]:.1f}]", flush=True)
    for p in ps:
        for t, (c, v, nv) in t1[p].items():
            a = t0[p].get(t, (0, 0, 0))
            if c - a[0] or v - a[1] > 100:
                print(f"    pid {p} tid {t}: {(c - a[0]) / B.CLK_TCK / m * 1e6:.0f} us/msg, "
                      f"context switches {v - a[1]} voluntary, {nv - a[2]} involuntary", flush=True)


def main() -> None:
    tree, workers, rounds = Path(sys.argv[1]), [int(x) for x in sys.argv[2].split(",")], int(sys.argv[3])
    messages = int(sys.argv[4]) if len(sys.argv) > 4 else 1000
    workdir = Path(tempfile.mkdtemp(prefix="pop3-threads-"))
    (port,) = B.free_ports(1)
    conf, fill = B.write_config(workdir, port, 10)
    users = B.fill_deployed(fill, 10, messages, 5000)
    clients = B.Clients(10)
    try:
        for _ in range(rounds):
            for n in workers:
                srv = B.Serve(tree, conf, workdir, n, f"ours{n}")
                srv.start()
                try:
                    one_round(srv, clients, port, users, n)
                finally:
                    srv.stop()
    finally:
        clients.close()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
