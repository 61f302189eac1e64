"""Login throttling holds under a burst: 100 guesses at the same instant over IMAP, POP3 and SMTP at once, from an
address with no earlier failure, get at most ``auth_max_failures_per_ip`` passwords checked (it used to be 63 of 81:
attempts counted only once a failure was recorded). Every client is connected and one step from its password before
a barrier releases all the password commands together; several bursts, each from a clean address, and one more from
an address that already failed (nothing checked). The checks are counted twice: by the answers, and by the server's
own hasher (every verification and dummy verification it ran)."""

from __future__ import annotations

import functools

from tests.harness import running_server
from tests.logins import burst, counted_checks, login, open_imap, open_pop3, open_smtp

LIMIT = 10
GUESSES = 100
LIMITS = {"auth_max_failures_per_ip": LIMIT, "auth_max_failures_per_account": LIMIT, "auth_max_delay": 0.2,
          "imap_max_sessions_per_ip": 500, "pop3_max_sessions_per_ip": 500, "smtp_max_sessions_per_ip": 500}


def _guesses(ports: dict[str, int], source: str, round_: int) -> list:
    """100 openers: IMAP, POP3 and SMTP in turn; half for the real account, half for unknown addresses."""
    openers = {"imap": open_imap, "pop3": open_pop3, "smtp": open_smtp}
    out = []
    for i in range(GUESSES):
        kind = ("imap", "pop3", "smtp")[i % 3]
        user = f"user{i % 7}@example.test" if i % 2 else "alice@example.test"
        out.append(functools.partial(openers[kind], ports[kind], user, f"guess-{round_}-{i}", source))
    return out


def test_100_simultaneous_guesses_over_three_protocols_get_at_most_the_limit_checked(tmp_path, database_url):
    with running_server(tmp_path, listeners=("imap", "pop3", "submission"), limits=LIMITS,
                        database_url=database_url) as srv:
        srv.add_user("alice@example.test", "right-password")
        ports = {"imap": srv.port("imap"), "pop3": srv.port("pop3"), "smtp": srv.port("submission")}
        # Three bursts, each from an address with no earlier failure (127.0.0.2, .3, .4: loopback all).
        for round_, source in enumerate(("127.0.0.2", "127.0.0.3", "127.0.0.4")):
            with counted_checks(srv) as checks:
                results = burst(_guesses(ports, source, round_))
            checked = results.count("checked")
            assert 0 < checked <= LIMIT, (source, checked)
            assert checks.n == checked, (source, checks.n, checked)  # the answers tell the truth
            assert results.count("throttled") == GUESSES - checked, set(results)
        # Again from an address that has failed: nothing at all is checked.
        with counted_checks(srv) as checks:
            results = burst(_guesses(ports, "127.0.0.2", 3))
        assert results.count("throttled") == GUESSES and checks.n == 0
        # The account was guessed at 30 times, past its limit: its owner still gets in from a clean address
        # (tests/test_login_policy.py has the rest of that policy), the guessing addresses stay throttled.
        assert login("imap", ports["imap"], "alice@example.test", "right-password", "127.0.0.5") == "ok"
        assert login("pop3", ports["pop3"], "alice@example.test", "right-password", "127.0.0.3") == "throttled"
