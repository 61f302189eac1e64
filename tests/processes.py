"""Stopping a server process a test started, and everything it started, by its pid in every path.

Start the process with ``start_new_session=True``: it then leads a process group of its own (pgid = its pid),
which its workers inherit.  :func:`stop_group` asks it to stop (SIGTERM), SIGKILLs it after ``timeout``, and
then SIGKILLs whatever is left in its group (a worker that outlived its supervisor) *before* reaping the leader,
so the group id cannot have been handed to anyone else meanwhile.

:func:`popen` starts such a process and hands its pid to a *reaper*: a small process of its own session that reads
this test process's pipe.  When the test process ends in any way (a normal exit, a crash, ``kill -9``, a CI
timeout) the pipe closes and the reaper SIGKILLs every process still registered, with its group, so no daemon or
server outlives the run.  A pid is only killed if it still has the start time it had when it was registered (a
pid the system has since given to another process is left alone).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time


def _exited(pid: int) -> bool:
    """The process has exited (it stays a zombie: not reaped, so its pid and group id stay ours)."""
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True  # already reaped
    return info is not None


def stop_group(proc: subprocess.Popen, timeout: float = 60.0, sig: int = signal.SIGTERM) -> None:
    """Stop ``proc`` (started with ``start_new_session=True``) and every process left in its group."""
    pid = proc.pid
    if proc.returncode is None:
        if not _exited(pid):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + timeout
            while not _exited(pid) and time.monotonic() < deadline:
                time.sleep(0.05)  # a bound on how long a stop may take, not a measurement
            if not _exited(pid):
                os.kill(pid, signal.SIGKILL)
                while not _exited(pid):
                    time.sleep(0.01)
        try:
            os.killpg(pid, signal.SIGKILL)  # the leader is a zombie: the group is still the one we started
        except (ProcessLookupError, PermissionError):
            pass
    proc.wait()  # its output pipes end with it (readers see end of file)
    unwatch(pid)


REAPER = r"""
import os, signal, sys

def start_time(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[19]  # start time, clock ticks since boot

watched = {}
for line in sys.stdin:
    op, pid, *rest = line.split()
    if op == "+":
        watched[int(pid)] = rest
    else:
        watched.pop(int(pid), None)
for pid, (start, group) in watched.items():
    now = start_time(pid)
    if now != start:
        continue  # gone (or its pid is another process's now)
    try:
        if group == "1":
            os.killpg(pid, signal.SIGKILL)
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
"""

_reaper: subprocess.Popen | None = None


def _start_time(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _tell_reaper(line: str) -> None:
    global _reaper
    if _reaper is None or _reaper.poll() is not None:
        # Its own session: a Ctrl-C to the test run's terminal group does not end it before it has done its work.
        # Only this process holds the pipe's write end (pipes are not inherited by the processes tests start).
        _reaper = subprocess.Popen([sys.executable, "-c", REAPER], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, start_new_session=True, text=True)
    try:
        _reaper.stdin.write(line)
        _reaper.stdin.flush()
    except (BrokenPipeError, ValueError):
        pass


def watch(pid: int, group: bool) -> None:
    """Kill ``pid`` (and its process group, if ``group``: it was started with ``start_new_session=True``) should
    this test process end before stopping it."""
    start = _start_time(pid)
    if start is not None:
        _tell_reaper(f"+ {pid} {start} {int(group)}\n")


def unwatch(pid: int) -> None:
    _tell_reaper(f"- {pid}\n")


def popen(args, **kwargs) -> subprocess.Popen:
    """``subprocess.Popen`` whose process (and group, with ``start_new_session=True``) dies with the test run."""
    proc = subprocess.Popen(args, **kwargs)
    watch(proc.pid, bool(kwargs.get("start_new_session")))
    return proc
