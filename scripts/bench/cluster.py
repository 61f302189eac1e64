"""Our server as the benchmarks' scaling runs need it: ``nodes`` `mailserver serve` processes, each with ``workers``
worker processes, on one database (SQLite under the work directory, or a fresh schema of ``--database-url``'s
PostgreSQL database, dropped at the end), and with more than one node HAProxy in front (TCP, ``send-proxy-v2``,
round robin; the nodes listen on ``[listen_proxied]``).

Imported by scripts/bench/imaptest.py and scripts/bench/smtp_reference.py.  :class:`Balance` samples which process
holds how many connections on a port (``/proc/net/tcp`` and each process's descriptors) and the CPU each process
used, so a run can say how the kernel (or HAProxy) spread the load over the workers.  Everything started is stopped
by its PID.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOMAIN = "example.test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Node:
    """One `mailserver serve` process (a supervisor and its workers, or one process with ``workers = 1``)."""

    name: str
    conf: Path
    ports: dict[str, int]
    proc: subprocess.Popen | None = None
    log: object = None
    #: The config file's text, written again at each start (configurations sharing one work directory, hence one
    #: data directory, take turns: pop3.py's ``--ours``).
    text: str = ""

    def log_text(self) -> str:
        return (self.conf.parent / "serve.log").read_text(errors="replace")

    def worker_pids(self) -> list[int]:
        kids = children(self.proc.pid)
        return kids or [self.proc.pid]

    def all_pids(self) -> list[int]:
        return [self.proc.pid, *children(self.proc.pid)]


class Cluster:
    """``nodes`` x ``workers`` of ours with ``protocols`` (e.g. ("imap", "smtp")) on free loopback ports."""

    def __init__(self, workdir: Path, *, workers: int = 1, nodes: int = 1, database_url: str = "",
                 reuse_port: bool = False, fsync: str = "optimized", limits: dict | None = None,
                 protocols: tuple[str, ...] = ("imap",), extra_toml: str = "", schema_url: str = ""):
        self.workdir = workdir
        self.workers = max(1, workers)
        self.protocols = protocols
        self.base_url = database_url
        self.url = ""
        #: Whether stop() drops the schema: not one passed in as ``schema_url`` (another Cluster's :attr:`url`,
        #: so that several configurations run on one filled database; SQLite: the same ``workdir``).
        self.owns_schema = not schema_url
        if schema_url:
            self.url = schema_url
        elif database_url:
            sys.path.insert(0, str(ROOT))
            from tests.harness import fresh_pg_url

            self.url = fresh_pg_url(database_url)
        elif nodes > 1:
            raise ValueError("more than one node needs --database-url (PostgreSQL)")
        workdir.mkdir(parents=True, exist_ok=True)
        lim = "".join(f"{k} = {v}\n" for k, v in (limits or {}).items())
        self.nodes: list[Node] = []
        proxied = nodes > 1
        for i in range(1, nodes + 1):
            data = workdir / f"node{i}"
            data.mkdir(exist_ok=True)
            ports = {p: free_port() for p in protocols}
            section = "[listen_proxied]\n" if proxied else "[listen]\n"
            section += "".join(f'{p} = ["127.0.0.1:{ports[p]}"]\n' for p in protocols)
            if proxied:
                # Behind HAProxy the client is not on loopback for the plaintext rule: imaptest logs in without TLS.
                section += '[proxy]\ntrusted = ["127.0.0.1/32"]\n[auth]\nallow_plaintext_without_tls = true\n'
            db = f'database_url = "{self.url}"\n' if self.url else ""
            blobs = '[store]\nblobs = "database"\n' if self.url else "[store]\n"
            conf = data / "mailserver.toml"
            head = (f'hostname = "node{i}.example.test"\ndata_dir = "{data / "data"}"\n{db}'
                    f"[server]\nworkers = {self.workers}\nreuse_port = {str(reuse_port).lower()}\n")
            tail = (f"[limits]\n{lim}[queue]\nrun = false\n{blobs}fsync = \"{fsync}\"\n"
                    f'{extra_toml}[[domain]]\nname = "{DOMAIN}"\n')
            conf.write_text(head + section + tail)
            if i == 1:
                # The same installation without listeners: for a MailServer in the benchmark's own process that
                # fills mailboxes through the delivery pipeline before the nodes start (pop3.py).
                (data / "fill.toml").write_text(head + tail)
            self.nodes.append(Node(f"node{i}", conf, ports, text=head + section + tail))
        self.haproxy: subprocess.Popen | None = None
        self.front: dict[str, int] = dict(self.nodes[0].ports)
        self.store = None

    def open_store(self):
        """The store the benchmark adds accounts with (migrations and the domain first, before any node starts)."""
        from mailserver.config import load
        from mailserver.service import open_store

        self.store = open_store(load(self.nodes[0].conf))
        return self.store

    def start(self) -> None:
        for n in self.nodes:
            n.conf.write_text(n.text)
            n.log = open(n.conf.parent / "serve.log", "w")
            n.proc = subprocess.Popen([sys.executable, "-m", "mailserver", "--config", str(n.conf), "serve"],
                                      stdout=n.log, stderr=subprocess.STDOUT, cwd=ROOT)
        for n in self.nodes:
            deadline = time.monotonic() + 120
            last = self.protocols[-1]
            while n.log_text().count(f"listening {last} on") < self.workers:
                if time.monotonic() > deadline or n.proc.poll() is not None:
                    raise RuntimeError(f"{n.name} did not start:\n" + n.log_text()[-2000:])
                time.sleep(0.1)
        if len(self.nodes) > 1:
            self._start_haproxy()

    def _start_haproxy(self) -> None:
        self.front = {p: free_port() for p in self.protocols}
        lines = ["global", "    maxconn 4000", "defaults", "    mode tcp", "    timeout connect 5s",
                 "    timeout client 300s", "    timeout server 300s"]
        for p in self.protocols:
            lines += [f"frontend f_{p}", f"    bind 127.0.0.1:{self.front[p]}", f"    default_backend b_{p}",
                      f"backend b_{p}", "    balance roundrobin"]
            lines += [f"    server {n.name} 127.0.0.1:{n.ports[p]} send-proxy-v2" for n in self.nodes]
        cfg = self.workdir / "haproxy.cfg"
        cfg.write_text("\n".join(lines) + "\n")
        self.haproxy_log = open(self.workdir / "haproxy.log", "w")
        self.haproxy = subprocess.Popen(["haproxy", "-db", "-f", str(cfg)], stdout=self.haproxy_log,
                                        stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        for port in self.front.values():
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=2).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or self.haproxy.poll() is not None:
                        raise RuntimeError("haproxy did not start") from None
                    time.sleep(0.1)

    def port(self, protocol: str) -> int:
        """Where clients connect: HAProxy's frontend with several nodes, else the node's listener."""
        return self.front[protocol]

    def worker_pids(self) -> list[tuple[str, int]]:
        """(label, pid) of every process that serves connections."""
        out = []
        for n in self.nodes:
            for i, pid in enumerate(sorted(n.worker_pids())):
                out.append((f"{n.name}/w{i}" if self.workers > 1 else n.name, pid))
        return out

    def all_pids(self) -> list[int]:
        return [p for n in self.nodes for p in n.all_pids()]

    def stop(self) -> None:
        if self.haproxy is not None and self.haproxy.poll() is None:
            self.haproxy.terminate()
            try:
                self.haproxy.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.haproxy.kill()
                self.haproxy.wait()
        for n in self.nodes:
            if n.proc is not None and n.proc.poll() is None:
                n.proc.send_signal(signal.SIGTERM)
        for n in self.nodes:
            if n.proc is None:
                continue
            try:
                n.proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                n.proc.kill()
                n.proc.wait()
            n.log.close()
        if self.store is not None:
            self.store.engine.dispose()
            self.store = None
        if self.url and self.owns_schema:
            from tests.harness import drop_pg_schema

            drop_pg_schema(self.base_url, self.url)
            self.url = ""

    def __enter__(self) -> "Cluster":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _server_ports_inodes(ports: set[int]) -> set[str]:
    """Inodes of established connections whose local side is one of ``ports`` on 127.0.0.1."""
    want = {f"0100007F:{p:04X}" for p in ports}
    out = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        if f[1] in want and f[3] == "01":
            out.add(f[9])
    return out


def _socket_inodes(pid: int) -> set[str]:
    out = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return out
    for fd in fds:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            out.add(link[8:-1])
    return out


@dataclass
class Balance:
    """Samples, once a second while running, how many connections on ``ports`` each worker holds; with the CPU
    each used between :meth:`start` and :meth:`stop`."""

    workers: list[tuple[str, int]]
    ports: set[int]
    samples: dict[str, list[int]] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)

    def start(self) -> "Balance":
        self._stop = threading.Event()
        self._cpu0 = {label: cpu_seconds(pid) for label, pid in self.workers}
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            conns = _server_ports_inodes(self.ports)
            for label, pid in self.workers:
                self.samples.setdefault(label, []).append(len(_socket_inodes(pid) & conns))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.cpu = {label: cpu_seconds(pid) - self._cpu0[label] for label, pid in self.workers}

    def summary(self) -> str:
        parts = []
        total_cpu = sum(self.cpu.values()) or 1.0
        for label, _ in self.workers:
            s = self.samples.get(label) or [0]
            parts.append(f"{label}: {sum(s) / len(s):.1f} conns (max {max(s)}), CPU {self.cpu.get(label, 0):.1f} s "
                         f"({100 * self.cpu.get(label, 0) / total_cpu:.0f} %)")
        return "; ".join(parts)


def parse_spec(text: str) -> dict:
    spec = {"workers": 1, "db": "sqlite", "nodes": 1, "reuse_port": False, "fsync": "optimized"}
    for part in filter(None, text.split(",")):
        key, _, value = part.partition("=")
        if key not in spec:
            raise SystemExit(f"--ours {text}: unknown key {key!r}")
        spec[key] = (value in ("1", "true", "yes")) if key == "reuse_port" else (
            int(value) if key in ("workers", "nodes") else value)
    if spec["nodes"] > 1 and spec["db"] != "pg":
        raise SystemExit(f"--ours {text}: nodes need db=pg")
    return spec


def describe(workers: int, nodes: int, database_url: str, reuse_port: bool, fsync: str) -> str:
    db = "PostgreSQL" if database_url else "SQLite"
    how = f"{nodes} nodes x {workers} workers" if nodes > 1 else f"{workers} workers"
    extra = [x for x in ("reuse_port" if reuse_port else "", f"fsync={fsync}" if fsync != "optimized" else "") if x]
    return f"{how} on {db}" + (f" ({', '.join(extra)})" if extra else "")


def haproxy_available() -> bool:
    return shutil.which("haproxy") is not None



# --------------------------------------------------------------------------------------------- the whole curve

#: The scaling curve of issue 17: 1, 2, 4 workers on SQLite and on PostgreSQL, 2 nodes on PostgreSQL (HAProxy).
CURVE = ("workers=1", "workers=2", "workers=4", "workers=1,db=pg", "workers=2,db=pg", "workers=4,db=pg",
         "workers=1,db=pg,nodes=2")


def _run_logged(cmd: list[str], log, timeout: float) -> str:
    """Run a benchmark script (a child, stopped by its PID if it overruns); its output goes to ``log`` and back."""
    print(f"$ {' '.join(cmd)}", file=log, flush=True)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        out += f"\n(cluster.py: killed after {timeout:.0f} s)\n"
    log.write(out)
    log.flush()
    return out


def _num(pattern: str, text: str) -> float | None:
    import re

    m = re.search(pattern, text, re.M)
    return float(m.group(1)) if m else None


def curve_imaptest(a, spec: dict, log) -> dict:
    cmd = [sys.executable, str(ROOT / "scripts/bench/imaptest.py"), "--imaptest", a.imaptest, "--dovecot",
           "--phases", "stress", "--secs", str(a.secs), "--workers", str(spec["workers"])]
    if spec["db"] == "pg":
        cmd += ["--database-url", a.database_url]
    if spec["nodes"] > 1:
        cmd += ["--nodes", str(spec["nodes"])]
    if spec["reuse_port"]:
        cmd += ["--reuse-port"]
    if spec["fsync"] != "optimized":
        cmd += ["--fsync", spec["fsync"]]
    load = os.getloadavg()[0]
    out = _run_logged(cmd, log, a.secs * 2 + 600)
    return {"ours": _num(r"^\s+ours\s+([\d.]+) ops/s", out), "errors": _num(r"^\s+ours\s+[\d.]+ ops/s\s+(\d+) errors", out),
            "ref": _num(r"^\s+dovecot\s+([\d.]+) ops/s", out),
            "ref_errors": _num(r"^\s+dovecot\s+[\d.]+ ops/s\s+(\d+) errors", out),
            "cpu": _num(r"server CPU ([\d.]+) ms/op", out), "load": (load, os.getloadavg()[0])}


def _spec_cmd(a, script: str, messages: int, specs: list[dict]) -> list[str]:
    """The command running one bench script once with every spec of the curve as an --ours target."""
    cmd = [sys.executable, str(ROOT / "scripts/bench" / script), "--rounds", "1", "--messages", str(messages)]
    if a.database_url:
        cmd += ["--database-url", a.database_url]
    for sp in specs:
        cmd += ["--ours", sp["text"]]
    return cmd


def curve_smtp(a, specs: list[dict], log) -> tuple[dict, float | None, tuple]:
    cmd = _spec_cmd(a, "smtp_reference.py", a.smtp_messages, specs)
    load = os.getloadavg()[0]
    out = _run_logged(cmd, log, 3600)
    rows = {}
    for sp in specs:
        label = describe(sp["workers"], sp["nodes"], "pg" if sp["db"] == "pg" else "", sp["reuse_port"], sp["fsync"])
        esc = label.replace("(", r"\(").replace(")", r"\)")
        rows[sp["text"]] = {"ours": _num(rf"^  {esc}: ([\d.]+) msg/s durably", out),
                            "cpu": _num(rf"^  {esc}: .*CPU ([\d.]+) ms/msg", out),
                            "ratio": _num(rf"^  {esc}: .*ratio ([\d.]+)", out)}
    return rows, _num(r"LMTP ([\d.]+) msg/s end to end", out), (load, os.getloadavg()[0])


def curve_pop3(a, specs: list[dict], log) -> tuple[dict, float | None, tuple]:
    cmd = _spec_cmd(a, "pop3.py", a.pop3_messages, specs) + ["--dovecot"]
    load = os.getloadavg()[0]
    out = _run_logged(cmd, log, 3600)
    rows = {}
    for sp in specs:
        label = "ours " + describe(sp["workers"], sp["nodes"], "pg" if sp["db"] == "pg" else "", sp["reuse_port"],
                                   sp["fsync"])
        esc = label.replace("(", r"\(").replace(")", r"\)")
        rows[sp["text"]] = {"ours": _num(rf"^  {esc}\s+([\d.]+) msg/s", out),
                            "cpu": _num(rf"^  {esc}\s+.* ([\d.]+) us/msg", out),
                            "ratio": _num(rf"^  {esc}\s+.*ratio ([\d.]+)", out)}
    return rows, _num(r"^  dovecot\s+([\d.]+) msg/s", out), (load, os.getloadavg()[0])


def _f(x, fmt="{:.0f}") -> str:
    return "—" if x is None else fmt.format(x)


def curve_main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(
        prog="cluster.py", description="The scaling curve of issue 17 in one command: imaptest stress, SMTP and POP3 "
        "against each configuration of ours, each beside its reference (Dovecot; Postfix->Dovecot LMTP) in the same "
        "run, then one table.  Every configuration runs as `mailserver serve` (this module's Cluster).")
    ap.add_argument("--imaptest", default=os.environ.get("IMAPTEST", "/work/tools/imaptest.sh"))
    ap.add_argument("--database-url", default=os.environ.get("MAILSERVER_TEST_DATABASE_URL", ""),
                    help="PostgreSQL for the db=pg configurations (fresh schemas, dropped); without it they are left out")
    ap.add_argument("--configs", default=" ".join(CURVE), help="space-separated specs (default: the whole curve)")
    ap.add_argument("--only", default="imap,smtp,pop3", help="which benchmarks (default imap,smtp,pop3)")
    ap.add_argument("--secs", type=int, default=20, help="imaptest stress seconds per side (default 20)")
    ap.add_argument("--smtp-messages", type=int, default=2000)
    ap.add_argument("--pop3-messages", type=int, default=1000, help="per maildrop, 10 maildrops (default 1000)")
    ap.add_argument("--log", default="", help="every benchmark's own output (default: a file under /tmp)")
    a = ap.parse_args(argv)
    specs = []
    for text in a.configs.split():
        sp = parse_spec(text)
        if sp["db"] == "pg" and not a.database_url:
            print(f"skipping {text}: no --database-url")
            continue
        sp["text"] = text
        specs.append(sp)
    only = set(a.only.split(","))
    log_path = Path(a.log or f"/tmp/cluster-curve-{os.getpid()}.log")
    t0 = time.monotonic()
    imap: dict[str, dict] = {}
    with open(log_path, "w") as log:
        print(f"curve: {len(specs)} configurations, {sorted(only)}; every benchmark's output in {log_path}", flush=True)
        if "imap" in only:
            for sp in specs:
                imap[sp["text"]] = r = curve_imaptest(a, sp, log)
                print(f"  imaptest {sp['text']}: ours {_f(r['ours'])} ops/s ({_f(r['errors'])} errors), Dovecot "
                      f"{_f(r['ref'])} ops/s ({_f(r['ref_errors'])} errors), {_f(r['cpu'], '{:.2f}')} ms/op, "
                      f"load {r['load'][0]:.1f}-{r['load'][1]:.1f}", flush=True)
        smtp, smtp_ref, smtp_load = curve_smtp(a, specs, log) if "smtp" in only else ({}, None, None)
        if "smtp" in only:
            print(f"  smtp done, reference {_f(smtp_ref)} msg/s, load {smtp_load[0]:.1f}-{smtp_load[1]:.1f}", flush=True)
        pop3, pop3_ref, pop3_load = curve_pop3(a, specs, log) if "pop3" in only else ({}, None, None)
        if "pop3" in only:
            print(f"  pop3 done, Dovecot {_f(pop3_ref)} msg/s, load {pop3_load[0]:.1f}-{pop3_load[1]:.1f}", flush=True)
    print(f"\nscaling curve ({time.monotonic() - t0:.0f} s; load average now "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}); ours / reference (ratio), our CPU per operation:\n")
    print("| configuration | imaptest stress ops/s (errors ours, Dovecot) | ms/op | load | SMTP msg/s | ms/msg "
          "| POP3 msg/s | µs/msg |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for sp in specs:
        k = sp["text"]
        label = describe(sp["workers"], sp["nodes"], "pg" if sp["db"] == "pg" else "", sp["reuse_port"], sp["fsync"])
        i, s, p = imap.get(k, {}), smtp.get(k, {}), pop3.get(k, {})
        ir = (i["ours"] / i["ref"]) if i.get("ours") and i.get("ref") else None
        print(f"| {label} | {_f(i.get('ours'))} / {_f(i.get('ref'))} ({_f(ir, '{:.2f}')}; {_f(i.get('errors'))}, "
              f"{_f(i.get('ref_errors'))}) | {_f(i.get('cpu'), '{:.2f}')} | "
              f"{i['load'][0]:.0f}–{i['load'][1]:.0f} | " if i else f"| {label} | — | — | — | ", end="")
        print(f"{_f(s.get('ours'))} / {_f(smtp_ref)} ({_f(s.get('ratio'), '{:.2f}')}) | {_f(s.get('cpu'), '{:.2f}')} | "
              f"{_f(p.get('ours'))} / {_f(pop3_ref)} ({_f(p.get('ratio'), '{:.2f}')}) | {_f(p.get('cpu'))} |")
    if smtp_load:
        print(f"\nSMTP load {smtp_load[0]:.0f}–{smtp_load[1]:.0f}", end="")
    if pop3_load:
        print(f"; POP3 load {pop3_load[0]:.0f}–{pop3_load[1]:.0f}", end="")
    print()
    errors = [k for k, r in imap.items() if r.get("errors") or r.get("ours") is None]
    if errors:
        print(f"imaptest errors or no figure: {', '.join(errors)} (see {log_path})")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(curve_main())
