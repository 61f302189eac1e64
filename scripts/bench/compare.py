#!/usr/bin/env python3
"""Before/after benchmark: the same benchmark scripts against an older revision and this tree, interleaved.

    .venv/bin/python scripts/bench/compare.py [--before 1e6b12a] [--rounds 3] [--only store,smtp,pop3,imap,webmail]
        [--worktree DIR] [--keep] [--json OUT] [--scale small]
    .venv/bin/python scripts/bench/compare.py --render OUT      # the figures of a --json file as Markdown

What it does:

1. checks the ``--before`` revision out into a temporary git worktree (``git worktree add --detach``; removed at the
   end unless ``--keep``) and copies THIS tree's benchmark scripts into it, so both sides run the same script and
   the same load (the scripts drive their server over sockets, or through ``deliver_raw``, which both revisions
   have; ``store.py`` and ``pop3.py`` accept either revision's server object);
2. runs every chosen benchmark ``--rounds`` times on each side, alternating: before, after, before, after, ...
   (each run a fresh process with a fresh data directory, both sides with this interpreter and its packages; the
   tree under test comes first on ``sys.path``, which the harness checks);
3. prints, per figure, the median and the range (min-max) of each side and the ratio after/before of the medians,
   as a speed: above 1.00 means faster after, 0.95 is the 5 % limit. Times (ms, s) are turned into speeds for the
   ratio (before time / after time); memory figures are ratios of sizes (below 1.00 is smaller after).

The machine is shared: read the spread before the ratio, and re-run (``--only`` one benchmark, more ``--rounds``)
when the ranges overlap the limit.  Scales are chosen so one round of everything takes a few minutes; each
benchmark's own defaults are larger (see docs/benchmarks.md for both).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BEFORE = "1e6b12a"
SCRIPTS = ("store.py", "smtp.py", "pop3.py", "imap.py", "webmail.py", "imaptest.py")
IMAPTEST = os.environ.get("IMAPTEST") or "/work/tools/imaptest/src/imaptest"
RUN_TIMEOUT = 900  # seconds for one benchmark process: a bound, not a measurement


@dataclass(frozen=True)
class Figure:
    name: str
    unit: str
    higher_is_better: bool = True
    memory: bool = False


@dataclass
class Bench:
    name: str
    args: list[str]
    figures: list[Figure]
    parse: object  # text -> {figure name: value}
    samples: dict = field(default_factory=dict)  # (side, figure) -> [values]


def _store(text: str) -> dict:
    out = {}
    for m in re.finditer(r"(\d+) mailbox\(es\)\s+(\d+) KB:\s+(\d+) deliveries/s.*CPU ([\d.]+) ms", text):
        out[f"store {m[1]} mailbox(es) {m[2]} KB"] = float(m[3])
        out[f"store {m[1]} mailbox(es) {m[2]} KB, CPU"] = float(m[4])
    return out


def _smtp(text: str) -> dict:
    m = re.search(r"rate=(\d+) msg/s .* server_cpu=([\d.]+) ms/msg server_peak_rss=(\d+) MiB", text)
    return ({"smtp 10 sessions 5 KB": float(m[1]), "smtp 10 sessions 5 KB, server CPU": float(m[2]),
             "smtp server peak RSS": float(m[3])} if m else {})


def _pop3(text: str) -> dict:
    out = {}
    m = re.search(r"filled (\d+) maildrops x (\d+) messages of ~\d+ octets in ([\d.]+) s", text)
    if m:
        out["pop3 fill (deliver_raw)"] = int(m[1]) * int(m[2]) / float(m[3])
    m = re.search(r"round 1: .*?: (\d+) messages/s", text)
    if m:
        out["pop3 10 sessions RETR"] = float(m[1])
    return out


def _imap(text: str) -> dict:
    out = {}
    m = re.search(r"select \(cold\)\s+([\d.]+) ms\s+([\d.]+) ms", text)
    if m:
        out["imap SELECT cold, large"] = float(m[1])
        out["imap SELECT cold, small"] = float(m[2])
    for key, label in (("select", "SELECT"), ("uid_fetch_flags", "UID FETCH 1:* FLAGS"),
                       ("headers_newest_50", "headers newest 50"), ("search_unseen", "SEARCH UNSEEN")):
        m = re.search(rf"^\s+{key}\s+([\d.]+) ms\s+([\d.]+) ms", text, re.M)
        if m:
            out[f"imap {label}, large"] = float(m[1])
            out[f"imap {label}, small"] = float(m[2])
    m = re.search(r"([\d.]+) KB per session", text)
    if m:
        out["imap IDLE RSS per session"] = float(m[1])
    m = re.search(r"the last after ([\d.]+) s", text)
    if m:
        out["imap IDLE all see a delivery"] = float(m[1]) * 1000
    return out


def _webmail(text: str) -> dict:
    out = {}
    for m in re.finditer(r"(\d+) messages: list page\s+([\d.]+) ms .*open message\s+([\d.]+) ms", text):
        out[f"webmail list page, {m[1]}"] = float(m[2])
        out[f"webmail open message, {m[1]}"] = float(m[3])
    m = re.search(r"concurrent clients: (\d+) requests/s", text)
    if m:
        out["webmail list page, 10 clients"] = float(m[1])
    return out


def _imaptest(text: str) -> dict:
    out = {}
    for phase, label in (("a", "imaptest stress, 20 clients over 100 users"), ("b", "imaptest stress, 20 clients on 1 user")):
        m = re.search(rf"^\({phase}\) stress.*\n\s+ours\s+([\d.]+) ops/s\s+(\d+) errors", text, re.M)
        if m:
            out[label] = float(m[1])
            out[label + ", errors"] = float(m[2])
    return out


def benches(scale: str, imaptest: str = IMAPTEST) -> dict[str, Bench]:
    small = scale == "small"
    store_count = "2000" if small else "10000"
    imap_large, imap_idle = ("5000", "200") if small else ("20000", "1000")
    wm_large = "5000" if small else "20000"
    ms = lambda n: Figure(n, "ms", higher_is_better=False)  # noqa: E731
    return {
        "store": Bench("store", ["store.py", "--count", store_count],
                       [Figure(f"store {m} mailbox(es) {s} KB", "deliveries/s") for m in (1, 100) for s in (5, 100)]
                       + [Figure(f"store {m} mailbox(es) {s} KB, CPU", "ms/delivery", higher_is_better=False)
                          for m in (1, 100) for s in (5, 100)],
                       _store),
        "smtp": Bench("smtp", ["smtp.py", "--messages", "1000" if small else "3000"],
                      [Figure("smtp 10 sessions 5 KB", "msg/s"),
                       Figure("smtp 10 sessions 5 KB, server CPU", "ms/msg", higher_is_better=False),
                       Figure("smtp server peak RSS", "MiB", higher_is_better=False, memory=True)], _smtp),
        "pop3": Bench("pop3", ["pop3.py", "--messages", "200" if small else "500"],
                      [Figure("pop3 10 sessions RETR", "msg/s"), Figure("pop3 fill (deliver_raw)", "msg/s")], _pop3),
        "imap": Bench("imap", ["imap.py", "--messages", imap_large, "--small", "1000", "--idle", imap_idle,
                                 "--repeat", "15"],
                      [ms(f"imap {k}, {s}") for k in ("SELECT cold", "SELECT", "UID FETCH 1:* FLAGS",
                                                       "headers newest 50", "SEARCH UNSEEN")
                       for s in ("large", "small")]
                      + [Figure("imap IDLE RSS per session", "KB", higher_is_better=False, memory=True),
                         ms("imap IDLE all see a delivery")], _imap),
        "webmail": Bench("webmail", ["webmail.py", "--large", wm_large, "--seconds", "5"],
                         [ms(f"webmail {k}, {n}") for k in ("list page", "open message") for n in (1000, wm_large)]
                         + [Figure("webmail list page, 10 clients", "req/s")], _webmail),
        "imaptest": Bench("imaptest", ["imaptest.py", "--imaptest", imaptest,
                                       "--shared-bench", str(ROOT.parent / "shared" / "bench"), "--phases", "stress,shared",
                                       "--secs", "10" if small else "20", "--runs", "1"],
                          [Figure(f"imaptest stress, 20 clients {w}", "ops/s") for w in ("over 100 users", "on 1 user")]
                          + [Figure(f"imaptest stress, 20 clients {w}, errors", "errors", memory=True)
                             for w in ("over 100 users", "on 1 user")], _imaptest),
    }


# --------------------------------------------------------------------------------------------- trees


def prepare_before(rev: str, path: Path) -> Path:
    if not (path / ".git").exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), rev], check=True,
                       stdout=subprocess.DEVNULL)
    for name in SCRIPTS:  # the same scripts on both sides
        shutil.copy2(ROOT / "scripts" / "bench" / name, path / "scripts" / "bench" / name)
    return path


def remove_before(path: Path) -> None:
    subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)], check=False)
    if path.name == "tree" and path.parent.name.startswith("bench-before-"):
        shutil.rmtree(path.parent, ignore_errors=True)  # the run's own directory (the default)


def check_tree(tree: Path) -> None:
    """The interpreter imports the tree under test, not the editable install of this one."""
    code = "import mailserver, storage; print(mailserver.__file__); print(storage.__file__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=tree, env=_env(tree), capture_output=True, text=True,
                         check=True).stdout.split()
    for f in out:
        if not Path(f).resolve().is_relative_to(tree.resolve()):
            raise SystemExit(f"{tree}: imports {f} from another tree")


def _env(tree: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(tree)
    env.pop("MAILSERVER_TEST_DATABASE_URL", None)  # SQLite on both sides (store.py would add PostgreSQL runs)
    if Path("/usr/lib/dovecot/libdovecot.so.0").exists():  # imaptest built against Debian's dovecot-dev
        env["LD_LIBRARY_PATH"] = ":".join(p for p in ("/usr/lib/dovecot", env.get("LD_LIBRARY_PATH", "")) if p)
    return env


def run_one(tree: Path, bench: Bench, log) -> dict:
    cmd = [sys.executable, str(tree / "scripts" / "bench" / bench.args[0]), *bench.args[1:]]
    t0 = time.monotonic()
    p = subprocess.run(cmd, cwd=tree, env=_env(tree), capture_output=True, text=True, timeout=RUN_TIMEOUT)
    log.write(f"$ {' '.join(cmd)}  (exit {p.returncode}, {time.monotonic() - t0:.0f} s)\n{p.stdout}{p.stderr}\n")
    log.flush()
    values = bench.parse(p.stdout)
    missing = [f.name for f in bench.figures if f.name not in values]
    if missing:
        raise RuntimeError(f"{bench.name} in {tree} (exit {p.returncode}): no figure for {missing} in:\n"
                           f"{p.stdout[-2000:]}{p.stderr[-2000:]}")
    if p.returncode != 0:  # imaptest.py exits 1 when imaptest reported errors: counted as a figure
        print(f"note: {bench.name} in {tree} exited {p.returncode} (see {log.name})", flush=True)
    return values


# --------------------------------------------------------------------------------------------- report


def _fmt(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 else f"{v:.2f}" if v < 10 else f"{v:.1f}"


def summary(selected: list[Bench]) -> tuple[str, list[dict]]:
    lines = [f"{'figure':<38} {'unit':<13} {'before median (range)':>26} {'after median (range)':>26} "
             f"{'ratio':>6}"]
    rows = []
    for b in selected:
        for f in b.figures:
            bv, av = b.samples.get(("before", f.name), []), b.samples.get(("after", f.name), [])
            if not bv or not av:
                continue
            bm, am = statistics.median(bv), statistics.median(av)
            ratio = (am / bm if f.higher_is_better or f.memory else bm / am) if bm and am else float("nan")
            rows.append({"figure": f.name, "unit": f.unit, "higher_is_better": f.higher_is_better,
                         "memory": f.memory, "before": bv, "after": av, "before_median": bm, "after_median": am,
                         "ratio": ratio})
            flag = "" if f.memory else ("  <-- outside 5 %" if ratio < 0.95 else "")
            lines.append(f"{f.name:<38} {f.unit:<13} "
                         f"{_fmt(bm) + ' (' + _fmt(min(bv)) + '-' + _fmt(max(bv)) + ')':>26} "
                         f"{_fmt(am) + ' (' + _fmt(min(av)) + '-' + _fmt(max(av)) + ')':>26} {ratio:>6.2f}{flag}")
    return "\n".join(lines), rows


def markdown(data: dict) -> str:
    """The figures of a ``--json`` file as a Markdown table (docs/benchmarks.md)."""
    lines = ["| figure | unit | before: median (range) | after: median (range) | ratio |",
             "| --- | --- | --- | --- | --- |"]
    for r in data["figures"]:
        bv, av = r["before"], r["after"]
        ratio = "—" if r["ratio"] != r["ratio"] else f"{r['ratio']:.2f}"  # NaN: 0 errors on both sides
        lines.append(f"| {r['figure']} | {r['unit']} | {_fmt(r['before_median'])} ({_fmt(min(bv))}–{_fmt(max(bv))}) "
                     f"| {_fmt(r['after_median'])} ({_fmt(min(av))}–{_fmt(max(av))}) | {ratio} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", default=BEFORE, help=f"revision to compare with (default {BEFORE})")
    ap.add_argument("--worktree", default="", help="where to check it out (default a new /tmp/bench-before-REV-*/tree)")
    ap.add_argument("--keep", action="store_true", help="keep the worktree afterwards")
    ap.add_argument("--rounds", type=int, default=3, help="runs per side and benchmark (default 3)")
    ap.add_argument("--only", default="", help="comma-separated benchmarks (default: all; imaptest only when its "
                    "binary is found)")
    ap.add_argument("--imaptest", default=IMAPTEST, help=f"imaptest binary (default $IMAPTEST or {IMAPTEST})")
    ap.add_argument("--scale", choices=("full", "small"), default="full", help="small: a quick check")
    ap.add_argument("--json", default="", help="also write every sample to this file")
    ap.add_argument("--log", default="", help="the benchmarks' own output (default /tmp/bench-compare-TIME.log)")
    ap.add_argument("--render", default="", help="print the figures of a --json file as a Markdown table, run nothing")
    args = ap.parse_args()
    if args.render:
        print(markdown(json.loads(Path(args.render).read_text())))
        return 0
    all_benches = benches(args.scale, args.imaptest)
    names = args.only.split(",") if args.only else [n for n in all_benches
                                                     if n != "imaptest" or os.access(args.imaptest, os.X_OK)]
    selected = [all_benches[n] for n in names if n]
    rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", args.before], check=True,
                         capture_output=True, text=True).stdout.strip()
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], check=True,
                          capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    # A fresh directory per run by default: helpers sharing a machine each run their own comparison, and a shared
    # /tmp/bench-before-REV got the other run's scripts copied in (and was removed when that run ended).
    before = Path(args.worktree) if args.worktree else Path(tempfile.mkdtemp(prefix=f"bench-before-{rev}-")) / "tree"
    log_path = Path(args.log or f"/tmp/bench-compare-{time.strftime('%Y%m%d-%H%M%S')}.log")
    prepare_before(rev, before)
    sides = {"before": before, "after": ROOT}
    try:
        for tree in sides.values():
            check_tree(tree)
        print(f"before = {rev} ({before}), after = {head}{' + uncommitted changes' if dirty else ''} ({ROOT}); "
              f"{args.rounds} rounds, scale {args.scale}; load average {os.getloadavg()[0]:.1f}; log {log_path}",
              flush=True)
        loads = []
        with open(log_path, "w") as log:
            for r in range(args.rounds):
                for b in selected:
                    for side in ("before", "after"):  # alternating: before, after, before, after, ...
                        loads.append(os.getloadavg()[0])
                        values = run_one(sides[side], b, log)
                        for k, v in values.items():
                            b.samples.setdefault((side, k), []).append(v)
                        print(f"round {r + 1} {b.name:<8} {side:<6} "
                              + ", ".join(f"{k.split(' ', 1)[1]}: {_fmt(v)}" for k, v in values.items()),
                              flush=True)
        text, rows = summary(selected)
        print(f"\nload average during the run: {min(loads):.1f}-{max(loads):.1f}\n{text}")
        if args.json:
            Path(args.json).write_text(json.dumps({"before": rev, "after": head, "dirty": bool(dirty),
                                                   "rounds": args.rounds, "scale": args.scale,
                                                   "load": [min(loads), max(loads)], "figures": rows}, indent=1))
    finally:
        if not args.keep:
            remove_before(before)
    return 0


if __name__ == "__main__":
    sys.exit(main())
