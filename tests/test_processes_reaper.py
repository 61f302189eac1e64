"""The reaper of tests/processes.py: what a test run started dies with it, even when the run is killed with -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# A stand-in for a test process: starts a server-like group (a shell with a child) through popen, prints the pids,
# then waits to be killed.
RUN = r"""
import subprocess, sys, time
from tests.processes import popen
group = popen(["sh", "-c", "sleep 300 & echo $!; wait"], stdout=subprocess.PIPE, text=True, start_new_session=True)
child = group.stdout.readline().strip()
plain = popen(["sleep", "300"])
print(group.pid, child, plain.pid, flush=True)
time.sleep(300)
"""


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def test_processes_started_by_a_killed_test_run_are_killed_with_their_group():
    run = subprocess.Popen([sys.executable, "-c", RUN], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    pids: list[int] = []
    try:
        pids = [int(p) for p in run.stdout.readline().split()]
        assert len(pids) == 3 and all(_running(p) for p in pids)
        run.send_signal(signal.SIGKILL)
        run.wait()
        deadline = time.monotonic() + 30
        while any(_running(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)  # a bound, not a measurement
        assert not any(_running(p) for p in pids), [p for p in pids if _running(p)]
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_a_pid_now_of_another_process_is_spared():
    """The reaper kills a registered pid only if its start time is still the one registered: a number the system
    has given to another process since is left alone."""
    code = r"""
import subprocess
from tests import processes
other = subprocess.Popen(["sleep", "300"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
processes._tell_reaper(f"+ {other.pid} 1 1\n")  # registered with another start time: an older process's pid
print(other.pid, processes._reaper.pid, flush=True)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    pid, reaper = (int(p) for p in out.stdout.split())
    try:
        deadline = time.monotonic() + 30
        while _running(reaper) and time.monotonic() < deadline:
            time.sleep(0.05)  # the reaper has read end of file and done its work once it is gone
        assert not _running(reaper)
        assert _running(pid)
    finally:
        os.killpg(pid, signal.SIGKILL)
