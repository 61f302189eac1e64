#!/usr/bin/env python3
"""SMTP beside the reference, in one run: Postfix -> Dovecot LMTP (../shared/bench/) and our server, same load.

Both get Postfix's ``smtp-source -d`` (many messages per connection) through ``../shared/bench/smtp-load.sh``:
COUNT messages of SIZE bytes over SESSIONS sessions.  Ours is counted *durably delivered* (its 250 after DATA comes
after fsync + commit); the reference is counted end to end (every message in the Maildir's ``new/``, which Dovecot
writes after Postfix accepted and queued it), the figure issue 17 compares with.  Runs alternate (reference, ours,
reference, ours, ...), each on fresh storage; medians and the ratio per round are printed.  The reference runs as
a private instance (its own directories and ports, so other benchmark runs on the machine do not collide) and is
stopped at the end, as is everything else started here.

    .venv/bin/python scripts/bench/smtp_reference.py [--rounds 3] [--messages 2000] [--sessions 10] [--size 5120]
                                                     [--workers 1,2] [--before DIR] [--no-syncfs]
                                                     [--commit-stats] [--perf-stat]

``--workers N[,M...]`` runs the real ``mailserver serve`` instead of the in-process server: a generated configuration
(SQLite and file blobs in a fresh data directory, ``[server] workers = N``, sender authentication off as in the
in-process run, the queue runner off), one run per listed count in each round, after the reference (reference, N, M,
reference, N, M, ...); a count may end in ``r`` (``[server] reuse_port = true``) and/or ``f`` (per-file fsync, as
``--no-syncfs``), so ``--workers 2,2r,2f`` compares them in one run.  The server CPU is the supervisor's and every worker's (``/proc/PID/stat`` of each, read while
they run), and everything is stopped by its PID at the end of each run.  ``--before DIR`` also runs the server
from another checkout (a worktree of main) before each run of this one: a before/after in the same run.  ``--no-syncfs``: the blob store fsyncs each
file and directory instead of one syncfs(2) per batch (as ``scripts/bench/smtp.py --no-syncfs``).  ``--commit-stats``
prints, after each ``--workers`` run, every process's group commits (deliveries per commit, the writer's CPU per
commit), its waits for the SQLite write lock and its blob flushes (``scripts/bench/commitstats/``).  ``--perf-stat``
prints, after each ``--workers`` run, syscalls (all, and futex, epoll_wait, fdatasync, syncfs, flock, ...) and
context switches per message of the server's processes (``perf stat -p``; a thread started after the attach, half
a second before the load, is not counted) and each process's CPU split into its main thread (the reactor) and the
others (the pools).
        [--ours SPEC ...] [--database-url postgresql+psycopg://…]

By default "ours" is one server process in a child (scripts/bench/smtp.py's).  Each ``--ours SPEC`` adds a
configuration run as `mailserver serve` (scripts/bench/cluster.py), every round, right after the reference: SPEC is
``workers=N[,db=pg][,nodes=2][,reuse_port=1][,fsync=always]`` (``db=pg`` and ``nodes`` take a fresh schema of
``--database-url``; with 2 nodes HAProxy is in front).  Server CPU is that of every process of ours (supervisors
and workers), per message.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))

import smtp as bench_smtp  # noqa: E402  (scripts/bench/smtp.py: the server process)
from cluster import parse_spec  # noqa: E402  (scripts/bench/cluster.py)

SHARED = Path(os.environ.get("SHARED_BENCH", "/work/shared/bench"))
BASE = Path(os.environ.get("REFERENCE_BASEDIR", f"/tmp/smtp-reference-{os.getpid()}"))


def _free_ports(n: int) -> list[str]:
    """``n`` loopback ports free right now (other benchmark runs on the machine use the scripts' defaults)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [str(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


PORTS = dict(zip(("SMTP_PORT", "LMTP_PORT", "IMAP_PORT", "POP3_PORT"), _free_ports(4), strict=True))


def _env() -> dict:
    env = dict(os.environ, BASEDIR=str(BASE), MAILDIR=str(BASE / "mail"), NUSERS="10", **PORTS)
    return env


def _sh(*args: str, env: dict | None = None, check: bool = True) -> str:
    # Output through a file, not a pipe: the daemons the start scripts leave running keep their inherited
    # descriptors open, and a pipe would wait for them.
    with tempfile.TemporaryFile("w+") as out:
        p = subprocess.run(list(args), env=env or _env(), stdin=subprocess.DEVNULL, stdout=out,
                           stderr=subprocess.STDOUT, text=True, timeout=900)
        out.seek(0)
        text = out.read()
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: exit {p.returncode}\n{text}")
    return text


def _rate(out: str, pattern: str) -> float:
    m = re.search(pattern, out)
    if not m:
        raise RuntimeError(f"no figure in:\n{out}")
    return float(m[1])


def reference_run(args) -> float:
    """Postfix -> LMTP -> Dovecot, end to end (messages/s into the Maildir)."""
    _sh(str(SHARED / "baseline-dovecot.sh"), "reset")
    new = BASE / "mail" / "user1" / "Maildir" / "new"
    new.mkdir(parents=True, exist_ok=True)
    shutil.chown(BASE / "mail" / "user1", "mail", "mail")
    for d in (BASE / "mail" / "user1" / "Maildir", new):
        shutil.chown(d, "mail", "mail")
    env = dict(_env(), REUSE="1", WAIT_DIR=str(new), FROM="bench@example.net")
    out = _sh(str(SHARED / "smtp-load.sh"), "127.0.0.1", PORTS["SMTP_PORT"], "user1@localhost.test",
              str(args.messages), str(args.sessions), str(args.size), env=env)
    print("  reference:", " | ".join(line for line in out.splitlines() if line.strip()), flush=True)
    return _rate(out, r"delivered: \d+/\d+ msgs in \S+ after [\d.]+ s = ([\d.]+) msgs/s")


def ours_run(args) -> tuple[float, float]:
    """Our server (one process, SQLite, sender authentication off): durably delivered messages/s, CPU ms/msg."""
    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="smtp-reference-ours-") as tmp:
        q, stop = ctx.Queue(), ctx.Event()
        proc = ctx.Process(target=bench_smtp.serve, args=(tmp, q, stop, {}, 0, 0, ""))
        proc.start()
        try:
            port = q.get(timeout=120)
            cpu0 = bench_smtp.cpu_seconds(proc.pid)
            env = dict(_env(), REUSE="1", FROM="bench@example.net")
            out = _sh(str(SHARED / "smtp-load.sh"), "127.0.0.1", str(port), "user1@example.test",
                      str(args.messages), str(args.sessions), str(args.size), env=env)
            cpu = bench_smtp.cpu_seconds(proc.pid) - cpu0
        finally:
            stop.set()
            proc.join(30)
            if proc.is_alive():
                proc.kill()
                proc.join()
    rate = _rate(out, r"= ([\d.]+) msgs/s \(accepted")
    print(f"  ours:      {out.strip()} | server CPU {1000 * cpu / args.messages:.2f} ms/msg", flush=True)
    return rate, 1000 * cpu / args.messages


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except FileNotFoundError:
        return []


def _cpu(pids: list[int]) -> dict[int, float]:
    out = {}
    for pid in pids:
        try:
            out[pid] = bench_smtp.cpu_seconds(pid)
        except (FileNotFoundError, ProcessLookupError):
            pass
    return out


def serve_config(tmp: Path, workers: int, port: int, reuseport: bool = False) -> Path:
    """The configuration of one ``mailserver serve`` run (what the in-process run configures, plus workers)."""
    conf = tmp / "mailserver.toml"
    conf.write_text(
        f'hostname = "bench.example.test"\ndata_dir = "{tmp / "data"}"\n'
        f"[server]\nworkers = {workers}\n" + ("reuse_port = true\n" if reuseport else "") +
        f'[listen]\nsmtp = ["127.0.0.1:{port}"]\n'
        + '[queue]\nrun = false\n[dns]\nnameservers = ["127.0.0.1:9"]\ntimeout = 1.0\n'
        '[senderauth]\nenabled = false\n[[domain]]\nname = "example.test"\n')
    return conf


def serve_run(args, workers: int, tree: Path = HERE.parents[1], flags: str = "") -> tuple[float, float]:
    """``mailserver serve`` with ``workers`` processes (the code of checkout ``tree``; ``flags``: ``r`` reuseport,
    ``f`` per-file fsync): durably delivered messages/s and CPU ms/msg of all of them."""
    no_syncfs = args.no_syncfs or "f" in flags
    from mailserver.config import load
    from mailserver.service import open_store

    with tempfile.TemporaryDirectory(prefix="smtp-reference-serve-") as tmpname:
        tmp = Path(tmpname)
        port = int(_free_ports(1)[0])
        conf = serve_config(tmp, workers, port, "r" in flags)
        store = open_store(load(conf))
        bench_smtp.add_accounts(store)
        store.dispose()
        log_path = tmp / "serve.log"
        env = dict(os.environ, PYTHONPATH=str(tree))  # before the editable install's path
        if no_syncfs:  # every process of the server: storage/blobs.py without syncfs(2) (fsync per file)
            site = tmp / "site"
            site.mkdir()
            (site / "sitecustomize.py").write_text("import storage.blobs\nstorage.blobs._syncfs = None\n")
            env["PYTHONPATH"] = os.pathsep.join([str(site), str(tree)])
        if getattr(args, "commit_stats", False):  # scripts/bench/commitstats: group commits and write-lock waits per process
            env["COMMITSTATS_DIR"] = str(tmp / "commitstats")
            env["PYTHONPATH"] = os.pathsep.join([str(HERE / "commitstats"), env["PYTHONPATH"]])
        with open(log_path, "w") as log:
            proc = subprocess.Popen([sys.executable, "-m", "mailserver", "--config", str(conf), "serve"],
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    cwd=tree, start_new_session=True, env=env)
        pids: list[int] = [proc.pid]
        try:
            deadline = time.monotonic() + 120
            while log_path.read_text(errors="replace").count("listening smtp on") < workers:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("mailserver serve did not start:\n" + log_path.read_text()[-3000:])
                time.sleep(0.1)
            time.sleep(0.5)
            pids = [proc.pid] + (_children(proc.pid) if workers > 1 else [])
            if len(pids) != (workers + 1 if workers > 1 else 1):
                raise RuntimeError(f"expected {workers} workers, found processes {pids}")
            perf = _perf_start(pids, tmp / "perf.csv") if getattr(args, "perf_stat", False) else None
            threads0 = _thread_cpu(pids) if perf is not None else {}
            cpu0 = _cpu(pids)
            env = dict(_env(), REUSE="1", FROM="bench@example.net")
            out = _sh(str(SHARED / "smtp-load.sh"), "127.0.0.1", str(port), "user1@example.test",
                      str(args.messages), str(args.sessions), str(args.size), env=env)
            cpu1 = _cpu(pids)
            if perf is not None:
                threads1 = _thread_cpu(pids)
                _perf_stop(perf, tmp / "perf.csv", args.messages)
                print("    CPU ms/msg by thread, per process (main thread = reactor + other threads = pools): " + "; ".join(
                    f"{1000 * (t1[0] - threads0.get(pid, (0, 0))[0]) / args.messages:.2f} + "
                    f"{1000 * (t1[1] - threads0.get(pid, (0, 0))[1]) / args.messages:.2f}"
                    for pid, t1 in threads1.items()), flush=True)
        finally:
            _stop(proc, pids, conf)
        if getattr(args, "commit_stats", False):
            _print_commit_stats(tmp / "commitstats")
    if set(cpu1) != set(cpu0):
        raise RuntimeError(f"a process ended during the run: {sorted(cpu0)} -> {sorted(cpu1)}")
    per = {pid: 1000 * (cpu1[pid] - cpu0[pid]) / args.messages for pid in pids}
    cpu = sum(per.values())
    rate = _rate(out, r"= ([\d.]+) msgs/s \(accepted")
    split = " + ".join(f"{per[pid]:.2f}" for pid in pids)
    label = f"serve w={workers}{flags}" + ("" if tree == HERE.parents[1] else f" ({tree})")
    print(f"  {label}: {out.strip()} | server CPU {cpu:.2f} ms/msg ({split}: "
          f"{'supervisor + workers' if workers > 1 else 'one process'})", flush=True)
    return rate, cpu


#: What ``--perf-stat`` counts in the server's processes (all threads) over the load, per message.
PERF_EVENTS = ("raw_syscalls:sys_enter", "context-switches", "syscalls:sys_enter_futex",
               "syscalls:sys_enter_epoll_wait", "syscalls:sys_enter_fdatasync", "syscalls:sys_enter_fsync",
               "syscalls:sys_enter_syncfs", "syscalls:sys_enter_flock", "syscalls:sys_enter_write",
               "syscalls:sys_enter_sendto", "syscalls:sys_enter_recvfrom")


def _thread_cpu(pids: list[int]) -> dict[int, tuple[float, float]]:
    """Per process: (CPU seconds of its main thread, the reactor's; of all its other threads) so far (a thread
    that ended is not counted)."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for pid in pids:
        main = rest = 0.0
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            t = (int(fields[11]) + int(fields[12])) / tick
            if task.name == str(pid):
                main += t
            else:
                rest += t
        out[pid] = (main, rest)
    return out


def _perf_start(pids: list[int], out: Path) -> subprocess.Popen:
    """``perf stat`` of every event in PERF_EVENTS over ``pids`` (and their threads) until :func:`_perf_stop`."""
    p = subprocess.Popen(["perf", "stat", "-x", ",", "-o", str(out), "-e", ",".join(PERF_EVENTS),
                          "-p", ",".join(map(str, pids))], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    time.sleep(0.5)  # perf attaches to every thread before the load starts
    return p


def _perf_stop(p: subprocess.Popen, out: Path, messages: int) -> None:
    p.send_signal(signal.SIGINT)
    p.wait(timeout=30)
    counts = {}
    for line in out.read_text().splitlines():
        f = line.split(",")
        if len(f) > 2 and f[0].strip().isdigit():
            counts[f[2].split(":")[-1].removeprefix("sys_enter_")] = int(f[0])
    print("    per message (perf stat, all processes): " + ", ".join(
        f"{k} {v / messages:.2f}" for k, v in counts.items()), flush=True)


def _print_commit_stats(where: Path) -> None:
    """One line per process that delivered (scripts/bench/commitstats/sitecustomize.py, written at its exit)."""
    import json

    for path in sorted(where.glob("*.json")):
        st = json.loads(path.read_text())
        b, fl = st["batches"] or 1, st["flushes"] or 1
        print(f"    pid {path.stem}: {st['deliveries']} deliveries in {st['batches']} group commits "
              f"({st['deliveries'] / b:.2f} per commit; writer CPU {1000 * st['batch_cpu'] / b:.2f} ms, wall "
              f"{1000 * st['batch_wall'] / b:.2f} ms per commit); write lock: {st['locks']} taken, "
              f"{st['lock_waits_1ms']} waited over 1 ms, {st['lock_wait']:.2f} s waiting; {st['flushes']} blob "
              f"flushes ({1000 * st['flush_cpu'] / fl:.2f} ms CPU, {1000 * st['flush_wall'] / fl:.2f} ms wall each)",
              flush=True)


def _stop(proc: subprocess.Popen, pids: list[int], conf: Path) -> None:
    """SIGTERM the server (the supervisor stops its workers), SIGKILL it after 60 s, then SIGKILL by PID any worker
    left (one whose command line still names this run's configuration file: its PID was not reused)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for pid in pids[1:]:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if str(conf).encode() not in f.read():
                    continue
            os.kill(pid, signal.SIGKILL)
        except (FileNotFoundError, ProcessLookupError):
            continue
def cluster_run(args, spec: dict) -> tuple[float, float]:
    """`mailserver serve` as ``spec`` says: durably delivered messages/s, CPU ms/msg of all its processes."""
    from cluster import Balance, Cluster

    sys.path.insert(0, str(HERE.parents[1]))
    from tests.harness import hasher

    url = args.database_url if spec["db"] == "pg" else ""
    if spec["db"] == "pg" and not url:
        raise SystemExit("db=pg needs --database-url")
    with tempfile.TemporaryDirectory(prefix="smtp-reference-cluster-") as tmp:
        with Cluster(Path(tmp), workers=spec["workers"], nodes=spec["nodes"], database_url=url,
                     reuse_port=spec["reuse_port"], fsync=spec["fsync"], protocols=("smtp",),
                     extra_toml="[senderauth]\nenabled = false\n") as cluster:
            store = cluster.open_store()
            h = hasher().hash("x")
            for i in range(10):
                store.add_account(f"user{i}@example.test", h)
            cluster.start()
            pids = cluster.all_pids()
            cpu0 = sum(bench_smtp.cpu_seconds(p) for p in pids)
            balance = Balance(cluster.worker_pids(), {n.ports["smtp"] for n in cluster.nodes}).start()
            env = dict(_env(), REUSE="1", FROM="bench@example.net")
            out = _sh(str(SHARED / "smtp-load.sh"), "127.0.0.1", str(cluster.port("smtp")), "user1@example.test",
                      str(args.messages), str(args.sessions), str(args.size), env=env)
            balance.stop()
            cpu = sum(bench_smtp.cpu_seconds(p) for p in pids) - cpu0
    rate = _rate(out, r"= ([\d.]+) msgs/s \(accepted")
    print(f"  ours {spec_label(spec)}: {out.strip()} | server CPU {1000 * cpu / args.messages:.2f} ms/msg",
          flush=True)
    if spec["workers"] > 1 or spec["nodes"] > 1:
        print(f"    per worker: {balance.summary()}", flush=True)
    return rate, 1000 * cpu / args.messages


def spec_label(spec: dict) -> str:
    from cluster import describe

    return describe(spec["workers"], spec["nodes"], "pg" if spec["db"] == "pg" else "", spec["reuse_port"],
                    spec["fsync"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--sessions", type=int, default=10)
    ap.add_argument("--size", type=int, default=5120)
    ap.add_argument("--workers", default="", metavar="N[,M...]",
                    help="run `mailserver serve` with [server] workers = N (then M, ...) instead of the in-process "
                         "server; a count may end in r ([server] reuse_port = true) and/or f (per-file fsync): 2,2r,2f")
    ap.add_argument("--before", default="", metavar="DIR",
                    help="with --workers: also run the server from checkout DIR (e.g. a worktree of main) before each "
                         "run of this one, for a before/after in the same run")
    ap.add_argument("--no-syncfs", action="store_true", help="with --workers: fsync each blob file and directory instead of syncfs(2)")
    ap.add_argument("--perf-stat", action="store_true",
                    help="with --workers: count syscalls (all, futex, epoll_wait, fdatasync, syncfs, flock, ...) and "
                         "context switches per message in the server's processes (perf stat -p)")
    ap.add_argument("--commit-stats", action="store_true",
                    help="with --workers: count each process's group commits, write-lock waits and blob flushes "
                         "(scripts/bench/commitstats) and print them after each run")
    ap.add_argument("--ours", action="append", default=[], metavar="SPEC",
                    help="a `mailserver serve` configuration to run each round (see above); repeatable")
    ap.add_argument("--database-url", default=os.environ.get("MAILSERVER_TEST_DATABASE_URL", ""),
                    help="PostgreSQL for db=pg (a fresh schema per run; default $MAILSERVER_TEST_DATABASE_URL)")
    args = ap.parse_args()
    counts = [re.fullmatch(r"(\d+)([rf]*)", x.strip()) for x in args.workers.split(",") if x.strip()]
    if not all(counts):
        ap.error(f"--workers: expected counts like 1,2,2r,2f, not {args.workers!r}")
    specs = [parse_spec(t) for t in args.ours]
    BASE.mkdir(parents=True, exist_ok=True)
    started = []
    try:
        _sh(str(SHARED / "baseline-dovecot.sh"), "start")
        started.append("baseline-dovecot.sh")
        _sh(str(SHARED / "baseline-postfix.sh"), "start")
        started.append("baseline-postfix.sh")
        here = HERE.parents[1]
        trees = [Path(args.before).resolve(), here] if args.before else [here]
        # (the before tree may not know [server] reuse_port: r variants run from this checkout only)
        runs = [(int(m[1]), m[2], t) for m in counts for t in trees if t == here or "r" not in m[2]]
        kinds = [f"serve w={n}{f}" + (" before" if t != here else "") for n, f, t in runs] or ["ours"]
        ref: list[float] = []
        ours: dict[str, list[float]] = {k: [] for k in kinds}
        cpu: dict[str, list[float]] = {k: [] for k in kinds}
        if specs:
            by_spec: dict[str, list[tuple[float, float, float]]] = {spec_label(sp): [] for sp in specs}
            for i in range(args.rounds):
                print(f"round {i + 1} (load average {os.getloadavg()[0]:.1f})", flush=True)
                ref.append(reference_run(args))
                for sp in specs:
                    r, c = cluster_run(args, sp)
                    by_spec[spec_label(sp)].append((r, c, r / ref[-1]))
                    print(f"  ratio ours / reference: {r / ref[-1]:.2f} (load average {os.getloadavg()[0]:.1f})",
                          flush=True)
            print(f"SMTP {args.messages} x {args.size} B over {args.sessions} sessions, {args.rounds} rounds; "
                  f"Postfix->Dovecot LMTP {', '.join(f'{x:.0f}' for x in ref)} msg/s end to end")
            for label, runs in by_spec.items():
                print(f"  {label}: {', '.join(f'{r:.0f}' for r, _, _ in runs)} msg/s durably delivered, CPU "
                      f"{', '.join(f'{c:.2f}' for _, c, _ in runs)} ms/msg, ratio "
                      f"{', '.join(f'{x:.2f}' for _, _, x in runs)}")
            return 0
        for i in range(args.rounds):
            print(f"round {i + 1} (load average {' '.join(f'{x:.1f}' for x in os.getloadavg())})", flush=True)
            ref.append(reference_run(args))
            for kind, (n, f, t) in zip(kinds, runs or [(0, "", here)], strict=True):
                r, c = serve_run(args, n, t, f) if counts else ours_run(args)
                ours[kind].append(r)
                cpu[kind].append(c)
                print(f"  ratio {kind} / reference: {r / ref[-1]:.2f}", flush=True)
        print(f"SMTP {args.messages} x {args.size} B over {args.sessions} sessions, {args.rounds} rounds"
              f"{' (per-file fsync, no syncfs)' if args.no_syncfs else ''}; Postfix->Dovecot LMTP "
              f"{statistics.median(ref):.0f} msg/s end to end ({min(ref):.0f}-{max(ref):.0f}); load average now "
              f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")
        for kind in kinds:
            ratios = [o / r for o, r in zip(ours[kind], ref, strict=True)]
            print(f"  {kind}: {statistics.median(ours[kind]):.0f} msg/s durably delivered "
                  f"({min(ours[kind]):.0f}-{max(ours[kind]):.0f}), server CPU {statistics.median(cpu[kind]):.2f} "
                  f"ms/msg ({min(cpu[kind]):.2f}-{max(cpu[kind]):.2f}); ratio per round "
                  f"{', '.join(f'{x:.2f}' for x in ratios)} (median {statistics.median(ratios):.2f}; aim 2.0)")
        return 0
    finally:
        for script in reversed(started):
            _sh(str(SHARED / script), "stop", check=False)
        time.sleep(1)
        shutil.rmtree(BASE, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
