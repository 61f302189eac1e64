"""Debian's Postfix as the sending MTA: a private instance relays to our MX over STARTTLS.

Postfix's smtp client ends each session the way that used to leak our per-address connection count: the final
``.`` and ``QUIT`` in one write (``smtp_skip_quit_response``) and a close without waiting for the 221. With
``smtp_connection_cache_on_demand = no`` every message is its own TLS session, so 50 messages are 50 sessions
against a cap of 20 per address.
"""

from __future__ import annotations

import os
import shutil
import signal
import smtplib
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.harness import running_server
from tests.processes import popen

POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"
COUNT = 50

MASTER_CF = """\
{listen} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivatePostfix:
    """A Postfix master in the foreground (``postfix start-fg``) with its own config and queue directories."""

    def __init__(self, base: Path, relay_port: int):
        self.base = base
        self.conf = base / "etc"
        self.port = _free_port()
        for d in (self.conf, base / "spool", base / "data"):
            d.mkdir(parents=True)
        shutil.chown(base / "data", "postfix")
        (self.conf / "main.cf").write_text(f"""\
compatibility_level = 3.6
queue_directory = {base}/spool
data_directory = {base}/data
maillog_file = {base}/maillog
maillog_file_prefixes = {base}
syslog_name = postfix-test
myhostname = relay.example.net
mydomain = example.net
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relay_domains = example.test
transport_maps = inline:{{ example.test=smtp:[127.0.0.1]:{relay_port} }}
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_peername_lookup = no
default_transport = error:outbound mail disabled
local_transport = error:local delivery disabled
alias_maps =
alias_database =
biff = no
smtp_tls_security_level = may
smtp_tls_loglevel = 1
smtp_connection_cache_on_demand = no
# Below the server's per-address cap with room for sessions still closing (the cap, not the leak, would refuse).
smtp_destination_concurrency_limit = 10
smtp_skip_quit_response = yes
""")
        (self.conf / "master.cf").write_text(MASTER_CF.format(listen=f"127.0.0.1:{self.port}"))
        subprocess.run([POSTFIX, "-c", str(self.conf), "check"], check=True, capture_output=True)
        self.proc = popen([POSTFIX, "-c", str(self.conf), "start-fg"], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("postfix did not start: " + self.log()) from None
                time.sleep(0.1)

    def log(self) -> str:
        p = self.base / "maillog"
        return p.read_text(errors="replace") if p.exists() else ""

    def master_pid(self) -> int | None:
        """Postfix's master makes itself a session leader (setsid), outside the group of ``start-fg``: its own pid
        file names it."""
        try:
            return int((self.base / "spool" / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        master = self.master_pid()
        groups = [g for g in (master, self.proc.pid) if g]
        for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
            for g in groups:
                try:
                    os.killpg(g, sig)  # the master and every daemon it started (postlogd, tlsmgr, smtp, ...)
                except (ProcessLookupError, PermissionError):
                    pass
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and (self.proc.poll() is None or _alive(master)):
                time.sleep(0.1)
            if self.proc.poll() is not None and not _alive(master):
                return
        raise RuntimeError(f"postfix (master pid {master}) did not stop")


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(os.geteuid() != 0, reason="a private Postfix instance needs root (CI runs as root)")
def test_postfix_relays_50_messages_over_starttls_all_accepted(tmp_path):
    with running_server(tmp_path, listeners=("smtp",), limits={"smtp_max_sessions_per_ip": 20}) as srv:
        srv.add_user("alice@example.test", "secret")
        # Postfix's unprivileged processes must reach their queue: pytest's tmp_path is private to root.
        base = Path(tempfile.mkdtemp(prefix="postfix-test-"))
        base.chmod(0o755)
        postfix = PrivatePostfix(base, srv.port("smtp"))
        try:
            with smtplib.SMTP("127.0.0.1", postfix.port, timeout=30) as c:
                for i in range(COUNT):
                    c.sendmail("sender@example.net", ["alice@example.test"],
                               f"From: sender@example.net\r\nTo: alice@example.test\r\nSubject: relayed {i}\r\n"
                               f"Message-ID: <relayed-{i}@example.net>\r\n\r\nMessage {i}.\r\n")
            acct = srv.store.get_account("alice@example.test")
            mb = srv.store.get_mailbox(acct.id, "INBOX")
            deadline = time.monotonic() + 180
            while len(srv.store.list_messages(mb.id)) < COUNT:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            # Postfix logs status=sent once it has read our 250, which follows the commit: wait for the log too.
            while postfix.log().count("status=sent") < COUNT and time.monotonic() < deadline:
                time.sleep(0.2)
            log = postfix.log()
            while log.count("status=sent") < COUNT and time.monotonic() < deadline:
                time.sleep(0.2)  # Postfix logs "status=sent" after our 250, which may come after the commit we saw
                log = postfix.log()
            got = srv.store.list_messages(mb.id)
            assert len(got) == COUNT, f"{len(got)} of {COUNT} delivered; postfix log:\n{log[-4000:]}"
            assert "Too many connections" not in log
            assert log.count("status=sent") == COUNT
            assert "Trusted TLS connection" in log or "Untrusted TLS connection" in log or \
                "Anonymous TLS connection" in log
            first = srv.store.read_blob(srv.store.get_messages(mb.id, [got[0].uid])[0].blob_id)
            assert b"ESMTPS" in first.split(b"\r\n\r\n", 1)[0]
            srv.wait_for(lambda: srv.server_sessions("smtp") == 0)
        finally:
            postfix.stop()
            shutil.rmtree(base, ignore_errors=True)
