"""`mailserver sendas grant|revoke|list`: send-as / send-on-behalf grants from the command line."""

from __future__ import annotations

import pytest

from tests.test_cli import conf, run  # noqa: F401  (conf is a fixture)


@pytest.fixture
def site(conf):  # noqa: F811
    assert run(conf, "domain", "add", "example.test").returncode == 0
    for user in ("alice@example.test", "bob@example.test"):
        r = run(conf, "user", "add", user, "--password-stdin", input="s3cret\n")
        assert r.returncode == 0, r.stderr
    return conf


def test_grant_list_revoke(site):
    r = run(site, "sendas", "grant", "Alice@example.test", "Sales@Example.test")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "alice@example.test may send as sales@example.test\n"
    r = run(site, "sendas", "grant", "bob@example.test", "sales@example.test", "--on-behalf")
    assert r.stdout == "bob@example.test may send on behalf of sales@example.test\n"
    r = run(site, "sendas", "grant", "alice@example.test", "bob@example.test", "--on-behalf")
    assert r.returncode == 0
    rows = [line.split("\t")[:3] for line in run(site, "sendas", "list").stdout.splitlines()]
    assert rows == [["bob@example.test", "send-on-behalf", "alice@example.test"],
                    ["sales@example.test", "send-as", "alice@example.test"],
                    ["sales@example.test", "send-on-behalf", "bob@example.test"]]
    rows = [line.split("\t")[:3] for line in run(site, "sendas", "list", "--account", "bob@example.test")
            .stdout.splitlines()]
    assert rows == [["sales@example.test", "send-on-behalf", "bob@example.test"]]
    rows = run(site, "sendas", "list", "--address", "sales@example.test").stdout.splitlines()
    assert len(rows) == 2
    # Granting again changes the kind.
    run(site, "sendas", "grant", "alice@example.test", "sales@example.test", "--on-behalf")
    out = run(site, "sendas", "list", "--account", "alice@example.test").stdout
    assert "sales@example.test\tsend-on-behalf\talice@example.test" in out
    r = run(site, "sendas", "revoke", "alice@example.test", "sales@example.test")
    assert r.returncode == 0 and r.stdout == "revoked alice@example.test on sales@example.test\n"
    r = run(site, "sendas", "revoke", "alice@example.test", "sales@example.test")
    assert r.returncode == 1 and "has no grant on sales@example.test" in r.stderr
    assert "sales" not in run(site, "sendas", "list", "--account", "alice@example.test").stdout


@pytest.mark.parametrize("args,error", [
    (("nobody@example.test", "sales@example.test"), "no account nobody@example.test"),
    (("alice@example.test", "ceo@elsewhere.test"), "unknown domain elsewhere.test"),
    (("alice@example.test", "not an address"), "malformed address"),
    (("alice@example.test", "alice@example.test"), "own address"),
])
def test_bad_grants_fail_with_a_clear_error(site, args, error):
    r = run(site, "sendas", "grant", *args)
    assert r.returncode == 1 and error in r.stderr, r.stderr
    assert run(site, "sendas", "list").stdout == "no grants\n"


def test_usage_errors(site):
    assert run(site, "sendas").returncode == 2
    assert run(site, "sendas", "grant", "alice@example.test").returncode == 2
    r = run(site, "sendas", "list", "--account", "nobody@example.test")
    assert r.returncode == 1 and "no account" in r.stderr


def test_removing_a_domain_removes_the_grants_on_it(site):
    run(site, "domain", "add", "other.test")
    assert run(site, "sendas", "grant", "alice@example.test", "info@other.test").returncode == 0
    assert run(site, "domain", "remove", "other.test").returncode == 0
    assert run(site, "sendas", "list").stdout == "no grants\n"
