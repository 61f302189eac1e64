#!/usr/bin/env python3
"""10,000 IMAP IDLE sessions spread over the worker processes of one `mailserver serve` (issue 17).

Starts `mailserver serve` with ``[server] workers = N`` (default 2) on SQLite in a temporary directory, IMAP and SMTP
on free loopback ports, then a child process opens ``--sessions`` IDLE sessions with asyncio (logins paced, all on
one account, the kernel spreading the connections over the workers' shared listening socket).  Once every session
is idling, it reports

* the sessions per worker (each worker's open TCP sockets, from /proc) and the growth of the workers' resident set
  (VmRSS summed over the workers, after - before) divided by the sessions: **KB per session** (aim: under 15);
* then one message is sent through SMTP (to whichever worker accepts it; the other learns of it over the worker
  bus) and it waits until every session saw its ``* N EXISTS``: the time from the SMTP reply to the last session
  that saw it (aim: under 1 s), and how many saw it at all.

``--rounds`` repeats the delivery on the same sessions (each round the clients go back to IDLE).  The file
descriptor limit of this process and its children is raised to the hard limit (``ulimit -n``); the sessions need
one descriptor each on the client side and one in a worker.  No reference server: Dovecot would need one process
per IDLE session with its baseline configuration.

Run: ``.venv/bin/python scripts/bench/idle_workers.py [--sessions 10000] [--workers 2] [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

USER = "idle@example.test"
PASSWORD = "bench-password"
#: Logins in flight at once (the authenticator throttles a burst of parallel attempts on one account).
LOGIN_CONCURRENCY = 16


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except FileNotFoundError:
        pass
    return 0


def tcp_sockets(pid: int) -> int:
    """Open sockets of ``pid`` (its sessions, the listeners and a few database/bus descriptors)."""
    n = 0
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"):
                    n += 1
            except OSError:
                pass
    except FileNotFoundError:
        pass
    return n


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except FileNotFoundError:
        return []


# ------------------------------------------------------------------------------------------------ the clients


async def _session(port: int, sem, state: dict) -> None:
    async with sem:
        while True:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            await reader.readline()
            writer.write(f'a LOGIN "{USER}" "{PASSWORD}"\r\n'.encode())
            line = await reader.readline()
            while line.startswith(b"* "):
                line = await reader.readline()
            if line.startswith(b"a OK"):
                break
            state["refused"] += 1
            writer.close()
            await asyncio.sleep(0.2)
    writer.write(b"b SELECT INBOX\r\nc IDLE\r\n")
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("closed before IDLE")
        if line.startswith(b"+ "):
            break
    state["idling"] += 1
    if state["idling"] == state["n"]:
        state["ready"].set()
    tag = 0
    while True:
        line = await reader.readline()
        if not line:
            return
        if line.endswith(b"EXISTS\r\n"):
            state["seen"].append(time.time())
            if len(state["seen"]) == state["n"]:
                state["all_seen"].set()
            # Stay quiet until every session saw it (a client answering at once would compete with the fan-out
            # it is measuring), then back to IDLE for the next round (RFC 2177: DONE, the tagged OK, a new IDLE).
            await state["rearm"].wait()
            tag += 1
            writer.write(b"DONE\r\n" + f"i{tag} IDLE\r\n".encode())
            await writer.drain()
            while True:
                line = await reader.readline()
                if not line:
                    return
                if line.startswith(b"+ "):
                    break
            state["idling"] += 1
            if state["idling"] == state["n"]:
                state["ready"].set()


async def clients_main(port: int, n: int, rounds: int) -> None:
    raise_nofile()
    state = {"n": n, "idling": 0, "refused": 0, "seen": [], "ready": asyncio.Event(), "all_seen": asyncio.Event(),
             "rearm": asyncio.Event()}
    sem = asyncio.Semaphore(LOGIN_CONCURRENCY)
    t = time.time()
    tasks = [asyncio.create_task(_session(port, sem, state)) for _ in range(n)]
    waiter = asyncio.create_task(state["ready"].wait())
    done, _ = await asyncio.wait({waiter, *tasks}, return_when=asyncio.FIRST_COMPLETED)
    if waiter not in done:  # a session failed before all were idling
        for task in done:
            task.result()
    print(json.dumps({"ready": n, "connect_s": time.time() - t, "refused": state["refused"]}), flush=True)
    loop = asyncio.get_running_loop()
    for _ in range(rounds):
        await loop.run_in_executor(None, sys.stdin.readline)  # the parent delivered
        try:
            await asyncio.wait_for(state["all_seen"].wait(), timeout=30)
        except asyncio.TimeoutError:
            pass
        seen, state["seen"] = state["seen"], []
        state["all_seen"] = asyncio.Event()
        # Every session back in IDLE before the next delivery.
        state["idling"], state["ready"] = 0, asyncio.Event()
        rearm, state["rearm"] = state["rearm"], asyncio.Event()
        rearm.set()
        try:
            await asyncio.wait_for(state["ready"].wait(), timeout=120)
        except asyncio.TimeoutError:
            pass
        print(json.dumps({"seen": len(seen), "first": min(seen, default=0), "last": max(seen, default=0),
                          "idling": state["idling"]}), flush=True)
    for task in tasks:
        task.cancel()


# ------------------------------------------------------------------------------------------------ the server


class Serve:
    def __init__(self, workdir: Path, workers: int, sessions: int):
        self.workdir = workdir
        self.workers = workers
        self.imap_port, self.smtp_port = free_ports(2)
        self.conf = workdir / "mailserver.toml"
        self.conf.write_text(
            f'hostname = "mail.example.test"\ndata_dir = "{workdir / "data"}"\n'
            f"[server]\nworkers = {workers}\n"
            f'[listen]\nimap = ["127.0.0.1:{self.imap_port}"]\nsmtp = ["127.0.0.1:{self.smtp_port}"]\n'
            f"[limits]\nimap_max_sessions_per_ip = {sessions + 100}\n"
            f'[queue]\nrun = false\n[dns]\nnameservers = ["127.0.0.1:9"]\ntimeout = 1.0\n'
            f'[senderauth]\nenabled = false\n[[domain]]\nname = "example.test"\n')
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        from mailserver.auth import PasswordHasher
        from mailserver.config import load
        from mailserver.service import open_store

        store = open_store(load(self.conf))
        store.add_account(USER, PasswordHasher().hash(PASSWORD))
        store.engine.dispose()
        self.log = open(self.workdir / "serve.log", "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "mailserver", "--config", str(self.conf), "serve"],
                                     stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT)
        deadline = time.monotonic() + 90
        while self.log_text().count("listening imap on") < self.workers:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("mailserver serve did not start:\n" + self.log_text()[-2000:])
            time.sleep(0.1)
        time.sleep(1.0)

    def log_text(self) -> str:
        return (self.workdir / "serve.log").read_text(errors="replace")

    def worker_pids(self) -> list[int]:
        return children(self.proc.pid)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                for pid in self.worker_pids():
                    os.kill(pid, signal.SIGKILL)
                self.proc.kill()
                self.proc.wait()


def deliver(port: int, i: int) -> float:
    """Send one message to the account over SMTP; returns when the end of its DATA was answered (time.time())."""
    msg = (f"From: <bench@example.org>\r\nTo: <{USER}>\r\nSubject: wake up {i}\r\n"
           f"Message-ID: <wake{i}.{time.time()}@example.org>\r\n\r\nwake up\r\n")
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as c:
        c.sendmail("bench@example.org", [USER], msg.encode())
        return time.time()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, default=10_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3, help="deliveries, each waited for by every session")
    ap.add_argument("--clients", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.clients:
        asyncio.run(clients_main(args.port, args.clients, args.rounds))
        return
    limit = raise_nofile()
    if limit < args.sessions + 200:
        sys.exit(f"the open files limit is {limit}; {args.sessions} sessions need more (ulimit -Hn)")
    with tempfile.TemporaryDirectory() as tmp:
        srv = Serve(Path(tmp), args.workers, args.sessions)
        srv.start()
        proc = None
        try:
            pids = srv.worker_pids()
            base = {p: rss_kb(p) for p in pids}
            base_socks = {p: tcp_sockets(p) for p in pids}
            print(f"mailserver serve: supervisor {srv.proc.pid}, workers {pids}; RSS "
                  + ", ".join(f"{base[p] / 1024:.0f} MB" for p in pids))
            proc = subprocess.Popen([sys.executable, __file__, "--clients", str(args.sessions), "--port",
                                     str(srv.imap_port), "--rounds", str(args.rounds)],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            first = json.loads(proc.stdout.readline())
            time.sleep(2.0)
            rss = {p: rss_kb(p) for p in pids}
            per_worker = {p: tcp_sockets(p) - base_socks[p] for p in pids}
            grown = sum(rss[p] - base[p] for p in pids)
            print(f"{args.sessions} IDLE sessions ready in {first['connect_s']:.1f} s "
                  f"({first['refused']} logins refused and retried); per worker: "
                  + ", ".join(f"{per_worker[p]} sessions, RSS {base[p] / 1024:.0f} -> {rss[p] / 1024:.0f} MB"
                              for p in pids))
            print(f"RSS per session: {grown / args.sessions:.1f} KB (workers' VmRSS growth {grown / 1024:.1f} MB)")
            for r in range(args.rounds):
                t0 = time.time()
                t1 = deliver(srv.smtp_port, r)
                proc.stdin.write("go\n")
                proc.stdin.flush()
                done = json.loads(proc.stdout.readline())
                print(f"round {r + 1}: delivery accepted in {t1 - t0:.3f} s; seen by {done['seen']}/{args.sessions}"
                      f" sessions, the first {done['first'] - t1:.3f} s and the last {done['last'] - t1:.3f} s after"
                      f" the SMTP reply ({done['idling']} back in IDLE for the next round)")
            proc.wait(timeout=120)
        finally:
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
            srv.stop()


if __name__ == "__main__":
    main()
