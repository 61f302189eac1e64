"""A real ``mailserver serve`` process for tests that measure the server as a whole (memory, descriptors).

``served(tmp_path, listeners, limits=...)`` writes a configuration, adds one account with the CLI, starts the
server and waits until every listener listens; ``.rss()`` is the process's resident set (``VmRSS`` of
``/proc/PID/status``). The process is stopped (SIGTERM, then SIGKILL) when the block ends.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from tests.processes import popen, stop_group

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "s3cret-pass"


def user(i: int = 0) -> str:
    """The address of the ``i``-th account that :func:`served` creates (all have :data:`PASSWORD`)."""
    return f"user{i}@example.test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)


class Served:
    def __init__(self, proc: subprocess.Popen, ports: dict[str, int]):
        self.proc = proc
        self.ports = ports
        self.stderr: list[str] = []
        threading.Thread(target=self._collect, daemon=True).start()

    def _collect(self) -> None:
        for line in self.proc.stderr:
            self.stderr.append(line)

    def port(self, name: str) -> int:
        return self.ports[name]

    def rss(self) -> int:
        """Resident set size of the server process, in bytes."""
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def log(self) -> str:
        return "".join(self.stderr)




@contextmanager
def served(tmp_path: Path, listeners=("smtp",), limits: dict | None = None, extra: str = "", users: int = 1):
    ports = {name: free_port() for name in listeners}
    conf = tmp_path / "served.toml"
    text = f'hostname = "mail.example.test"\ndata_dir = "{tmp_path / "data"}"\n[listen]\n'
    text += "".join(f'{name} = ["127.0.0.1:{port}"]\n' for name, port in ports.items())
    text += '[queue]\nrun = false\n[dns]\nnameservers = ["127.0.0.1:9"]\n'
    text += "[server]\nworkers = 1\n"  # one process serves everything: the one whose memory is measured
    if limits:
        text += "[limits]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in limits.items())
    text += extra
    text += '[[domain]]\nname = "example.test"\n'
    conf.write_text(text)
    cli = [sys.executable, "-m", "mailserver", "--config", str(conf)]
    for i in range(users):
        subprocess.run(cli + ["user", "add", user(i), "--password-stdin"], input=PASSWORD + "\n", text=True,
                       cwd=ROOT, check=True, capture_output=True, timeout=120)
    proc = popen(cli + ["serve"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                 cwd=ROOT, start_new_session=True)  # its own group: stop_group ends all of it
    try:
        srv = Served(proc, ports)
        deadline = time.monotonic() + 60
        want = [f"listening {name} on 127.0.0.1:{port}" for name, port in ports.items()]
        while not all(w in srv.log() for w in want):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the server did not start:\n{srv.log()}")
            time.sleep(0.05)
        yield srv
    finally:
        stop_group(proc, timeout=30)
