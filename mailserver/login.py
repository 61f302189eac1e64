"""One login step for SMTP AUTH, IMAP LOGIN/AUTHENTICATE and POP3 USER/PASS/AUTH: authenticate, classify, log.

``await login(auth, username, password, client_ip, "imap")`` asks the :class:`~mailserver.auth.Authenticator`,
writes the one log line every protocol shares (``login ok for {user} from {ip} via {protocol}``, ``login failed…``
with the reason, ``login throttled…``, ``login tempfail…`` with the traceback) and returns a :class:`Login` whose
``outcome`` each protocol maps to its own reply:

* ``ok`` - the account is ``result.account_id`` / ``result.address``;
* ``invalid`` - unknown account, wrong password or disabled account (``result.reason`` says which; unknown and wrong
  are never told apart, so a reply must not tell them apart either);
* ``throttled`` - too many failures from this address or for this account: try later;
* ``tempfail`` - the check itself failed (database, thread pool): try later.

It never fails: an error of the check is ``tempfail``.
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.internet import defer
from twisted.logger import Logger

from mailserver.auth import Authenticator, AuthResult

log = Logger()

OK, INVALID, THROTTLED, TEMPFAIL = "ok", "invalid", "throttled", "tempfail"

#: Longest user name written to the log (the client chose it).
LOGGED_USER_MAX = 100


@dataclass(frozen=True)
class Login:
    outcome: str  # OK, INVALID, THROTTLED or TEMPFAIL
    result: AuthResult | None = None  # None when the check failed (TEMPFAIL)

    @property
    def ok(self) -> bool:
        return self.outcome == OK


def classify(result: AuthResult) -> str:
    """The outcome of an Authenticator answer."""
    if result.ok:
        return OK
    if result.reason == "throttled":
        return THROTTLED
    return INVALID


def login(auth: Authenticator, username: str, password: str, client_ip: str, protocol: str) -> defer.Deferred:
    """Authenticate ``username`` from ``client_ip`` for ``protocol`` (``smtp``, ``imap``, ``pop3``) and log the
    result; fires with a :class:`Login`, never with a failure."""
    user = username[:LOGGED_USER_MAX]
    observer = getattr(auth, "observer", None)

    def observe(outcome: str, reason: str) -> None:
        if observer is not None:
            observer(protocol, outcome, reason)

    def done(result: AuthResult) -> Login:
        outcome = classify(result)
        observe(outcome, result.reason)
        if outcome == OK:
            log.info("login ok for {user} from {ip} via {protocol}", user=result.address or user, ip=client_ip,
                     protocol=protocol)
        elif outcome == THROTTLED:
            log.info("login throttled for {user!r} from {ip} via {protocol}", user=user, ip=client_ip,
                     protocol=protocol)
        else:
            log.info("login failed for {user!r} from {ip} via {protocol} ({reason})", user=user, ip=client_ip,
                     protocol=protocol, reason=result.reason)
        return Login(outcome, result)

    def failed(f) -> Login:
        observe(TEMPFAIL, "")
        log.failure("login tempfail for {user!r} from {ip} via {protocol}", f, user=user, ip=client_ip,
                    protocol=protocol)
        return Login(TEMPFAIL)

    return defer.maybeDeferred(auth.authenticate, username, password, client_ip).addCallbacks(done, failed)
