"""Interop with Debian's mbsync (isync) and offlineimap3 against shared mailboxes: with generated configs both
sync ``Shared/<name>`` and an ``Other Users/<address>/INBOX`` mailbox to a local Maildir, and mbsync's \\Seen goes
back as the member's own (the other member's copy stays unseen)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from mailserver.tls import SELF_SIGNED_CERT
from tests.imap.imap_client import PASSWORD, imap_server, login, message, new_user
from tests.shared.test_shared_flow import department

MBSYNC = "/usr/bin/mbsync"
OFFLINEIMAP = "/usr/bin/offlineimap"


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    with imap_server(tmp_path_factory.mktemp("shared-interop")) as s:
        yield s


def _setup(srv):
    """(member, the other member, the shared mailbox, another user's INBOX shared with the member)."""
    mailbox, address, (m1, m2) = department(srv)
    for i in range(2):
        srv.deliver(address, message(f"team {i}", to=address))
    owner = new_user(srv)
    srv.deliver(owner, message("delegated", to=owner))
    acct = srv.store.get_account(owner)
    srv.store.set_acl(srv.store.get_mailbox(acct.id, "INBOX").id, m1, "lrsw")
    return m1, m2, mailbox, f"Other Users/{owner}/INBOX"


def _files(base: Path) -> list[Path]:
    return sorted(p for sub in ("cur", "new") for p in (base / sub).glob("*") if p.is_file())


def _mbsync(tmp: Path, srv, user: str) -> None:
    maildir = tmp / "mail"
    maildir.mkdir(exist_ok=True)
    cfg = tmp / "mbsyncrc"
    cfg.write_text(f"""
IMAPAccount test
Host 127.0.0.1
Port {srv.port("imaps")}
User {user}
Pass {PASSWORD}
SSLType IMAPS
CertificateFile {Path(srv.config.data_dir) / SELF_SIGNED_CERT}
SystemCertificates no
AuthMechs LOGIN PLAIN

IMAPStore remote
Account test

MaildirStore local
Path {maildir}/
Inbox {maildir}/INBOX
SubFolders Verbatim

Channel sync
Far :remote:
Near :local:
Patterns * "Shared/*" "Other Users/*"
Create Near
Expunge None
SyncState *
""")
    env = dict(os.environ, HOME=str(tmp))
    proc = subprocess.run([MBSYNC, "-c", str(cfg), "-a"], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mbsync_syncs_shared_and_other_users_mailboxes(srv, tmp_path):
    m1, m2, mailbox, other = _setup(srv)
    _mbsync(tmp_path, srv, m1)
    shared_files = _files(tmp_path / "mail" / mailbox)
    assert len(shared_files) == 2
    assert any(b"Subject: team 0" in p.read_bytes() for p in shared_files)
    other_files = _files(tmp_path / "mail" / other)
    assert len(other_files) == 1 and b"Subject: delegated" in other_files[0].read_bytes()
    # Read one shared message locally (Maildir "S"): after the next sync it is \Seen for m1 only.
    first = shared_files[0]
    first.rename(first.parent.parent / "cur" / (first.name.split(":2,")[0] + ":2,S"))
    _mbsync(tmp_path, srv, m1)
    for user, seen in ((m1, 1), (m2, 0)):
        c = login(srv, user)
        c.select(f'"{mailbox}"', readonly=True)
        assert len(c.search(None, "SEEN")[1][0].split()) == seen, user
        c.logout()
    _mbsync(tmp_path, srv, m1)  # idempotent


def test_offlineimap_syncs_shared_and_other_users_mailboxes(srv, tmp_path):
    m1, _m2, mailbox, other = _setup(srv)
    cfg = tmp_path / "offlineimaprc"
    cfg.write_text(f"""
[general]
accounts = test
metadata = {tmp_path}/meta
ui = basic

[Account test]
localrepository = local
remoterepository = remote

[Repository local]
type = Maildir
localfolders = {tmp_path}/mail
sep = /

[Repository remote]
type = IMAP
remotehost = localhost
remoteport = {srv.port("imaps")}
remoteuser = {m1}
remotepass = {PASSWORD}
ssl = yes
sslcacertfile = {Path(srv.config.data_dir) / SELF_SIGNED_CERT}
""")
    env = dict(os.environ, HOME=str(tmp_path))
    proc = subprocess.run([OFFLINEIMAP, "-c", str(cfg), "-o", "-u", "basic"], capture_output=True, text=True,
                          timeout=120, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ERROR" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    assert len(_files(tmp_path / "mail" / mailbox)) == 2
    other_files = _files(tmp_path / "mail" / other)
    assert len(other_files) == 1 and b"Subject: delegated" in other_files[0].read_bytes()
