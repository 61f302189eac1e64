#!/usr/bin/env python3
"""imaptest against our IMAP server and (optionally) Dovecot, in one run on this machine.

Dovecot's imaptest is a development tool built outside the repository (see ``--imaptest``). Three phases, each
against our server first and then Dovecot, each side starting from empty mailboxes (a fresh data directory for us, a
fresh Maildir for Dovecot, and separate users per phase):

(a) stress: ``clients`` imaptest clients over ``users`` users for ``secs`` seconds (default 20 over 100, 30 s);
(b) stress with every client on ONE shared user (the case where sessions see each other's changes);
(c) the scripted compliance tests (imaptest ``test=``), one group (test file) at a time, reported as
    "groups run / passed / not run (capability)": a group that ran no command because the server lacks a
    capability the test names is NOT RUN, never passed (imaptest itself counts those neither as failed nor skipped).

Stress reports operations/s (all imaptest commands) and every error line imaptest printed (it checks what it sees
against its own model of the mailbox: a wrong sequence number, flags, a body that changed...). Before each timed run
every user of it logs in once on both servers (``--no-warm-up`` skips that): our first login of a user verifies and
upgrades an argon2 hash, while Dovecot's baseline users have PLAIN passwords.

Our server runs in this process (tests/harness.py: a reactor thread, SQLite under a temporary directory), or, with
``--workers N``, as a `mailserver serve` child process with ``[server] workers = N`` (a supervisor and N worker
processes on one SQLite file; ``--database-url`` for a fresh schema of a PostgreSQL database; ``--nodes 2`` for two
such processes on it with HAProxy in front; ``--reuse-port``, ``--fsync always``: scripts/bench/cluster.py), and
then prints how the connections and the CPU were spread over the worker processes; Dovecot is
started by ``../shared/bench/baseline-dovecot.sh`` on free loopback ports with its own BASEDIR/MAILDIR, and stopped
by the PID in its master.pid. imaptest runs are child processes with a hard timeout. Everything started is stopped.

Run::

    .venv/bin/python scripts/bench/imaptest.py --imaptest /work/tools/imaptest/src/imaptest [--dovecot]
        [--phases stress,shared,compliance] [--secs 30] [--clients 20] [--users 100] [--runs 1] [--workers N]

The imaptest binary comes from ``--imaptest`` or the environment variable ``IMAPTEST``; the compliance tests from
``--tests`` (default: ``tests`` next to the binary, i.e. ``src/tests`` of an imaptest build tree).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import imaplib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from cluster import Balance  # noqa: E402  (scripts/bench/cluster.py)

PASSWORD = "pass"  # Dovecot's baseline users have this one; ours get it too
OUR_DOMAIN = "example.test"


@dataclass(frozen=True)
class UserPlan:
    """Which users each phase and run logs in as, so that every one starts from empty mailboxes: stress run r uses
    ``user<(r-1)*users+1>`` .. ``user<r*users>``, the shared-user run r one user after all those, compliance the
    last one."""

    users: int
    runs: int

    def stress_range(self, run: int) -> tuple[int, int]:
        return (run - 1) * self.users + 1, run * self.users

    def shared_user(self, run: int) -> int:
        return self.runs * self.users + run

    def compliance_user(self) -> int:
        return self.runs * self.users + self.runs + 1

    @property
    def total(self) -> int:
        return self.compliance_user()


# ----------------------------------------------------------------------------------------------- servers

@dataclass
class Target:
    """An IMAP server imaptest talks to: how users are named there."""

    name: str
    port: int
    suffix: str  # appended to "user<N>" to make a login name

    def user(self, n: int) -> str:
        return f"user{n}{self.suffix}"

    def user_template(self) -> str:
        return f"user%d{self.suffix}"


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class Dovecot:
    """The reference Dovecot of ../shared/bench, private to this run (own directories and ports)."""

    def __init__(self, script: Path, workdir: Path, nusers: int):
        self.script = script
        self.base = workdir / "dovecot-base"
        self.maildir = workdir / "dovecot-mail"
        self.imap_port, pop3, lmtp = free_ports(3)
        self.env = dict(os.environ, BASEDIR=str(self.base), MAILDIR=str(self.maildir), IMAP_PORT=str(self.imap_port),
                        POP3_PORT=str(pop3), LMTP_PORT=str(lmtp), NUSERS=str(nusers))
        self.pid: int | None = None

    def start(self) -> None:
        # Dovecot's master keeps the script's stdout open: a file, not a pipe, or we would wait for it forever.
        with open(self.base.parent / "dovecot-start.log", "w") as log:
            subprocess.run(["sh", str(self.script), "start"], env=self.env, stdout=log, stderr=subprocess.STDOUT,
                           check=True, timeout=60)
        pidfile = self.base / "dovecot" / "run" / "master.pid"
        self.pid = int(pidfile.read_text().strip())
        _wait_port(self.imap_port)

    def stop(self) -> None:
        if self.pid is None:
            return
        pid, self.pid = self.pid, None
        try:
            os.kill(pid, signal.SIGTERM)  # the master stops its children
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.1)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie of ours counts as gone (Dovecot's master is not our child, but be exact)
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def _wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def capabilities(target: Target, user: str) -> set[str]:
    """The capability list after LOGIN (what imaptest's scripted tests check)."""
    c = imaplib.IMAP4("127.0.0.1", target.port, timeout=20)
    try:
        c.login(user, PASSWORD)
        typ, data = c.capability()
        return {cap.upper() for cap in data[0].decode().split()}
    finally:
        try:
            c.logout()
        except (imaplib.IMAP4.error, OSError):
            pass


def warm_up(target: Target, users: list[str]) -> float:
    """Log every user in once (8 at a time) and return the seconds it took. Our first login of a user verifies
    and upgrades its password hash (argon2, on purpose slow); Dovecot's baseline users have PLAIN passwords. After
    this, stress measures IMAP work on both sides (our success cache keeps a login cheap for a minute)."""
    from concurrent.futures import ThreadPoolExecutor

    def one(user: str) -> None:
        c = imaplib.IMAP4("127.0.0.1", target.port, timeout=60)
        try:
            c.login(user, PASSWORD)
        finally:
            try:
                c.logout()
            except (imaplib.IMAP4.error, OSError):
                pass

    t = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, users))
    return time.perf_counter() - t


# ----------------------------------------------------------------------------------------------- stress

@dataclass
class StressResult:
    ops: int
    secs: int
    counts: dict[str, int]
    errors: list[str]
    log: Path
    load: tuple[float, float] | None = None  # load average (1 min) at the start and the end

    @property
    def ops_per_s(self) -> float:
        return self.ops / self.secs if self.secs else 0.0


_ERROR_LINE = re.compile(r"^(Error|Panic|Fatal): ")


def run_imaptest(imaptest: Path, args: list[str], log: Path, timeout: float, cwd: Path) -> int:
    with open(log, "w") as out:
        proc = subprocess.Popen([str(imaptest), *args], stdout=out, stderr=subprocess.STDOUT, cwd=cwd)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()  # by its PID
            proc.wait()
            out.write(f"\n(bench: imaptest killed after {timeout:.0f} s)\n")
            return -9


def parse_stress(log: Path, secs: int) -> StressResult:
    lines = log.read_text(errors="replace").splitlines()
    counts: dict[str, int] = {}
    for i, line in enumerate(lines):
        if line.startswith("Totals:"):
            names = lines[i + 1].split()
            numbers = next((ln for ln in lines[i + 2:] if re.fullmatch(r"\s*\d+(\s+\d+)+\s*", ln)), "")
            counts = dict(zip(names, map(int, numbers.split()), strict=False))
            break
    errors = [ln for ln in lines if _ERROR_LINE.match(ln)]
    if any("killed after" in ln for ln in lines):
        errors.append("Error: imaptest did not finish in time (killed)")
    if not counts:
        errors.append("Error: no Totals block in imaptest's output")
    return StressResult(sum(counts.values()), secs, counts, errors, log)


def stress(imaptest: Path, target: Target, *, user: str, users: tuple[int, int] | None, clients: int, secs: int,
           seed: int, mbox: Path, log: Path, cwd: Path, extra: list[str] = ()) -> StressResult:
    """One imaptest stress run; ``user`` is a template (``user%d``) with ``users`` the (first, last) range, or one
    login name for every client."""
    args = ["host=127.0.0.1", f"port={target.port}", f"user={user}", f"pass={PASSWORD}", f"clients={clients}",
            f"secs={secs}", f"seed={seed}", f"mbox={mbox}"]
    if users is not None:
        args.append(f"users={users[0]}-{users[1]}")
    args.extend(extra)
    run_dir = cwd / log.stem  # each run's rawlog files (imaptest "rawlog") apart from the others'
    run_dir.mkdir(exist_ok=True)
    run_imaptest(imaptest, args, log, secs + 90, run_dir)
    if not any(run_dir.iterdir()):
        run_dir.rmdir()
    return parse_stress(log, secs)


def error_kinds(errors: list[str], limit: int = 6) -> list[str]:
    """The most frequent error messages with user names and numbers blurred, for the summary."""
    kinds = collections.Counter(re.sub(r"\d+", "N", re.sub(r"^(\w+): \S+\[\d+\]: ", r"\1: ", e))[:160]
                                for e in errors)
    return [f"{n} x {text}" for text, n in kinds.most_common(limit)]


# ----------------------------------------------------------------------------------------------- compliance

@dataclass
class Group:
    name: str
    required: list[str]
    needs_user2: bool


@dataclass
class ComplianceResult:
    groups: int = 0
    passed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    not_run: dict[str, str] = field(default_factory=dict)  # group -> what is missing
    base: tuple[int, int] = (0, 0)  # failed, total commands
    ext: tuple[int, int] = (0, 0)
    failure_lines: dict[str, list[str]] = field(default_factory=dict)

    @property
    def run(self) -> int:
        return len(self.passed) + len(self.failed)

    def summary(self) -> str:
        missing = collections.Counter(why.split()[0] for why in self.not_run.values())  # the first one missing
        caps = ", ".join(f"{cap} x{n}" if n > 1 else cap for cap, n in sorted(missing.items()))
        text = f"{self.run} run / {len(self.passed)} passed / {len(self.not_run)} not run"
        if caps:
            text += f" ({caps})"
        return (f"{self.groups} groups: {text}; commands failed: base {self.base[0]}/{self.base[1]}, "
                f"extensions {self.ext[0]}/{self.ext[1]}")


def read_groups(tests: Path) -> list[Group]:
    """Every test file of imaptest's scripted tests (not the .mbox files, not the ``broken`` directory)."""
    groups = []
    for path in sorted(tests.iterdir()):
        if not path.is_file() or path.name.endswith(".mbox") or path.name.startswith("."):
            continue
        required: list[str] = []
        needs_user2 = False
        for line in path.read_text(errors="replace").splitlines():
            if not line.strip():
                break  # the header ends at the first empty line
            key, _, value = line.partition(":")
            key = key.strip().lower()
            if key == "capabilities":
                required = value.split()
            elif key.startswith("user ") and value.strip() in ("$user2", "${user2}"):
                needs_user2 = True
        groups.append(Group(path.name, required, needs_user2))
    return groups


_GROUPS = re.compile(r"^(\d+) test groups: (\d+) failed, (\d+) skipped")
_COMMANDS = re.compile(r"^(base protocol|extensions): (\d+)/(\d+) individual commands failed")


def compliance(imaptest: Path, tests: Path, target: Target, user: str, logdir: Path, cwd: Path) -> ComplianceResult:
    caps = capabilities(target, user)
    res = ComplianceResult()
    base_failed = base_total = ext_failed = ext_total = 0
    for group in read_groups(tests):
        res.groups += 1
        log = logdir / f"compliance-{target.name}-{group.name}.log"
        run_imaptest(imaptest, ["host=127.0.0.1", f"port={target.port}", f"user={user}", f"pass={PASSWORD}",
                                f"test={tests / group.name}"], log, 120, cwd)
        text = log.read_text(errors="replace")
        lines = text.splitlines()
        m = next((_GROUPS.match(ln) for ln in lines if _GROUPS.match(ln)), None)
        cmds = {mm.group(1): (int(mm.group(2)), int(mm.group(3))) for mm in map(_COMMANDS.match, lines) if mm}
        ran = sum(total for _f, total in cmds.values())
        missing = [cap for cap in group.required if cap.upper() not in caps]
        if group.needs_user2:
            missing.append("user2")
        if m is None:
            res.failed.append(group.name)
            res.failure_lines[group.name] = lines[-8:]
        elif int(m.group(2)):
            res.failed.append(group.name)
            res.failure_lines[group.name] = [ln for ln in lines if not _COMMANDS.match(ln) and
                                             not _GROUPS.match(ln)][:12]
        elif int(m.group(3)) or ran == 0:
            # Skipped, or no command ran at all (imaptest counts that as neither failed nor skipped).
            res.not_run[group.name] = " ".join(c.upper() for c in missing) or "unknown (no command ran)"
        else:
            res.passed.append(group.name)
        bf, bt = cmds.get("base protocol", (0, 0))
        ef, et = cmds.get("extensions", (0, 0))
        base_failed, base_total = base_failed + bf, base_total + bt
        ext_failed, ext_total = ext_failed + ef, ext_total + et
    res.base = (base_failed, base_total)
    res.ext = (ext_failed, ext_total)
    return res


# ----------------------------------------------------------------------------------------------- main

def _fmt_stress(label: str, r: StressResult) -> str:
    load = f"load {r.load[0]:.1f}-{r.load[1]:.1f}  " if r.load else ""
    return f"    {label:<8} {r.ops_per_s:8.1f} ops/s  {len(r.errors):4d} errors  {load}(log {r.log})"


def _print_errors(r: StressResult) -> None:
    for line in error_kinds(r.errors):
        print(f"             {line}")


@contextlib.contextmanager
def our_server(workdir: Path, limits: dict, args):
    """Yields (add_user(address), imap port, cluster or None): in this process, or as `serve` (scripts/bench/
    cluster.py) with ``--workers``/``--nodes``."""
    if not args.workers and args.nodes <= 1:
        from tests.harness import running_server

        with running_server(workdir, listeners=("imap",), limits=limits) as srv:
            yield (lambda a: srv.add_user(a, PASSWORD)), srv.port("imap"), None
        return
    from cluster import Cluster, describe

    from tests.harness import hasher

    with Cluster(workdir, workers=args.workers or 1, nodes=args.nodes, database_url=args.database_url,
                 reuse_port=args.reuse_port, fsync=args.fsync, limits=limits, protocols=("imap",)) as cluster:
        store = cluster.open_store()  # migrations and the domain, before the nodes start
        cluster.start()
        print(f"ours: {describe(args.workers or 1, args.nodes, args.database_url, args.reuse_port, args.fsync)} "
              f"(pids {', '.join(str(n.proc.pid) for n in cluster.nodes)})")
        h = hasher().hash(PASSWORD)
        yield (lambda a: store.add_account(a, h)), cluster.port("imap"), cluster


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--imaptest", default=os.environ.get("IMAPTEST", ""),
                    help="the imaptest binary (default: $IMAPTEST)")
    ap.add_argument("--tests", default="", help="imaptest's scripted tests directory (default: tests next to the "
                                                "binary)")
    ap.add_argument("--dovecot", action="store_true", help="also run everything against Dovecot (same run)")
    ap.add_argument("--shared-bench", default=str(ROOT.parent / "shared" / "bench"),
                    help="directory of baseline-dovecot.sh and make-mbox.py (default: ../shared/bench)")
    ap.add_argument("--phases", default="stress,shared,compliance",
                    help="comma-separated: stress (many users), shared (one user), compliance")
    ap.add_argument("--secs", type=int, default=30, help="seconds per stress run (default 30)")
    ap.add_argument("--clients", type=int, default=20, help="imaptest clients in stress (default 20)")
    ap.add_argument("--users", type=int, default=100, help="users the stress clients spread over (default 100)")
    ap.add_argument("--runs", type=int, default=1, help="repeat each stress phase this many times (default 1)")
    ap.add_argument("--no-warm-up", dest="warm_up", action="store_false",
                    help="do not log every stress user in once before the timed run (then our figure includes the "
                         "first-login password hash upgrades)")
    ap.add_argument("--stress-args", default="",
                    help='more imaptest arguments for stress, e.g. "checkpoint=5 search=30 copybox=Other"')
    ap.add_argument("--workers", type=int, default=0,
                    help="run ours as `mailserver serve` with this many worker processes (default: in this process)")
    ap.add_argument("--database-url", default="",
                    help="with --workers/--nodes: a fresh schema of this PostgreSQL database instead of SQLite")
    ap.add_argument("--nodes", type=int, default=1,
                    help="this many `mailserver serve` processes on --database-url, HAProxy in front (send-proxy-v2)")
    ap.add_argument("--reuse-port", action="store_true", help="[server] reuse_port = true (one socket per worker)")
    ap.add_argument("--fsync", choices=("optimized", "always"), default="optimized", help="[store] fsync")
    ap.add_argument("--seed", type=int, default=123)
    ap.add_argument("--mbox", default="", help="messages imaptest APPENDs (default: make-mbox.py 300 messages)")
    ap.add_argument("--logs", default="", help="keep imaptest's logs in this directory (default: a temp dir, kept "
                                               "only when errors were found); imaptest runs there (rawlog files)")
    args = ap.parse_args()

    if not args.imaptest:
        ap.error("no imaptest binary: pass --imaptest or set IMAPTEST")
    imaptest = Path(args.imaptest).resolve()
    if not os.access(imaptest, os.X_OK):
        ap.error(f"{imaptest} is not executable")
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    unknown = set(phases) - {"stress", "shared", "compliance"}
    if unknown:
        ap.error(f"unknown phases: {', '.join(sorted(unknown))}")
    tests = Path(args.tests) if args.tests else imaptest.parent / "tests"
    if "compliance" in phases and not tests.is_dir():
        ap.error(f"no scripted tests directory {tests} (pass --tests)")
    shared = Path(args.shared_bench)

    from mailserver.service import raise_open_files_limit

    raise_open_files_limit()
    work = Path(tempfile.mkdtemp(prefix="imaptest-bench-"))
    work.chmod(0o755)  # Dovecot's mail processes (user "mail") must reach its Maildir below
    logdir = Path(args.logs) if args.logs else work / "logs"
    logdir.mkdir(parents=True, exist_ok=True)
    mbox = Path(args.mbox) if args.mbox else work / "sample.mbox"
    if not args.mbox:
        subprocess.run([sys.executable, str(shared / "make-mbox.py"), "300", str(mbox), "--seed", "1"],
                       check=True, stdout=subprocess.DEVNULL, timeout=300)
    plan = UserPlan(args.users, args.runs)
    found_errors = False
    dovecot = Dovecot(shared / "baseline-dovecot.sh", work, plan.total) if args.dovecot else None
    try:
        limits = {"imap_max_sessions_per_ip": max(50, args.clients * 3)}
        with our_server(work / "ours", limits, args) as (add_user, port, cluster):
            for n in range(1, plan.total + 1):
                add_user(f"user{n}@{OUR_DOMAIN}")
            targets = [Target("ours", port, f"@{OUR_DOMAIN}")]
            if dovecot is not None:
                dovecot.start()
                targets.append(Target("dovecot", dovecot.imap_port, ""))
            print(f"imaptest {imaptest}; {os.cpu_count()} CPUs; logs in {logdir}")
            for phase in phases:
                if phase in ("stress", "shared"):
                    for run in range(1, args.runs + 1):
                        results, balances = {}, {}
                        for t in targets:
                            if phase == "stress":
                                user, users = t.user_template(), plan.stress_range(run)
                                what = f"{args.clients} clients over {args.users} users"
                                logins = [t.user(n) for n in range(users[0], users[1] + 1)]
                            else:
                                user, users = t.user(plan.shared_user(run)), None
                                what = f"{args.clients} clients on one user"
                                logins = [user]
                            if args.warm_up:
                                warm_up(t, logins)
                            log = logdir / f"{phase}-{t.name}-run{run}.log"
                            balance = None
                            if t.name == "ours" and cluster is not None:
                                balance = Balance(cluster.worker_pids(),
                                                  {n.ports["imap"] for n in cluster.nodes}).start()
                            load = os.getloadavg()[0]
                            results[t.name] = stress(imaptest, t, user=user, users=users, clients=args.clients,
                                                     secs=args.secs, seed=args.seed + run, mbox=mbox, log=log,
                                                     cwd=logdir, extra=args.stress_args.split())
                            results[t.name].load = (load, os.getloadavg()[0])
                            if balance is not None:
                                balance.stop()
                                balances[t.name] = balance
                        print(f"({'a' if phase == 'stress' else 'b'}) stress, {what}, {args.secs} s, run {run}:")
                        for name, r in results.items():
                            print(_fmt_stress(name, r))
                            _print_errors(r)
                            if name in balances:
                                cpu = sum(balances[name].cpu.values())
                                print(f"             per worker: {balances[name].summary()}; server CPU "
                                      f"{1000 * cpu / max(1, r.ops):.2f} ms/op")
                            found_errors |= bool(r.errors)
                        if "dovecot" in results and results["dovecot"].ops_per_s:
                            ratio = results["ours"].ops_per_s / results["dovecot"].ops_per_s
                            print(f"    ratio ours/dovecot {ratio:.2f}")
                        sys.stdout.flush()
                elif phase == "compliance":
                    print("(c) scripted compliance (imaptest test=), one group at a time:")
                    for t in targets:
                        res = compliance(imaptest, tests, t, t.user(plan.compliance_user()), logdir, work)
                        print(f"    {t.name:<8} {res.summary()}")
                        if res.not_run:
                            print(f"             not run: {', '.join(f'{g} ({c})' for g, c in res.not_run.items())}")
                        for g in res.failed:
                            found_errors = True
                            print(f"             FAILED {g}:")
                            for ln in res.failure_lines.get(g, []):
                                print(f"                 {ln[:200]}")
                        sys.stdout.flush()
    finally:
        if dovecot is not None:
            dovecot.stop()
        if args.logs or not found_errors:
            shutil.rmtree(work, ignore_errors=True)  # our data directory, Dovecot's, the sample mbox
        else:
            print(f"logs kept in {logdir}")
    return 1 if found_errors else 0


if __name__ == "__main__":
    sys.exit(main())
