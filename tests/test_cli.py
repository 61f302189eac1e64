"""The `mailserver` command: administration verbs, exit codes and messages; `serve` start and stop."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.processes import popen

ROOT = Path(__file__).resolve().parents[1]


def run(config: Path, *args, input: str | None = None) -> subprocess.CompletedProcess:
    """Run the command in this process (as `mailserver --config CONFIG ARGS…` would), capturing its output."""
    import contextlib
    import io

    from mailserver.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    old_stdin = sys.stdin
    sys.stdin = io.StringIO(input or "")
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(["--config", str(config), *args])
            except SystemExit as e:  # argparse usage errors
                code = e.code
    finally:
        sys.stdin = old_stdin
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


@pytest.fixture
def conf(tmp_path, database_url) -> Path:
    p = tmp_path / "m.toml"
    p.write_text(f'hostname = "mail.example.test"\ndata_dir = "data"\ndatabase_url = "{database_url}"\n')
    return p


def test_domain_user_alias_lifecycle(conf):
    assert run(conf, "domain", "add", "example.test").returncode == 0
    r = run(conf, "domain", "add", "example.test")
    assert r.returncode == 1 and "exists" in r.stderr
    r = run(conf, "user", "add", "Bob@Example.test", "--password-stdin", "--quota", "1G", input="s3cret\n")
    assert r.returncode == 0, r.stderr
    r = run(conf, "user", "add", "bob@example.test", "--password-stdin", input="x\n")
    assert r.returncode == 1 and "exists" in r.stderr
    r = run(conf, "user", "add", "x@unknown.test", "--password-stdin", input="x\n")
    assert r.returncode == 1 and "unknown domain unknown.test" in r.stderr
    r = run(conf, "user", "add", "no-at-sign", "--password-stdin", input="x\n")
    assert r.returncode == 1 and "malformed address" in r.stderr
    r = run(conf, "user", "add", "empty@example.test", "--password-stdin", input="\n")
    assert r.returncode == 1 and "empty password" in r.stderr
    r = run(conf, "user", "list")
    assert r.returncode == 0 and re.search(r"^bob@example.test\t0B/1.0G\tenabled", r.stdout, re.M)
    assert run(conf, "alias", "add", "sales@example.test", "bob@example.test", "ext@remote.test").returncode == 0
    r = run(conf, "alias", "list")
    assert "sales@example.test\tbob@example.test" in r.stdout and "sales@example.test\text@remote.test" in r.stdout
    assert run(conf, "alias", "remove", "sales@example.test", "ext@remote.test").returncode == 0
    r = run(conf, "alias", "remove", "nobody@example.test")
    assert r.returncode == 1
    assert run(conf, "user", "set-quota", "bob@example.test", "500M").returncode == 0
    r = run(conf, "domain", "remove", "example.test")
    assert r.returncode == 1 and "still has 1 account" in r.stderr
    assert run(conf, "user", "remove", "bob@example.test").returncode == 0
    assert run(conf, "domain", "remove", "example.test").returncode == 0
    assert run(conf, "domain", "list").stdout == ""


def _verify(conf: Path, address: str, password: str) -> bool:
    from mailserver import config
    from mailserver.auth import PasswordHasher
    from mailserver.service import open_store

    store = open_store(config.load(conf))
    try:
        ok, _ = PasswordHasher().verify(password, store.get_account(address).password_hash)
    finally:
        store.engine.dispose()
    return ok


def test_passwords_from_stdin_and_imported_hashes(conf):
    run(conf, "domain", "add", "example.test")
    assert run(conf, "user", "add", "a@example.test", "--password-stdin", input="first\n").returncode == 0
    assert _verify(conf, "a@example.test", "first")
    assert run(conf, "user", "passwd", "a@example.test", "--password-stdin", input="second\n").returncode == 0
    assert _verify(conf, "a@example.test", "second") and not _verify(conf, "a@example.test", "first")
    sha512 = "{SHA512-CRYPT}$6$saltsalt$qFmFH.bQmmtXzyBY0s9v7Oicd2z4XSIecDzlB5KiA2/jctKu9YterLp8wwnSq.qc.eoxqOmSuNp2xS0ktL3nh/"
    r = run(conf, "user", "add", "b@example.test", "--password-hash", sha512)
    assert r.returncode == 0, r.stderr
    r = run(conf, "user", "add", "c@example.test", "--password-hash", "{NOPE}abc")
    assert r.returncode == 1 and "unknown hash scheme" in r.stderr


def test_user_import_reports_line_by_line(conf, tmp_path):
    run(conf, "domain", "add", "example.test")
    import base64
    import hashlib

    salt = b"12345678"
    ssha512 = "{SSHA512}" + base64.b64encode(hashlib.sha512(b"pw2" + salt).digest() + salt).decode()
    f = tmp_path / "passwd"
    f.write_text("# Dovecot passwd-file\n"
                 "one@example.test:{PLAIN}pw1:1000:1000::/home/one::\n"
                 f"two@example.test:{ssha512}\n"
                 "\n"
                 "garbage\n"
                 "three@nowhere.test:{PLAIN}x\n"
                 "one@example.test:{PLAIN}again\n")
    r = run(conf, "user", "import", str(f))
    lines = r.stdout.splitlines()
    assert r.returncode == 1
    assert lines[0].endswith(":2: one@example.test: added")
    assert ":5: garbage: expected address:{SCHEME}hash" in lines[2]
    assert ":6: three@nowhere.test: unknown domain" in lines[3]
    assert ":7: one@example.test: account one@example.test exists" in lines[4]
    assert lines[-1] == "2 added, 3 failed"
    assert _verify(conf, "one@example.test", "pw1")
    assert _verify(conf, "two@example.test", "pw2")


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_serve_first_run_output_and_clean_sigterm(tmp_path):
    port = _free_port()
    conf = tmp_path / "m.toml"
    conf.write_text(f'hostname = "mail.example.test"\ndata_dir = "data"\ndemo = true\n'
                    f'[listen]\nsmtp = ["127.0.0.1:{port}"]\n[[domain]]\nname = "example.test"\n')
    proc = popen([sys.executable, "-m", "mailserver", "--config", str(conf), "serve"],
                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        out = ""
        deadline = time.time() + 60
        while "Stop with Ctrl-C" not in out and time.time() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            out += line
        assert f"smtp         127.0.0.1:{port}" in out
        m = re.search(r"Log in as (demo@example.test) with password (\S+)", out)
        assert m, out
        assert "user add you@example.test" in out
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            assert s.recv(100).startswith(b"220 ")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        err = proc.stderr.read()
        assert "listening smtp on 127.0.0.1:%d" % port in err
        assert "stopped" in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # The second run reuses the demo account, the certificate and the database.
    assert (tmp_path / "data" / "tls" / "selfsigned-cert.pem").exists()


def test_serve_address_in_use_fails_clearly(tmp_path):
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        conf = tmp_path / "m.toml"
        conf.write_text(f'hostname = "mail.example.test"\ndata_dir = "data"\n[listen]\nsmtp = ["127.0.0.1:{port}"]\n')
        r = subprocess.run([sys.executable, "-m", "mailserver", "--config", str(conf), "serve"],
                           capture_output=True, text=True, cwd=ROOT, timeout=60)
        assert r.returncode == 1
        assert f"listen.smtp: cannot listen on 127.0.0.1:{port}: Address already in use" in r.stderr
    finally:
        holder.close()


def test_migrate_is_idempotent(conf):
    r = run(conf, "migrate")
    assert r.returncode == 0 and "(applied " in r.stdout
    r = run(conf, "migrate")
    assert r.returncode == 0 and "up to date" in r.stdout


def test_environment_variable_selects_config(conf):
    env = {**os.environ, "MAILSERVER_CONFIG": str(conf)}
    r = subprocess.run([sys.executable, "-m", "mailserver", "check-config"], capture_output=True, text=True,
                       cwd=ROOT, env=env)
    assert r.returncode == 0 and "OK" in r.stdout
