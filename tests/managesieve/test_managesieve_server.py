"""The managesieve listener over real sockets: script commands and their response codes, quotas, the literal limit one
byte past, throttled logins, the per-address cap, STARTTLS, and a PUTSCRIPT that applies to the next delivery."""

import base64
import smtplib
import socket
import ssl
from pathlib import Path

import pytest

from tests.harness import running_server

BOB = "bob@example.test"
PW = "sieve pass"


class Raw:
    """A minimal ManageSieve client over a socket: send a line, read the response up to OK/NO/BYE."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.f = self.sock.makefile("rb")
        self.greeting = self.response()

    def response(self) -> bytes:
        out = b""
        while True:
            line = self.f.readline()
            if not line:
                return out
            out += line
            if line.rstrip(b"\r\n").endswith(b"}") and b"{" in line:
                n = int(line.rstrip(b"\r\n").rsplit(b"{", 1)[1].rstrip(b"+}"))
                out += self.f.read(n)
                continue
            if line[:3] in (b"OK\r", b"OK ", b"NO ", b"NO\r") or line.startswith(b"BYE"):
                return out

    def cmd(self, data: bytes) -> bytes:
        self.sock.sendall(data)
        return self.response()

    def login(self, user=BOB, pw=PW) -> bytes:
        token = base64.b64encode(f"\0{user}\0{pw}".encode()).decode()
        return self.cmd(f'AUTHENTICATE "PLAIN" "{token}"\r\n'.encode())

    def put(self, name: str, script: bytes) -> bytes:
        return self.cmd(b'PUTSCRIPT "%s" {%d+}\r\n' % (name.encode(), len(script)) + script + b"\r\n")

    def close(self):
        self.f.close()
        self.sock.close()


@pytest.fixture
def srv(tmp_path):
    with running_server(tmp_path, listeners=("smtp", "imap", "managesieve"),
                        sieve={"max_scripts": 3, "max_storage": 1000, "max_script_size": 400},
                        limits={"managesieve_max_sessions_per_ip": 3, "auth_max_failures_per_ip": 3}) as s:
        s.add_user(BOB, PW)
        yield s


def test_script_commands_and_their_codes(srv):
    c = Raw(srv.port("managesieve"))
    assert c.login() == b'OK "Logged in"\r\n'
    assert c.put("one", b"keep;") == b'OK "Putscript completed"\r\n'
    assert c.put("two", b"discard;") == b'OK "Putscript completed"\r\n'
    assert c.cmd(b'SETACTIVE "one"\r\n') == b'OK "Setactive completed"\r\n'
    assert c.cmd(b"LISTSCRIPTS\r\n") == b'"one" ACTIVE\r\n"two"\r\nOK "Listscripts completed"\r\n'
    assert c.cmd(b'GETSCRIPT "two"\r\n') == b'{8}\r\ndiscard;\r\nOK "Getscript completed"\r\n'
    assert c.cmd(b'GETSCRIPT "three"\r\n').startswith(b"NO (NONEXISTENT) ")
    assert c.cmd(b'DELETESCRIPT "one"\r\n').startswith(b"NO (ACTIVE) ")  # RFC 5804 2.10
    assert c.cmd(b'RENAMESCRIPT "two" "one"\r\n').startswith(b"NO (ALREADYEXISTS) ")
    assert c.cmd(b'RENAMESCRIPT "nope" "x"\r\n').startswith(b"NO (NONEXISTENT) ")
    assert c.cmd(b'RENAMESCRIPT "one" "first"\r\n') == b'OK "Renamescript completed"\r\n'
    assert c.cmd(b"LISTSCRIPTS\r\n") == b'"first" ACTIVE\r\n"two"\r\nOK "Listscripts completed"\r\n'
    assert c.cmd(b'SETACTIVE "nope"\r\n').startswith(b"NO (NONEXISTENT) ")
    assert c.cmd(b'SETACTIVE ""\r\n') == b'OK "Setactive completed"\r\n'
    assert c.cmd(b'DELETESCRIPT "first"\r\n') == b'OK "Deletescript completed"\r\n'
    assert c.cmd(b"LISTSCRIPTS\r\n") == b'"two"\r\nOK "Listscripts completed"\r\n'
    assert c.cmd(b'CHECKSCRIPT {5+}\r\nkeep;\r\n') == b'OK "Script is valid"\r\n'
    assert c.cmd(b'PUTSCRIPT "a/b" {5+}\r\nkeep;\r\n').startswith(b"NO ")  # a name with "/"
    assert c.cmd(b"LOGOUT\r\n") == b'OK "Logout completed"\r\n'
    c.close()


def test_a_broken_script_is_refused_with_its_line_and_column_and_not_stored(srv):
    c = Raw(srv.port("managesieve"))
    c.login()
    r = c.put("bad", b'require "fileinto";\r\n\r\nif true {\r\n  fileinto;\r\n}\r\n')
    assert r.startswith(b'NO "line 4, column 3: ')
    assert c.cmd(b'CHECKSCRIPT {11+}\r\nkeep;\r\nfoo;\r\n').startswith(b'NO "line 2, column 1: ')
    assert c.cmd(b"LISTSCRIPTS\r\n") == b'OK "Listscripts completed"\r\n'
    c.close()


def test_quotas_on_count_and_storage(srv):
    c = Raw(srv.port("managesieve"))
    c.login()
    for name in ("a", "b", "c"):
        assert c.put(name, b"keep;") == b'OK "Putscript completed"\r\n'
    assert c.cmd(b'HAVESPACE "d" 5\r\n').startswith(b"NO (QUOTA/MAXSCRIPTS) ")
    assert c.put("d", b"keep;").startswith(b"NO (QUOTA/MAXSCRIPTS) ")
    assert c.cmd(b'HAVESPACE "a" 5\r\n') == b'OK "Putscript would succeed"\r\n'  # replacing one is fine
    filler = b"#" + b"x" * 397 + b"\r\n"  # 400 octets, the script size limit
    assert c.put("a", filler) == b'OK "Putscript completed"\r\n'
    assert c.put("b", filler) == b'OK "Putscript completed"\r\n'
    assert c.cmd(b'HAVESPACE "c" 400\r\n').startswith(b"NO (QUOTA/MAXSIZE) ")  # 1200 > max_storage 1000
    assert c.put("c", filler).startswith(b"NO (QUOTA/MAXSIZE) ")
    c.close()


def test_literal_at_the_script_size_limit_and_one_past(srv):
    c = Raw(srv.port("managesieve"))
    c.login()
    at = b"#" + b"x" * 397 + b"\r\n"
    assert len(at) == 400
    assert c.put("s", at) == b'OK "Putscript completed"\r\n'
    past = at + b" "
    r = c.cmd(b'PUTSCRIPT "t" {401+}\r\n' + past + b"\r\nNOOP\r\n")
    assert r.startswith(b"NO (QUOTA/MAXSIZE) ")
    assert c.response() == b'OK "Done"\r\n'  # the literal was skipped; the connection goes on
    assert c.cmd(b"LISTSCRIPTS\r\n") == b'"s"\r\nOK "Listscripts completed"\r\n'
    c.close()


def test_failed_logins_are_throttled_through_the_shared_authenticator(srv):
    c = Raw(srv.port("managesieve"))
    for _ in range(3):
        assert c.login(pw="wrong") == b'NO "Authentication failed"\r\n'
    c.close()
    c = Raw(srv.port("managesieve"))
    assert c.login(pw="wrong").startswith(b"NO (TRYLATER) ")
    c.close()


def test_connections_over_the_per_address_cap_get_bye(srv):
    open_ = [Raw(srv.port("managesieve")) for _ in range(3)]
    extra = Raw(srv.port("managesieve"))
    assert extra.greeting.startswith(b"BYE (TRYLATER) ")
    extra.close()
    for c in open_:
        c.close()
    srv.wait_for(lambda: srv.server_sessions("managesieve") == 0)
    c = Raw(srv.port("managesieve"))
    assert c.greeting.endswith(b'OK "ManageSieve ready"\r\n')
    c.close()


def test_starttls_then_capabilities_again_and_login(srv):
    c = Raw(srv.port("managesieve"))
    assert b'"STARTTLS"' in c.greeting
    assert c.cmd(b"STARTTLS\r\n") == b'OK "Begin TLS negotiation now"\r\n'
    ctx = ssl.create_default_context(cafile=str(Path(srv.config.data_dir) / "tls" / "selfsigned-cert.pem"))
    c.f.close()
    c.sock = ctx.wrap_socket(c.sock, server_hostname="127.0.0.1")
    c.f = c.sock.makefile("rb")
    caps = c.response()
    assert b'"SASL" "PLAIN LOGIN"' in caps and b"STARTTLS" not in caps
    assert caps.endswith(b'OK "TLS negotiation successful"\r\n')
    assert c.login() == b'OK "Logged in"\r\n'
    c.close()


def test_putscript_of_the_active_script_applies_to_the_next_delivery(srv):
    acct = srv.store.get_account(BOB)
    srv.store.create_mailbox(acct.id, "Work")
    srv.store.create_mailbox(acct.id, "Other")
    c = Raw(srv.port("managesieve"))
    c.login()
    c.put("main", b'require "fileinto"; fileinto "Work";')
    c.cmd(b'SETACTIVE "main"\r\n')

    def send():
        with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as s:
            s.sendmail("a@remote.test", [BOB], b"From: a@remote.test\r\nSubject: hi\r\n\r\nhello\r\n")

    def count(name):
        return len(srv.store.list_messages(srv.store.get_mailbox(acct.id, name).id))

    send()
    srv.wait_for(lambda: count("Work") == 1)
    c.put("main", b'require "fileinto"; fileinto "Other";')  # no wait for the cache's check interval
    send()
    srv.wait_for(lambda: count("Other") == 1)
    assert count("Work") == 1
    c.close()


def test_pipelined_commands_are_answered_in_order(srv):
    """Commands sent in one write wait while the one before them runs in a pool; each gets its answer, in order."""
    c = Raw(srv.port("managesieve"))
    c.login()
    burst = b"".join(b'PUTSCRIPT "s%d" {5+}\r\nkeep;\r\nGETSCRIPT "s%d"\r\nDELETESCRIPT "s%d"\r\n' % (i, i, i)
                     for i in range(30))
    c.sock.sendall(burst + b'NOOP "end"\r\n')
    for _ in range(30):
        assert c.response() == b'OK "Putscript completed"\r\n'
        assert c.response() == b'{5}\r\nkeep;\r\nOK "Getscript completed"\r\n'
        assert c.response() == b'OK "Deletescript completed"\r\n'
    assert c.response() == b'OK (TAG "end") "Done"\r\n'
    c.close()
