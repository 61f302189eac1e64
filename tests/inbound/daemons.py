"""Private rspamd and clamd instances for the tests (Debian's packages), on 127.0.0.1 with configs written here.

Both are session fixtures, one instance for the whole run (the first xdist worker that needs one starts it, the
others find it in the run's shared temp dir): ``rspamd_daemon`` and ``clamd_daemon`` give a :class:`Daemon` with
its address; the controller stops each by its PID at the end of the run.  Nothing reads ``/etc`` state: rspamd gets Debian's stock rules
(``CONFDIR=/etc/rspamd``, read only) and everything local (``LOCAL_CONFDIR``, db, run, log) in a temp dir, with
DNS pointed at a closed loopback port so no lookup leaves the machine.  Two test rules let a message ask for a
score (``X-Test-Score: 7.5``) or an action (``X-Test-Action: soft reject``).  clamd gets a signature database
written here: the EICAR test file as an MD5 signature and as a body signature (no signature download is possible).
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import struct
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.processes import popen

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
    process: subprocess.Popen | None  # None in the workers that did not start it
    address: str  # what the server's config names: "http://127.0.0.1:PORT", "127.0.0.1:PORT"
    dir: Path
    unix_socket: str = ""
    pid: int = 0

    def log(self) -> str:
        out = []
        for f in sorted(self.dir.glob("*.log")):
            out.append(f"--- {f.name}\n" + f.read_text(errors="replace")[-4000:])
        return "\n".join(out)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def stop_pid(pid: int) -> None:
    """Stop a daemon we started, by its PID (its parent may be a worker that has exited: wait for it to go)."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 20
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(pid):
        try:
            os.killpg(pid, signal.SIGKILL)  # it runs in its own session: the group of the process we started
        except ProcessLookupError:
            pass


def wait_ready(daemon: "Daemon") -> None:
    deadline = time.monotonic() + START_WAIT
    while not READY[daemon.name](daemon):
        if not _alive(daemon.pid):
            raise RuntimeError(f"{daemon.name} exited:\n{daemon.log()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{daemon.name} did not come up within {START_WAIT}s:\n{daemon.log()}")
        time.sleep(0.1)


def _http_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), 1) as s:
            s.sendall(b"GET /ping HTTP/1.0\r\n\r\n")
            return b"pong" in s.recv(4096)
    except OSError:
        return False


def launch_rspamd(d: Path, workers: int = 1) -> Daemon:
    """Start rspamd (it is ready later: :func:`wait_ready`)."""
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
    count = {workers};
    .include "$CONFDIR/worker-normal.inc"
}}
lua = "{d}/test.lua";
""")
    out = open(d / "stdout.log", "wb")
    proc = popen(
        ["rspamd", "-f", "-i", "-u", "root", "-g", "root", "-c", str(d / "rspamd.conf"), "--var=CONFDIR=/etc/rspamd",
         f"--var=LOCAL_CONFDIR={d}", f"--var=DBDIR={d}/db", f"--var=RUNDIR={d}/run", f"--var=LOGDIR={d}"],
        stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return Daemon("rspamd", proc, f"http://127.0.0.1:{port}", d, pid=proc.pid)


def _clamd_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), 1) as s:
            s.sendall(b"zPING\0")
            return s.recv(100).startswith(b"PONG")
    except OSError:
        return False


def launch_clamd(d: Path) -> Daemon:
    """Start clamd (it is ready later: :func:`wait_ready`)."""
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
    proc = popen(["clamd", "-c", str(d / "clamd.conf")], stdin=subprocess.DEVNULL, stdout=out,
                 stderr=subprocess.STDOUT, start_new_session=True)
    return Daemon("clamd", proc, f"127.0.0.1:{port}", d, unix_socket=str(sock), pid=proc.pid)


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


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


READY = {"rspamd": lambda d: _http_ping(_port(d.address)), "clamd": lambda d: _clamd_ping(_port(d.address))}
LAUNCH = {"rspamd": launch_rspamd, "clamd": launch_clamd}
FIXTURES = {"rspamd_daemon": "rspamd", "clamd_daemon": "clamd"}


def _run_dir(config) -> Path:
    """The temp dir of the whole run, shared by every xdist worker."""
    base = config._tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def shared(name: str, config) -> Daemon:
    """One instance for the whole run, whichever xdist worker asks first (it is launched, not waited for): the
    others find it in the run's shared temp dir.  The controller stops it at the end (pytest_sessionfinish)."""
    root = _run_dir(config)
    info = root / f"daemon-{name}.json"
    with open(root / f"daemon-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if info.exists():
            data = json.loads(info.read_text())
            return Daemon(name, None, data["address"], Path(data["dir"]), data["unix_socket"], data["pid"])
        d = root / f"daemon-{name}"
        d.mkdir(exist_ok=True)
        daemon = LAUNCH[name](d)
        info.write_text(json.dumps({"address": daemon.address, "dir": str(d), "unix_socket": daemon.unix_socket,
                                    "pid": daemon.pid}))
        return daemon


def pytest_collection_modifyitems(session, config, items):
    """Launch the daemons the selected tests need as soon as they are collected: rspamd takes a while to load its
    rules, and comes up while other tests run."""
    needed = {FIXTURES[f] for item in items for f in getattr(item, "fixturenames", ()) if f in FIXTURES}
    for name in sorted(needed):
        shared(name, config)


def pytest_sessionfinish(session):
    """In the controller (or a run without xdist): stop the daemons that any worker started."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return
    factory = getattr(session.config, "_tmp_path_factory", None)
    if factory is None or getattr(factory, "_basetemp", None) is None:
        return
    for info in factory.getbasetemp().glob("daemon-*.json"):
        stop_pid(json.loads(info.read_text())["pid"])
        info.unlink()


@pytest.fixture(scope="session")
def rspamd_daemon(request):
    daemon = shared("rspamd", request.config)
    wait_ready(daemon)
    return daemon


@pytest.fixture(scope="session")
def clamd_daemon(request):
    daemon = shared("clamd", request.config)
    wait_ready(daemon)
    return daemon
