"""The lockout policy on the real listeners (IMAP, POP3, SMTP submission, webmail): guesses at an account throttle the
addresses that guess, never the account's owner elsewhere.

* While an account is over ``auth_max_failures_per_account``, an address that failed for it is throttled even with
  the correct password;
* an address with no failure in the window gets a correct password in, and a wrong one is checked (and answered as
  wrong, not as throttled);
* an address the account logged in from within the window still gets in after a typo;
* the per-address limit holds whatever the account: past it, the guessing address is throttled for every account.

Clients come from different loopback addresses (127.0.0.0/8); see docs/internals.md, "Authentication".
"""

from __future__ import annotations

from tests.harness import running_server
from tests.logins import login

ALICE, BOB, PW = "alice@example.test", "bob@example.test", "right-password"
PER_ACCOUNT, PER_IP = 5, 40
ATTACKER = "127.0.0.2"


def test_guesses_lock_out_the_guesser_not_the_owner(tmp_path):
    limits = {"auth_max_failures_per_ip": PER_IP, "auth_max_failures_per_account": PER_ACCOUNT, "auth_max_delay": 0.05}
    with running_server(tmp_path, listeners=("imap", "pop3", "submission", "http"), limits=limits) as srv:
        srv.add_user(ALICE, PW)
        srv.add_user(BOB, PW)
        ports = {"imap": srv.port("imap"), "pop3": srv.port("pop3"), "smtp": srv.port("submission"),
                 "webmail": srv.port("http")}
        assert login("imap", ports["imap"], ALICE, PW, "127.0.0.10") == "ok"  # her office: known from now on
        failures = 0
        for n, kind in enumerate(("imap", "pop3", "smtp", "webmail")):
            # Someone guesses at her account over this protocol until it is over its limit...
            for i in range(PER_ACCOUNT):
                assert login(kind, ports[kind], ALICE, f"guess-{i}", ATTACKER) == "checked", (kind, i)
                failures += 1
            # ...and is then throttled for it even with the right password;
            assert login(kind, ports[kind], ALICE, PW, ATTACKER) == "throttled", kind
            # from an address with no failure her wrong password is checked as such, her right one gets in
            # (from another clean address: the typo made the first one a failing address for her account);
            assert login(kind, ports[kind], ALICE, "typo", f"127.0.1.{n}") == "checked", kind
            assert login(kind, ports[kind], ALICE, PW, f"127.0.1.{n}") == "throttled", kind
            assert login(kind, ports[kind], ALICE, PW, f"127.0.2.{n}") == "ok", kind
        # The success cleared the account's counter, not the guessing address's. Guess again, then her known
        # address gets in after a typo of its own.
        for i in range(PER_ACCOUNT):
            assert login("imap", ports["imap"], ALICE, f"again-{i}", ATTACKER) == "checked"
            failures += 1
        assert login("pop3", ports["pop3"], ALICE, "typo", "127.0.0.10") == "checked"
        assert login("webmail", ports["webmail"], ALICE, PW, "127.0.0.10") == "ok"
        # The per-address limit holds for every account: the guesser reaches it on other names, and is then
        # throttled for bob's correct password too, on every protocol; bob from anywhere else gets in.
        while failures < PER_IP:
            assert login("smtp", ports["smtp"], f"nobody{failures}@example.test", "x", ATTACKER) == "checked"
            failures += 1
        for kind in ("imap", "pop3", "smtp", "webmail"):
            assert login(kind, ports[kind], BOB, PW, ATTACKER) == "throttled", kind
            assert login(kind, ports[kind], BOB, PW, "127.0.3.1") == "ok", kind
