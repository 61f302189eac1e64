"""``mailserver sieve put|get|list|activate|delete|rename|check`` and ``sieve test`` (exit codes and output);
a script put with the CLI is what a later SMTP delivery follows (``mail import`` runs the same filter inline)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.test_cli import run


def _conf(tmp_path: Path) -> Path:
    p = tmp_path / "m.toml"
    p.write_text('hostname = "mail.example.test"\ndata_dir = "data"\n[sieve]\nmax_scripts = 2\n'
                 'max_script_size = 100\n')
    return p


def test_put_list_get_activate_check_delete(tmp_path):
    conf = _conf(tmp_path)
    assert run(conf, "domain", "add", "example.test").returncode == 0
    assert run(conf, "user", "add", "bob@example.test", "--password-stdin", input="pw\n").returncode == 0
    good = tmp_path / "good.sieve"
    good.write_text('require "fileinto";\nfileinto "Work";\n')
    bad = tmp_path / "bad.sieve"
    bad.write_text('require "fileinto";\nif true {\n  fileinto :copy "x";\n}\n')
    r = run(conf, "sieve", "put", "bob@example.test", "main", str(good), "--activate")
    assert (r.returncode, r.stdout) == (0, "stored main (active)\n")
    r = run(conf, "sieve", "put", "bob@example.test", "other", str(bad))
    assert r.returncode == 1 and "line 3, column 12" in r.stderr and ":copy needs" in r.stderr
    r = run(conf, "sieve", "check", "bob@example.test", str(bad))
    assert r.returncode == 1 and "line 3" in r.stderr
    assert run(conf, "sieve", "check", "bob@example.test", str(good)).stdout == "ok\n"
    assert run(conf, "sieve", "list", "bob@example.test").stdout == f"main\t{len(good.read_text())}\tACTIVE\n"
    assert run(conf, "sieve", "get", "bob@example.test", "main").stdout == good.read_text()
    assert run(conf, "sieve", "put", "bob@example.test", "two", str(good)).returncode == 0
    r = run(conf, "sieve", "put", "bob@example.test", "three", str(good))  # max_scripts = 2
    assert r.returncode == 1 and "at most 2 scripts" in r.stderr
    big = tmp_path / "big.sieve"
    big.write_text("#" * 100 + "\n")  # one byte past max_script_size
    r = run(conf, "sieve", "put", "bob@example.test", "two", str(big))
    assert r.returncode == 1 and "101 bytes" in r.stderr
    r = run(conf, "sieve", "delete", "bob@example.test", "main")
    assert r.returncode == 1 and "active" in r.stderr
    assert run(conf, "sieve", "activate", "bob@example.test", "--none").returncode == 0
    assert run(conf, "sieve", "rename", "bob@example.test", "main", "first").returncode == 0
    assert run(conf, "sieve", "delete", "bob@example.test", "first").returncode == 0
    assert run(conf, "sieve", "list", "bob@example.test").stdout == f"two\t{len(good.read_text())}\n"
    r = run(conf, "sieve", "list", "nobody@example.test")
    assert r.returncode == 1 and "no account" in r.stderr


def test_include_is_checked_against_the_stored_scripts_and_domain_globals(tmp_path):
    conf = _conf(tmp_path)
    run(conf, "domain", "add", "example.test")
    run(conf, "user", "add", "bob@example.test", "--password-stdin", input="pw\n")
    inc = tmp_path / "inc.sieve"
    inc.write_text('require "include";\ninclude :global "spam";\n')
    r = run(conf, "sieve", "check", "bob@example.test", str(inc))
    assert r.returncode == 1 and "no global script 'spam'" in r.stderr
    spam = tmp_path / "spam.sieve"
    spam.write_text("keep;\n")
    assert run(conf, "sieve", "put", "--domain", "example.test", "spam", str(spam)).returncode == 0
    assert run(conf, "sieve", "check", "bob@example.test", str(inc)).stdout == "ok\n"


def test_mail_import_follows_the_active_script(tmp_path):
    conf = _conf(tmp_path)
    run(conf, "domain", "add", "example.test")
    run(conf, "user", "add", "bob@example.test", "--password-stdin", input="pw\n")
    script = tmp_path / "s.sieve"
    script.write_text('require "fileinto";\nfileinto "Archive";\n')
    run(conf, "sieve", "put", "bob@example.test", "s", str(script), "--activate")
    msg = tmp_path / "m.eml"
    msg.write_bytes(b"From: a@remote.test\r\nSubject: imported\r\n\r\nbody\r\n")
    assert run(conf, "mail", "import", "bob@example.test", str(msg)).returncode == 0
    from mailserver import config as config_mod
    from mailserver.service import open_store

    store = open_store(config_mod.load(str(conf)))
    try:
        acct = store.get_account("bob@example.test")
        assert store.get_mailbox(acct.id, "Archive").message_count == 1
        assert store.get_mailbox(acct.id, "INBOX").message_count == 0
    finally:
        store.engine.dispose()


def test_sieve_test_prints_actions_like_sieve_test(tmp_path):
    script = tmp_path / "s.sieve"
    script.write_text('require ["fileinto", "copy", "vacation"];\nfileinto :copy "Work";\n'
                      'redirect "x@example.org";\nvacation :days 3 :subject "away" "I am away";\n')
    msg = tmp_path / "m.eml"
    msg.write_bytes(b"From: a@example.com\r\nSubject: hi\r\n\r\nbody\r\n")
    proc = subprocess.run([sys.executable, "-m", "mailserver", "sieve", "test", str(script), str(msg),
                           "--envelope-from", "a@example.com", "--envelope-to", "me@example.net"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "", "Performed actions:", "",
        " * store message in folder: Work", "        + preserve implicit keep",
        " * redirect message to: <x@example.org>",
        " * send vacation message:", "    => seconds : 259200", "    => subject : away",
        "", "START MESSAGE", "I am away", "END MESSAGE",
        "", "Implicit keep:", "", "  (none)"]
    bad = tmp_path / "bad.sieve"
    bad.write_text("keep")
    proc = subprocess.run([sys.executable, "-m", "mailserver", "sieve", "test", str(bad), str(msg)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "line 1, column 5" in proc.stderr
