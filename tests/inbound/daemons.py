"""Private rspamd and clamd instances for the tests (Debian's packages), on 127.0.0.1 with configs written here.

Both are session fixtures (one instance per xdist worker, and the tests that use them share one xdist group so
that one worker runs them all): ``rspamd_daemon`` and ``clamd_daemon`` yield a :class:`Daemon` with its address;
each is stopped by its PID at the end.  Nothing reads ``/etc`` state: rspamd gets Debian's stock rules
(``CONFDIR=/etc/rspamd``, read only) and everything local (``LOCAL_CONFDIR``, db, run, log) in a temp dir, with
DNS pointed at a closed loopback port so no lookup leaves the machine.  Two test rules let a message ask for a
score (``X-Test-Score: 7.5``) or an action (``X-Test-Action: soft reject``).  clamd gets a signature database
written here: the EICAR test file as an MD5 signature and as a body signature (no signature download is possible).
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

#: The EICAR anti-virus test file (68 bytes), built from two halves so that no scanner flags this source file.
EICAR = (b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-" + b"ANTIVIRUS-TEST-FILE!$H+H*")
EICAR_MD5 = "44d88612fea8a8f36de82e1278abb02f"
#: rspamd's generic test message pattern.
GTUBE = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-" + b"ANTI-UBE-TEST-EMAIL*C.34X"

#: How long a daemon may take to come up on a loaded machine (a bound, not a measurement).
START_WAIT = 120.0

TEST_RULES = """
rspamd_config:register_symbol({
  name = 'TEST_SCORE', score = 1.0, group = 'test',
  callback = function(task)
    local h = task:get_header('X-Test-Score')
    if h then task:insert_result('TEST_SCORE', tonumber(h) or 0, h) end
  end,
})
rspamd_config:register_symbol({
  name = 'TEST_ACTION', score = 0.0, type = 'prefilter', priority = 10, group = 'test',
  callback = function(task)
    local h = task:get_header('X-Test-Action')
    if h then task:set_pre_result(h, 'test asked for ' .. h) end
  end,
})
"""


@dataclass
class Daemon:
    name: str
    process: subprocess.Popen
    address: str  # what the server's config names: "http://127.0.0.1:PORT", "127.0.0.1:PORT"
    dir: Path
    unix_socket: str = ""

    def log(self) -> str:
        out = []
        for f in sorted(self.dir.glob("*.log")):
            out.append(f"--- {f.name}\n" + f.read_text(errors="replace")[-4000:])
        return "\n".join(out)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the group of the process we started (its own session)
        proc.wait(10)


def _wait_until(proc: subprocess.Popen, ready, what: str, logs) -> None:
    deadline = time.monotonic() + START_WAIT
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{logs()}")
        if ready():
            return
        if time.monotonic() > deadline:
            _stop(proc)
            raise RuntimeError(f"{what} did not come up within {START_WAIT}s:\n{logs()}")
        time.sleep(0.1)


def _http_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), 1) as s:
            s.sendall(b"GET /ping HTTP/1.0\r\n\r\n")
            return b"pong" in s.recv(4096)
    except OSError:
        return False


def start_rspamd(d: Path) -> Daemon:
    for sub in ("db", "run", "local.d", "override.d"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    port = free_port()
    (d / "test.lua").write_text(TEST_RULES)
    (d / "rspamd.conf").write_text(f"""
.include "$CONFDIR/common.conf"
options {{
    .include "$CONFDIR/options.inc"
    pidfile = "{d}/run/rspamd.pid";
    dbdir = "{d}/db";
    dns {{ nameserver = ["127.0.0.1:9"]; timeout = 0.2s; retransmits = 1; }}
}}
logging {{ type = "file"; filename = "{d}/rspamd.log"; level = "error"; }}
worker "normal" {{
    bind_socket = "127.0.0.1:{port}";
    count = 1;
    .include "$CONFDIR/worker-normal.inc"
}}
lua = "{d}/test.lua";
""")
    out = open(d / "stdout.log", "wb")
    proc = subprocess.Popen(
        ["rspamd", "-f", "-i", "-u", "root", "-g", "root", "-c", str(d / "rspamd.conf"), "--var=CONFDIR=/etc/rspamd",
         f"--var=LOCAL_CONFDIR={d}", f"--var=DBDIR={d}/db", f"--var=RUNDIR={d}/run", f"--var=LOGDIR={d}"],
        stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    daemon = Daemon("rspamd", proc, f"http://127.0.0.1:{port}", d)
    _wait_until(proc, lambda: _http_ping(port), "rspamd", daemon.log)
    return daemon


def _clamd_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), 1) as s:
            s.sendall(b"zPING\0")
            return s.recv(100).startswith(b"PONG")
    except OSError:
        return False


def start_clamd(d: Path) -> Daemon:
    (d / "db").mkdir(parents=True, exist_ok=True)
    (d / "db" / "test.hdb").write_text(f"{EICAR_MD5}:{len(EICAR)}:Eicar-Test-Signature\n")
    (d / "db" / "test.ndb").write_text(f"Eicar-Test-Body:0:*:{EICAR.hex()}\n")
    port = free_port()
    sock = d / "clamd.sock"
    (d / "clamd.conf").write_text(f"""Foreground yes
TCPSocket {port}
TCPAddr 127.0.0.1
LocalSocket {sock}
DatabaseDirectory {d}/db
User root
ScanMail yes
ScanArchive yes
LogFile {d}/clamd.log
PidFile {d}/clamd.pid
""")
    out = open(d / "stdout.log", "wb")
    proc = subprocess.Popen(["clamd", "-c", str(d / "clamd.conf")], stdin=subprocess.DEVNULL, stdout=out,
                            stderr=subprocess.STDOUT, start_new_session=True)
    daemon = Daemon("clamd", proc, f"127.0.0.1:{port}", d, unix_socket=str(sock))
    _wait_until(proc, lambda: _clamd_ping(port), "clamd", daemon.log)
    return daemon


def instream(port: int, data: bytes) -> bytes:
    """A direct INSTREAM scan (to check the test signatures themselves)."""
    with socket.create_connection(("127.0.0.1", port), 10) as s:
        s.sendall(b"zINSTREAM\0" + struct.pack(">I", len(data)) + data + b"\0\0\0\0")
        out = b""
        while b"\0" not in out:
            chunk = s.recv(4096)
            if not chunk:
                break
            out += chunk
        return out


@pytest.fixture(scope="session")
def rspamd_daemon(tmp_path_factory):
    daemon = start_rspamd(tmp_path_factory.mktemp("rspamd"))
    try:
        yield daemon
    finally:
        _stop(daemon.process)


@pytest.fixture(scope="session")
def clamd_daemon(tmp_path_factory):
    daemon = start_clamd(tmp_path_factory.mktemp("clamd"))
    try:
        yield daemon
    finally:
        _stop(daemon.process)
