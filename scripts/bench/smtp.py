#!/usr/bin/env python3
"""SMTP delivery benchmark: N parallel sessions send 5 KB messages into local mailboxes.

Reports messages per second *durably delivered* (each counted only on its 250 after DATA, which the server sends
after fsync + commit) and the server's peak RSS.  The server runs in a child process on 127.0.0.1 with a fresh data
directory; everything started here is stopped at the end.

    .venv/bin/python scripts/bench/smtp.py [--sessions 10] [--messages 2000] [--size 5120] [--scan]
                                           [--checks off|on|both] [--repeat N] [--dns-cache N]
                                           [--warmup 200] [--fresh-store]

A run measures a store in its steady state, the same way for every kind of run: the blob store's 65,792 two-level
directories (``blobs/ab/cd``) are made once per invocation, as a store that has held some mail has them, and every
run's ``blobs`` is that tree (a symbolic link; a fresh store makes a directory for nearly every blob it writes, and
that file-system work moved the unchecked figure by a factor of two between runs); then ``--warmup`` messages are sent over the same sessions before the timed ones
(caches, the DNS answers of the checks, the account-state copies, the first-time imports).  The schema is made
in a process of its own before the server starts, as a restarted server finds its store (a migration leaves
Alembic in the memory of the process that ran it).  ``--fresh-store`` skips the directories and the schema, ``--warmup 0`` the warm-up (the figures of the runs before 2026-12-02 10:30 had neither).

``--scan`` runs the same load four times: without content checks, with clamd, with rspamd, with both (private
instances of Debian's packages, started on loopback as the tests start them, stopped at the end), and prints the
figures of each run (sender authentication off).

``--checks on`` runs the built-in checks: sender authentication (``[senderauth]``: iprev, SPF for HELO and MAIL
FROM, DKIM, DMARC, ARC) and the DNS lists (two DNSBL zones, a DNSWL zone that lists the client, an RHSBL zone), with
every lookup answered by a DNS server on loopback in another child process (tests/dnsserver.py): the sender's domain
publishes SPF, DMARC p=reject and a DKIM key, every message carries a valid RSA signature, and 127.0.0.1 has a
forward-confirmed PTR.  (Greylisting is not part of it: it defers first attempts by design.)  ``both`` runs without, then with (``--repeat N`` times, alternating), and
prints what the checks cost: in messages/s, and in server CPU per message (the DNS server's included), which is
what bounds a saturated server and is less disturbed by other load on the machine.

For a side-by-side figure with Postfix + Dovecot see /work/shared/bench/README.md (run by hand).
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import os
import signal
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


SENDER_DOMAIN = "example.net"
HELO = "mx.example.net"


def dns_zones(dkim_p: str) -> dict:
    """What the checks ask, all answered: SPF, DMARC, the DKIM key, PTR and A of the client."""
    return {
        SENDER_DOMAIN: {"": [("TXT", "v=spf1 ip4:127.0.0.1 -all")], "_dmarc": [("TXT", "v=DMARC1; p=reject")],
                        "mx": [("A", "127.0.0.1"), ("TXT", "v=spf1 a -all")],
                        "bench._domainkey": [("TXT", *[f"v=DKIM1; k=rsa; p={dkim_p}"[i:i + 255]
                                                       for i in range(0, len(dkim_p) + 20, 255)])]},
        "127.in-addr.arpa": {"1.0.0": [("PTR", HELO)]},
        # The DNS lists (RFC 5782): the client is in no block list (NXDOMAIN), in the allow list, and the sender's
        # domain in no RHSBL zone.
        "bl.bench.test": {"2.0.0.127": [("A", "127.0.0.2")]},
        "bl2.bench.test": {"2.0.0.127": [("A", "127.0.0.2")]},
        "wl.bench.test": {"1.0.0.127": [("A", "127.0.10.2")]},
        "rhs.bench.test": {"spammer.test": [("A", "127.0.0.2")]},
    }


#: The DNS lists of ``--checks on`` (zones served by dns_zones).
DNS_LISTS = {"dnsbl": [{"zone": "bl.bench.test", "weight": 4.0}, {"zone": "bl2.bench.test", "weight": 2.0}],
             "dnswl": [{"zone": "wl.bench.test", "weight": -1.0}],
             "rhsbl": [{"zone": "rhs.bench.test", "weight": 2.0}]}


def serve_dns(zones: dict, port_queue, stop_event) -> None:
    from twisted.internet import reactor

    from tests.dnsserver import DnsTestServer

    srv = DnsTestServer(zones)

    def start():
        srv.start()
        port_queue.put(srv.port)

    def watch():
        stop_event.wait()
        reactor.callFromThread(lambda: srv.stop().addBoth(lambda _: reactor.stop()))

    reactor.callWhenRunning(start)
    threading.Thread(target=watch, daemon=True).start()
    reactor.run(installSignalHandlers=False)


def profile_threads(out: str):
    """cProfile every thread of this process (the reactor's and each pool thread started from now on); returns
    the function that writes their merged statistics to ``out`` once the threads have ended."""
    import cProfile
    import pstats

    profiles = []
    lock = threading.Lock()
    run = threading.Thread.run

    def profiled_run(self):
        p = cProfile.Profile(time.thread_time)
        with lock:
            profiles.append((self.name, p))
        p.enable()
        try:
            run(self)
        finally:
            p.disable()

    threading.Thread.run = profiled_run
    main = cProfile.Profile(time.thread_time)
    main.enable()

    def dump():
        main.disable()
        with lock:
            stats = pstats.Stats(main)
            for _, p in profiles:
                stats.add(p)
            stats.dump_stats(out)
            by_kind: dict[str, pstats.Stats] = {}  # the threads of one pool together: FILE.<pool>
            for name, p in profiles:
                kind = name.rstrip("-0123456789") or "thread"
                if kind in by_kind:
                    by_kind[kind].add(p)
                else:
                    by_kind[kind] = pstats.Stats(p)
            pstats.Stats(main).dump_stats(out + ".reactor")
            for kind, st in by_kind.items():
                st.dump_stats(f"{out}.{kind.replace('/', '_')}")

    return dump


def thread_cpu() -> dict[str, float]:
    """CPU seconds (user + system) of each kind of thread of this process so far: the reactor ("main"), each pool
    (its threads together), "other"."""
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


def answer_snapshots(requests, answers) -> None:
    """Put thread_cpu() into ``answers`` for each request read from ``requests`` (--threads)."""
    def loop():
        while requests.get() is not None:
            answers.put(thread_cpu())

    threading.Thread(target=loop, daemon=True, name="snapshots").start()


def precreate_blob_dirs(root: str) -> None:
    """The blob store's two-level directory tree (``storage.blobs.FileBlobStore.path``) under ``root``, as a store
    that has held some mail has it (see the module docstring)."""
    hexdigits = [f"{i:02x}" for i in range(256)]
    for a in hexdigits:
        top = os.path.join(root, a)
        os.makedirs(top, exist_ok=True)
        for b in hexdigits:
            os.mkdir(os.path.join(top, b))


def serve(data_dir: str, port_queue, stop_event, extra: dict, dns_port: int = 0, dns_cache: int = 10000,
          profile: str = "", snapshots=None) -> None:
    dump = profile_threads(profile) if profile else None
    if snapshots is not None:
        answer_snapshots(*snapshots)
    if os.environ.get("BENCH_NO_SYNCFS"):  # --no-syncfs: fsync each blob file and directory instead of syncfs(2)
        import storage.blobs

        storage.blobs._syncfs = None
    import server_reactor

    server_reactor.install()  # before the reactor import below
    from twisted.internet import reactor

    from mailserver import config as config_mod
    from mailserver.auth import PasswordHasher
    from mailserver.service import MailServer

    extra = dict(extra)
    train = extra.pop("_train_bayes", 0)
    table = {"hostname": "bench.example.test", "data_dir": data_dir, "listen": {"smtp": ["127.0.0.1:0"]},
             "domain": [{"name": "example.test"}], **extra}
    if dns_port:
        table["dns"] = {"nameservers": [f"127.0.0.1:{dns_port}"], "timeout": 5.0}
        table["senderauth"] = {"dns_cache": dns_cache}
    elif "senderauth" in {f.name for f in dataclasses.fields(config_mod.Config)}:  # compare.py's older trees lack it
        table["senderauth"] = {"enabled": False}
    cfg = config_mod.load_dict(table)
    server = MailServer(cfg, reactor)
    server.startService()
    h = PasswordHasher("argon2", low_cost=True).hash("x")
    for i in range(10):
        acct = server.store.add_account(f"user{i}@example.test", h)
        if train:  # the classifier of every account votes: tokenizing and token reads on every message
            from mailserver.inbound.classifier import token_ids
            from tests.bayes.corpus import Corpus

            corpus = Corpus()
            for n in range(train):
                for kind in ("spam", "ham"):
                    server.store.bayes_learn(acct.id, f"{kind}{n}", kind, token_ids(corpus.message(kind, n)))
    port_queue.put(server.port("smtp"))

    def watch():
        stop_event.wait()
        reactor.callFromThread(lambda: server.stopService().addBoth(lambda _: reactor.stop()))

    threading.Thread(target=watch, daemon=True).start()
    reactor.run(installSignalHandlers=False)
    if dump is not None:
        dump()


def prepare_schema(data_dir: str) -> None:
    """Migrate the store in ``data_dir`` (the server then starts on a schema at every head)."""
    from mailserver import config as config_mod
    from mailserver.service import open_store

    cfg = config_mod.load_dict({"hostname": "bench.example.test", "data_dir": data_dir,
                                "domain": [{"name": "example.test"}]})
    open_store(cfg).engine.dispose()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def reset_peak_rss(pid: int) -> bool:
    """Start the peak RSS anew (Linux: ``5`` into clear_refs), so it shows the load, not start-up (the server
    computes its argon2 dummy hash at start, a transient of the hash's memory cost)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def client(port: int, n: int, body: bytes, idx: int, done: list, errors: list, warmup: int = 0,
           barrier: threading.Barrier | None = None) -> None:
    """One session: ``warmup`` messages, then (after every session's warm-up: ``barrier``) ``n`` counted ones."""
    try:
        s = socket.create_connection(("127.0.0.1", port))
        f = s.makefile("rb")

        def replies(k):
            for _ in range(k):
                while True:
                    line = f.readline()
                    if not line:
                        raise ConnectionError("closed")
                    if line[3:4] == b" ":
                        break
                if line[:1] not in (b"2", b"3"):
                    raise RuntimeError(line)

        replies(1)
        s.sendall(b"EHLO " + HELO.encode() + b"\r\n")
        replies(1)
        rcpt = f"user{idx % 10}@example.test".encode()
        for i in range(warmup + n):
            if i == warmup and barrier is not None:
                barrier.wait()
            # RFC 2920: MAIL, RCPT and DATA in one packet, then the body.
            s.sendall(b"MAIL FROM:<bench@example.net>\r\nRCPT TO:<" + rcpt + b">\r\nDATA\r\n")
            replies(3)
            s.sendall(body + b".\r\n")
            replies(1)
            if i >= warmup:
                done[idx] += 1
        s.sendall(b"QUIT\r\n")
        s.close()
    except Exception as e:  # reported by main
        errors.append(e)
        if barrier is not None:
            barrier.abort()


def load(port: int, per: int, body: bytes, done: list, errors: list, warm: int, start) -> None:
    """``len(done)`` sessions of ``warm`` + ``per`` messages each; ``start()`` runs once every session is warm
    (the timed part begins); raises if a session failed."""
    barrier = threading.Barrier(len(done), action=start)
    threads = [threading.Thread(target=client, args=(port, per, body, i, done, errors, warm, barrier))
               for i in range(len(done))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"client failed: {errors[:3]}")


def add_accounts(store) -> None:
    """The ten accounts the load delivers to (user0 ... user9)."""
    from mailserver.auth import PasswordHasher

    h = PasswordHasher("argon2", low_cost=True).hash("x")
    for i in range(10):
        store.add_account(f"user{i}@example.test", h)


def signed_body(size: int) -> tuple[bytes, str]:
    """A message of about ``size`` bytes with a valid DKIM signature of example.net, and the key's p= value."""
    import base64

    import dkim
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption())
    p = base64.b64encode(key.public_key().public_bytes(serialization.Encoding.DER,
                                                       serialization.PublicFormat.SubjectPublicKeyInfo)).decode()
    line = b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.\r\n"
    body = (b"From: bench@example.net\r\nTo: user@example.test\r\nSubject: bench\r\n"
            b"Date: Mon, 01 Jan 2024 00:00:00 +0000\r\nMessage-ID: <bench@example.net>\r\n\r\n"
            + line * (size // len(line)))
    sig = dkim.sign(body, b"bench", SENDER_DOMAIN.encode(), pem, canonicalize=(b"relaxed", b"relaxed"),
                    include_headers=[b"from", b"to", b"subject", b"date", b"message-id"])
    return sig + body, p


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", type=int, default=10)
    ap.add_argument("--messages", type=int, default=2000, help="total messages")
    ap.add_argument("--size", type=int, default=5 * 1024)
    ap.add_argument("--scan", action="store_true", help="also run with rspamd and clamd checking every message")
    ap.add_argument("--checks", choices=("off", "on", "both"), default="off",
                    help="sender authentication checks (DNS answered on loopback)")
    ap.add_argument("--bayes", action="store_true",
                    help="run with the built-in classifier off, on (accounts untrained) and on with every account "
                         "trained (30 + 30 messages), and print what it costs")
    ap.add_argument("--warmup", type=int, default=200,
                    help="messages sent (over the same sessions) before the timed ones, not counted (0: none)")
    ap.add_argument("--fresh-store", action="store_true",
                    help="do not make the blob store's directories before the server starts (a fresh store)")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each kind (alternating), medians reported")
    ap.add_argument("--lists", choices=("on", "off"), default="on",
                    help="the DNS lists (DNSBL, DNSWL, RHSBL) with the checks on")
    ap.add_argument("--dns-cache", type=int, default=10000,
                    help="[senderauth] dns_cache with the checks on (0: every lookup goes to the DNS server)")
    ap.add_argument("--callgrind", default="", metavar="DIR",
                    help="run the server under valgrind --tool=callgrind (its output in DIR): instruction counts, "
                         "which other load on the machine does not change; run two sizes and take the difference "
                         "for a per-message figure without start-up (scripts/bench/callgrind_total.sh)")
    ap.add_argument("--no-syncfs", action="store_true",
                    help="the blob store flushes each file and directory (fdatasync/fsync) instead of one syncfs(2) "
                         "of the file system (which also waits for every other writer's dirty data on it)")
    ap.add_argument("--profile", default="", metavar="FILE",
                    help="cProfile (CPU time of each thread) every thread of the server (start-up and stop included) into FILE (pstats; "
                         "with several runs FILE gets the run's kind and number); figures then include its overhead")
    ap.add_argument("--workers", type=int, default=0, metavar="N",
                    help="run the real `mailserver serve` with [server] workers = N (the supervisor and N worker "
                         "processes; the product's default is one per core) instead of the in-process server; the "
                         "same configuration, accounts, DNS server and load; server CPU is that of every process")
    ap.add_argument("--threads", action="store_true",
                    help="also print the server's CPU per message of each kind of thread (the reactor, each pool) "
                         "during the load (from /proc, unprofiled)")
    args = ap.parse_args()
    if args.no_syncfs:
        os.environ["BENCH_NO_SYNCFS"] = "1"  # the spawned server reads it
    body, dkim_p = signed_body(args.size)
    with tempfile.TemporaryDirectory(prefix="smtp-bench-blobs-") as tree:
        if not args.fresh_store:
            precreate_blob_dirs(tree)
            args.blob_tree = tree
        return runs(args, body, dkim_p)


def runs(args, body: bytes, dkim_p: str) -> int:
    if args.scan:
        return scan_runs(args, body)
    if args.bayes:
        return bayes_runs(args, body)
    results: dict[str, list[tuple[float, float]]] = {"off": [], "on": []}
    for _ in range(args.repeat):
        for checks in (("off", "on") if args.checks == "both" else (args.checks,)):
            got = run(args, body, dkim_p if checks == "on" else "")
            if got is None:
                return 1
            results[checks].append(got)
    if results["off"] and results["on"]:
        def median(xs):
            return sorted(xs)[len(xs) // 2]

        off_rate, on_rate = median([r for r, _ in results["off"]]), median([r for r, _ in results["on"]])
        off_cpu, on_cpu = median([c for _, c in results["off"]]), median([c for _, c in results["on"]])
        print(f"medians of {args.repeat}: {off_rate:.0f} -> {on_rate:.0f} msg/s "
              f"(checks cost {100 * (1 - on_rate / off_rate):.0f}% of throughput); server CPU "
              f"{1000 * off_cpu:.2f} -> {1000 * on_cpu:.2f} ms/msg (checks cost {100 * (1 - off_cpu / on_cpu):.0f}% "
              f"of CPU-bound throughput)")
    return 0


def bayes_runs(args, body: bytes) -> int:
    """The built-in classifier off, on with untrained accounts, on with trained ones (alternating, medians)."""
    kinds = {"off": {"antispam": {"bayes": False}}, "untrained": {}, "trained": {"_train_bayes": 30}}
    results: dict[str, list[float]] = {k: [] for k in kinds}
    for _ in range(args.repeat):
        for name, extra in kinds.items():
            got = run(args, body, "", extra)
            if got is None:
                return 1
            results[name].append(got[0])
    med = {k: sorted(v)[len(v) // 2] for k, v in results.items()}
    print(f"bayes medians of {args.repeat}: off {med['off']:.0f}, untrained {med['untrained']:.0f} "
          f"({100 * (1 - med['untrained'] / med['off']):.0f}% cost), trained {med['trained']:.0f} msg/s "
          f"({100 * (1 - med['trained'] / med['off']):.0f}% cost)")
    return 0


def scan_runs(args, body: bytes) -> int:
    """Without content checks, with clamd, with rspamd, with both (sender authentication off)."""
    from tests.inbound.daemons import launch_clamd, launch_rspamd, stop_pid, wait_ready

    with tempfile.TemporaryDirectory(prefix="smtp-bench-daemons-") as tmp:
        daemons = []
        try:
            for launch, name in ((lambda d: launch_rspamd(d, workers=os.cpu_count() or 1), "rspamd"),
                                 (launch_clamd, "clamd")):
                d = Path(tmp) / name
                d.mkdir()
                daemons.append(launch(d))
            for d in daemons:
                wait_ready(d)
            rspamd, clamd = daemons
            spam, virus = {"antispam": {"rspamd": rspamd.address}}, {"antivirus": {"clamd": clamd.address}}
            failed = [run(args, body, "", scan) is None for scan in ({}, virus, spam, {**virus, **spam})]
            return 1 if any(failed) else 0
        finally:
            for d in daemons:
                stop_pid(d.pid)


def callgrind_wrapper(tmp: str, out_dir: str) -> str:
    """An executable that starts this interpreter under callgrind (multiprocessing spawns the server with it)."""
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(tmp, "python-under-callgrind")
    with open(path, "w") as f:
        f.write(f"#!/bin/sh\nexec valgrind --tool=callgrind --callgrind-out-file={os.path.abspath(out_dir)}"
                f"/callgrind.out.%p {sys.executable} \"$@\"\n")
    os.chmod(path, 0o755)
    return path


def run(args, body: bytes, dkim_p: str, extra: dict | None = None) -> tuple[float, float] | None:
    """One benchmark run; sender authentication is on when ``dkim_p`` is given (a DNS server is started for it);
    ``extra`` is more of the server's configuration (the content checks of ``--scan``)."""
    extra = dict(extra or {})
    scanned = "+".join(k for k in ("antivirus", "antispam") if k in extra)
    if dkim_p and args.lists == "on":
        extra["antispam"] = {**extra.get("antispam", {}), **DNS_LISTS}
    if getattr(args, "workers", 0):
        return run_workers(args, body, dkim_p, extra)
    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="smtp-bench-") as tmp:
        q, stop = ctx.Queue(), ctx.Event()
        dns_proc = None
        dns_port = 0
        if dkim_p:
            dns_q = ctx.Queue()
            dns_proc = ctx.Process(target=serve_dns, args=(dns_zones(dkim_p), dns_q, stop))
            dns_proc.start()
            dns_port = dns_q.get(timeout=60)
        profile = ""
        if args.profile:
            run.count = getattr(run, "count", 0) + 1
            profile = args.profile if run.count == 1 else f"{args.profile}.{run.count}"
        if getattr(args, "blob_tree", None):
            os.symlink(args.blob_tree, os.path.join(tmp, "blobs"))
            # The schema too, as a server restarted on its store finds it (in a process of its own: a migration
            # leaves Alembic in the memory of the process that ran it).
            prep = ctx.Process(target=prepare_schema, args=(tmp,))
            prep.start()
            prep.join(120)
        snapshots = (ctx.Queue(), ctx.Queue()) if getattr(args, "threads", False) else None
        proc = ctx.Process(target=serve, args=(tmp, q, stop, extra, dns_port, args.dns_cache, profile)
                           + ((snapshots,) if snapshots is not None else ()))
        if args.callgrind:
            ctx.set_executable(callgrind_wrapper(tmp, args.callgrind))
        try:
            proc.start()
        finally:
            ctx.set_executable(sys.executable)
        try:
            port = q.get(timeout=1800 if args.callgrind else 60)
            reset_peak_rss(proc.pid)
            per = args.messages // args.sessions
            warm = -(-getattr(args, "warmup", 0) // args.sessions)
            done, errors = [0] * args.sessions, []
            marks: dict = {}

            def measure_from_here():
                """Run by the barrier once every session is warm: the timed part starts."""
                if snapshots is not None:
                    snapshots[0].put(1)
                    marks["th0"] = snapshots[1].get(timeout=60)
                marks["cpu0"] = cpu_seconds(proc.pid) + (cpu_seconds(dns_proc.pid) if dns_proc else 0.0)
                marks["t0"] = time.perf_counter()

            load(port, per, body, done, errors, warm, measure_from_here)
            th0, cpu0, t0 = marks.get("th0"), marks["cpu0"], marks["t0"]
            elapsed = time.perf_counter() - t0
            cpu = cpu_seconds(proc.pid) + (cpu_seconds(dns_proc.pid) if dns_proc else 0.0) - cpu0
            rss = peak_rss_kib(proc.pid)
            if snapshots is not None:
                snapshots[0].put(1)
                th1 = snapshots[1].get(timeout=60)
                snapshots[0].put(None)
                n = max(sum(done), 1)
                print("  server CPU per message by thread: " + ", ".join(
                    f"{k} {1000 * (th1[k] - th0.get(k, 0.0)) / n:.2f}" for k in sorted(th1)
                    if th1[k] - th0.get(k, 0.0) > 0) + " ms")
        finally:
            stop.set()
            for p in (proc, dns_proc):
                if p is None:
                    continue
                p.join(900 if args.callgrind else 30)
                if p.is_alive():
                    p.kill()
                    p.join()
    total = sum(done)
    cache = f" dns_cache={args.dns_cache} lists={args.lists}" if dkim_p else ""
    scanned = "+".join(k for k in ("antivirus", "antispam", "_train_bayes") if k in extra)
    scanned = f" content={scanned}" if scanned else ""
    print(f"checks={'on' if dkim_p else 'off'}{cache}{scanned} sessions={args.sessions} messages={total} size={len(body)}B "
          f"elapsed={elapsed:.2f}s rate={total / elapsed:.0f} msg/s (durably delivered) "
          f"server_cpu={1000 * cpu / max(total, 1):.2f} ms/msg server_peak_rss={rss / 1024:.0f} MiB")
    if errors:
        print(f"errors: {errors[:3]}", file=sys.stderr)
        return None
    return total / elapsed, cpu / max(total, 1)


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"no TOML for {v!r}")


def serve_toml(table: dict) -> str:
    """``table`` (top-level scalars, then one [section] per dict of scalars, lists and inline tables) as TOML."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in table.items() if not isinstance(v, dict)]
    for k, v in table.items():
        if isinstance(v, dict):
            lines.append(f"[{k}]")
            lines.extend(f"{name} = {_toml_value(x)}" for name, x in v.items())
    return "\n".join(lines) + "\n"


def _process_tree(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [pid] + [int(x) for x in f.read().split()]
    except FileNotFoundError:
        return [pid]


def _check_delivered(conf: Path, checked: bool) -> None:
    """The last message delivered by ``mailserver serve`` carries our Authentication-Results with dkim=pass
    exactly when the checks were on (the workers ran them, not just the in-process server)."""
    import sqlalchemy as sa

    from mailserver.config import load as load_config
    from mailserver.service import open_store

    store = open_store(load_config(conf))
    try:
        with store.transaction(write=False) as conn:
            blob_id = conn.execute(sa.text("SELECT blob_id FROM messages ORDER BY id DESC LIMIT 1")).scalar()
        head = store.blobs.read(blob_id)[:4096]
    finally:
        store.dispose()
    stamped = b"Authentication-Results: bench.example.test;" in head and b"dkim=pass" in head
    if stamped != checked:
        raise RuntimeError(f"checks {'on' if checked else 'off'} but the delivered message's header is:\n"
                           + head.split(b"\r\n\r\n")[0].decode(errors="replace"))


def run_workers(args, body: bytes, dkim_p: str, extra: dict) -> tuple[float, float] | None:
    """:func:`run` against ``mailserver serve`` with ``[server] workers = args.workers``: the configuration
    :func:`serve` makes (with the checks: the DNS server, ``[dns]``, ``[senderauth]``, the DNS lists), the same
    ten accounts, client and warm-up; server CPU of the supervisor and every worker (``/proc``), everything stopped
    by its PID at the end."""
    import subprocess

    from mailserver.config import load as load_config
    from mailserver.service import open_store

    if extra.get("_train_bayes"):
        raise SystemExit("--workers: --bayes is not supported")
    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="smtp-bench-serve-") as tmpname:
        tmp = Path(tmpname)
        stop = ctx.Event()
        dns_proc = None
        table: dict = {"hostname": "bench.example.test", "data_dir": str(tmp)}
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        sock.close()
        table["server"] = {"workers": args.workers}
        table["listen"] = {"smtp": [f"127.0.0.1:{port}"]}
        if dkim_p:
            dns_q = ctx.Queue()
            dns_proc = ctx.Process(target=serve_dns, args=(dns_zones(dkim_p), dns_q, stop))
            dns_proc.start()
            table["dns"] = {"nameservers": [f"127.0.0.1:{dns_q.get(timeout=60)}"], "timeout": 5.0}
            table["senderauth"] = {"dns_cache": args.dns_cache}
        else:
            table["senderauth"] = {"enabled": False}
        table.update(extra)
        conf = tmp / "mailserver.toml"
        conf.write_text(serve_toml(table) + '[[domain]]\nname = "example.test"\n')
        if getattr(args, "blob_tree", None):
            os.symlink(args.blob_tree, tmp / "blobs")
        store = open_store(load_config(conf))
        add_accounts(store)
        store.dispose()
        log_path = tmp / "serve.log"
        env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
        if os.environ.get("BENCH_NO_SYNCFS"):
            site = tmp / "site"
            site.mkdir()
            (site / "sitecustomize.py").write_text("import storage.blobs\nstorage.blobs._syncfs = None\n")
            env["PYTHONPATH"] = os.pathsep.join([str(site), env["PYTHONPATH"]])
        with open(log_path, "w") as log:
            proc = subprocess.Popen([sys.executable, "-m", "mailserver", "--config", str(conf), "serve"],
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True, env=env)
        pids = [proc.pid]
        errors: list = []
        done = [0] * args.sessions
        try:
            deadline = time.monotonic() + 120
            while log_path.read_text(errors="replace").count("listening smtp on") < args.workers:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("mailserver serve did not start:\n" + log_path.read_text()[-3000:])
                time.sleep(0.1)
            time.sleep(0.5)
            pids = _process_tree(proc.pid) if args.workers > 1 else [proc.pid]
            if len(pids) != (args.workers + 1 if args.workers > 1 else 1):
                raise RuntimeError(f"expected {args.workers} workers, found processes {pids}")
            counted = pids + ([dns_proc.pid] if dns_proc else [])
            per = args.messages // args.sessions
            warm = -(-getattr(args, "warmup", 0) // args.sessions)
            marks: dict = {}

            def measure_from_here():
                marks["cpu0"] = sum(cpu_seconds(p) for p in counted)
                marks["client0"] = time.process_time()
                marks["t0"] = time.perf_counter()

            load(port, per, body, done, errors, warm, measure_from_here)
            elapsed = time.perf_counter() - marks["t0"]
            cpu = sum(cpu_seconds(p) for p in counted) - marks["cpu0"]
            client_cpu = time.process_time() - marks["client0"]
        finally:
            stop.set()
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            for pid in pids[1:]:  # a worker left behind (its command line names this run's configuration)
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        if str(conf).encode() in f.read():
                            os.kill(pid, signal.SIGKILL)
                except (FileNotFoundError, ProcessLookupError):
                    pass
            if dns_proc is not None:
                dns_proc.join(30)
                if dns_proc.is_alive():
                    dns_proc.kill()
                    dns_proc.join()
        _check_delivered(conf, bool(dkim_p))
    total = sum(done)
    cache = f" dns_cache={args.dns_cache} lists={args.lists}" if dkim_p else ""
    print(f"checks={'on' if dkim_p else 'off'}{cache} workers={args.workers} sessions={args.sessions} "
          f"messages={total} size={len(body)}B elapsed={elapsed:.2f}s rate={total / elapsed:.0f} msg/s "
          f"(durably delivered) server_cpu={1000 * cpu / max(total, 1):.2f} ms/msg (supervisor + workers) "
          f"client_cpu={1000 * client_cpu / max(total, 1):.2f} ms/msg")
    return total / elapsed, cpu / max(total, 1)


if __name__ == "__main__":
    sys.exit(main())
