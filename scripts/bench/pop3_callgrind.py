#!/usr/bin/env python3
"""pop3_callgrind.py TREE N OUTDIR: user-space instructions of ``mailserver serve --workers 1`` (from TREE) over one
logged-in session's LIST, N RETR of 5 KB and QUIT (callgrind, every thread; the kernel is not counted).

The login is outside the window (no argon2 in it): instrumentation goes on after PASS (``callgrind_control -i on``).
Per RETR: (Ir at N=250 - Ir at N=50) / 200.
"""

from __future__ import annotations

import os
import poplib
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pop3 as B  # noqa: E402


def main() -> None:
    tree, n, out = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
    out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="pop3-cg-"))
    (port,) = B.free_ports(1)
    conf, fill = B.write_config(workdir, port, 1)
    users = B.fill_deployed(fill, 1, n, 5000)
    log_path = workdir / "serve.log"
    log = open(log_path, "w")
    p = subprocess.Popen(["valgrind", "--tool=callgrind", "--instr-atstart=no",
                          f"--callgrind-out-file={out}/callgrind.out.%p", sys.executable, "-m", "mailserver",
                          "--config", str(conf), "serve", "--workers", "1"],
                         stdout=log, stderr=subprocess.STDOUT, cwd=tree, env=dict(os.environ, PYTHONPATH=str(tree)))
    try:
        deadline = time.time() + 900
        while "listening pop3 on" not in log_path.read_text(errors="replace"):
            if time.time() > deadline or p.poll() is not None:
                raise SystemExit("no start:\n" + log_path.read_text()[-2000:])
            time.sleep(0.5)
        c = poplib.POP3("127.0.0.1", port, timeout=600)
        c.user(users[0])
        c.pass_(B.PASSWORD)
        c.noop()
        subprocess.run(["callgrind_control", "-i", "on", str(p.pid)], check=True, capture_output=True)
        _, listing, _ = c.list()
        for e in listing:
            c.retr(int(e.split()[0]))
        c.quit()
        time.sleep(0.5)
        subprocess.run(["callgrind_control", "-i", "off", str(p.pid)], check=True, capture_output=True)
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=600)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)
    time.sleep(3)
    total = 0
    for f in out.glob(f"callgrind.out.{p.pid}*"):
        for line in open(f):
            if line.startswith("totals:"):
                total = max(total, int(line.split()[1]))
    print(f"{tree} N={n}: {total} Ir", flush=True)


if __name__ == "__main__":
    main()
