"""The webmail's sign-in is throttled like the protocols under a burst: 200 POST /login guesses released at the same
instant against the real http listener, from an address with no earlier failure, get at most
``auth_max_failures_per_ip`` passwords checked (it used to be 181 of 200). Every client has fetched the form and its
pre-session cookie and holds an open connection before one barrier releases all the POSTs. Three bursts, each from
a clean loopback address, then one from an address that already failed (nothing checked). Checks are counted by
the answers (403 "Wrong address or password" against 429) and by the server's own hasher."""

from __future__ import annotations

import functools

from tests.harness import running_server
from tests.logins import burst, counted_checks, login, open_webmail

LIMIT = 10
GUESSES = 200
LIMITS = {"auth_max_failures_per_ip": LIMIT, "auth_max_failures_per_account": LIMIT, "auth_max_delay": 0.2,
          "http_max_connections_per_ip": 1000}


def _guesses(port: int, source: str, round_: int) -> list:
    return [functools.partial(open_webmail, port, "alice@example.test" if i % 2 else f"user{i % 9}@example.test",
                              f"guess-{round_}-{i}", source) for i in range(GUESSES)]


def test_200_simultaneous_webmail_guesses_get_at_most_the_limit_checked(tmp_path, database_url):
    with running_server(tmp_path, listeners=("http",), limits=LIMITS, database_url=database_url) as srv:
        srv.add_user("alice@example.test", "right-password")
        port = srv.port("http")
        for round_, source in enumerate(("127.0.0.2", "127.0.0.3", "127.0.0.4")):
            with counted_checks(srv) as checks:
                results = burst(_guesses(port, source, round_))
            checked = results.count("checked")
            assert 0 < checked <= LIMIT, (source, checked)
            assert checks.n == checked, (source, checks.n, checked)
            assert results.count("throttled") == GUESSES - checked, set(results)
        with counted_checks(srv) as checks:
            results = burst(_guesses(port, "127.0.0.3", 3))
        assert results.count("throttled") == GUESSES and checks.n == 0
        # The owner signs in from a clean address; a guessing address stays throttled even with her password.
        assert login("webmail", port, "alice@example.test", "right-password", "127.0.0.5") == "ok"
        assert login("webmail", port, "alice@example.test", "right-password", "127.0.0.2") == "throttled"
