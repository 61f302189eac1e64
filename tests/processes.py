"""Stopping a server process a test started, and everything it started, by its pid in every path.

Start the process with ``start_new_session=True``: it then leads a process group of its own (pgid = its pid),
which its workers inherit.  :func:`stop_group` asks it to stop (SIGTERM), SIGKILLs it after ``timeout``, and
then SIGKILLs whatever is left in its group (a worker that outlived its supervisor) *before* reaping the leader,
so the group id cannot have been handed to anyone else meanwhile.
"""

from __future__ import annotations

import os
import signal
import subprocess
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
