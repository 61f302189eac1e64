"""Interop with Debian's offlineimap3: a full sync to a local Maildir over imaps, flags back to the server."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from mailserver.tls import SELF_SIGNED_CERT
from tests.imap.imap_client import PASSWORD, imap_server, login, message, new_user

OFFLINEIMAP = "/usr/bin/offlineimap"


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    with imap_server(tmp_path_factory.mktemp("imap-offlineimap")) as s:
        yield s


def _run(tmp: Path, srv, user: str) -> subprocess.CompletedProcess:
    cfg = tmp / "offlineimaprc"
    cfg.write_text(f"""
[general]
accounts = test
metadata = {tmp}/meta
ui = basic

[Account test]
localrepository = local
remoterepository = remote

[Repository local]
type = Maildir
localfolders = {tmp}/mail

[Repository remote]
type = IMAP
remotehost = localhost
remoteport = {srv.port("imaps")}
remoteuser = {user}
remotepass = {PASSWORD}
ssl = yes
sslcacertfile = {Path(srv.config.data_dir) / SELF_SIGNED_CERT}
# imaplib2 matches only DNS names of the certificate: "localhost" is in our self-signed one (127.0.0.1).
""")
    env = dict(os.environ, HOME=str(tmp))
    proc = subprocess.run([OFFLINEIMAP, "-c", str(cfg), "-o", "-u", "basic"], capture_output=True, text=True,
                          timeout=120, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ERROR" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    return proc


def test_offlineimap_downloads_folders_and_pushes_flags(srv, tmp_path):
    user = new_user(srv)
    srv.deliver(user, message("first", body="one"))
    srv.deliver(user, message("second", body="two"))
    c = login(srv, user)
    c.create("Projects/2026")
    c.append("Projects/2026", None, None, message("filed", body="three"))
    c.logout()

    _run(tmp_path, srv, user)
    mail = tmp_path / "mail"
    inbox = list((mail / "INBOX" / "cur").iterdir()) + list((mail / "INBOX" / "new").iterdir())
    assert len(inbox) == 2
    bodies = sorted(p.read_bytes() for p in inbox)
    assert any(b"Subject: first" in b for b in bodies) and any(b"Subject: second" in b for b in bodies)
    filed = list((mail / "Projects.2026" / "cur").iterdir()) + list((mail / "Projects.2026" / "new").iterdir())
    assert len(filed) == 1 and filed[0].read_bytes().replace(b"\r\n", b"\n").endswith(b"three\n")  # LF on disk

    # Mark one message as flagged locally (Maildir "F" flag), sync again: the server has \Flagged.
    target = next(p for p in inbox if b"Subject: first" in p.read_bytes())
    dest = mail / "INBOX" / "cur" / (target.name.split(":2,")[0] + ":2,FS")
    target.rename(dest)
    _run(tmp_path, srv, user)
    c = login(srv, user, select="INBOX")
    typ, data = c.search(None, "FLAGGED")
    assert typ == "OK" and len(data[0].split()) == 1
    typ, data = c.fetch(data[0].split()[0], "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert b"first" in data[0][1]
    c.logout()
