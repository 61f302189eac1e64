"""`mailserver shared|acl|group`: shared mailboxes, ACL entries and groups from the command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_cli import run


@pytest.fixture
def conf(tmp_path, database_url) -> Path:
    p = tmp_path / "m.toml"
    p.write_text(f'hostname = "mail.example.test"\ndata_dir = "data"\ndatabase_url = "{database_url}"\n')
    return p


def test_shared_acl_group_lifecycle(conf):
    assert run(conf, "domain", "add", "example.test").returncode == 0
    for u in ("alice", "bob"):
        r = run(conf, "user", "add", f"{u}@example.test", "--password-stdin", input="pw\n")
        assert r.returncode == 0, r.stderr
    r = run(conf, "group", "add", "sales-team", "alice@example.test")
    assert r.returncode == 0, r.stderr
    r = run(conf, "group", "members", "sales-team", "--add", "bob@example.test")
    assert r.stdout.split() == ["alice@example.test", "bob@example.test"]
    r = run(conf, "shared", "create", "sales@example.test", "--member", "$sales-team")
    assert r.returncode == 0 and "Shared/sales" in r.stdout, r.stderr
    r = run(conf, "shared", "create", "sales@example.test")
    assert r.returncode == 1 and "exists" in r.stderr
    r = run(conf, "shared", "list")
    assert "Shared/sales\tsales@example.test\t0 messages\t$sales-team=lrswipkte" in r.stdout
    assert run(conf, "acl", "set", "Shared/sales", "alice@example.test", "lrswipkxtea").returncode == 0
    r = run(conf, "acl", "set", "alice@example.test/INBOX", "bob@example.test", "lrcd")  # c/d: RFC 4314 2.1.1
    assert r.returncode == 0 and "bob@example.test lrkxte" in r.stdout, r.stderr
    r = run(conf, "acl", "get", "Other Users/alice@example.test/INBOX")
    assert r.stdout == "bob@example.test\tlrkxte\n"
    r = run(conf, "acl", "set", "alice@example.test/INBOX", "nobody@example.test", "lr")
    assert r.returncode == 1 and "no account" in r.stderr
    r = run(conf, "acl", "set", "alice@example.test/INBOX", "bob@example.test", "lrz")
    assert r.returncode == 1 and "unknown right" in r.stderr
    r = run(conf, "acl", "get", "Shared/nothing")
    assert r.returncode == 1 and "no mailbox" in r.stderr
    # RFC 4314 2: a negative entry, written as IMAP writes it (not an option), and "-w" to take a right off it.
    r = run(conf, "acl", "set", "alice@example.test/INBOX", "-bob@example.test", "wt")
    assert r.returncode == 0, r.stderr
    assert run(conf, "acl", "set", "alice@example.test/INBOX", "-bob@example.test", "-t").returncode == 0
    r = run(conf, "acl", "get", "alice@example.test/INBOX")
    assert r.stdout == "-bob@example.test\tw\nbob@example.test\tlrkxte\n", r.stdout
    r = run(conf, "acl", "set", "alice@example.test/INBOX", "-bob@example.test")
    assert r.returncode != 0 and "IDENTIFIER RIGHTS" in r.stderr
    assert run(conf, "acl", "remove", "alice@example.test/INBOX", "-bob@example.test").returncode == 0
    assert run(conf, "acl", "remove", "alice@example.test/INBOX", "bob@example.test").returncode == 0
    assert run(conf, "acl", "get", "alice@example.test/INBOX").stdout == ""
    assert run(conf, "group", "remove", "sales-team").returncode == 0
    r = run(conf, "acl", "get", "Shared/sales")
    assert r.stdout == "alice@example.test\tlrswipkxtea\n"  # the group's entry went with it
    assert run(conf, "group", "list").stdout == "no groups\n"
    assert run(conf, "shared", "remove", "sales").returncode == 0
    assert run(conf, "shared", "list").stdout == "no shared mailboxes\n"
