"""The ManageSieve session (RFC 5804) as a sans-IO state machine.

:class:`ManageSieveSession` takes the client's bytes and returns *outputs*: bytes to send (:class:`Send`) and
requests for work that needs I/O: :class:`Authenticate` (answered by :meth:`~ManageSieveSession.auth_result` or
:meth:`~ManageSieveSession.auth_error`), :class:`Operation` (a script command for the store, answered by
:meth:`~ManageSieveSession.op_done` or :meth:`~ManageSieveSession.op_failed`), :class:`StartTls` and :class:`Close`.
While a request is outstanding no further command is read; pipelined ones wait in the reader.

Behaviour worth knowing:

* The capability list goes out at connect, after STARTTLS (RFC 5804 2.2) and for CAPABILITY.  ``SASL`` lists
  PLAIN and LOGIN only when the one plaintext policy allows them here (over TLS, from loopback, or configured);
  otherwise it is empty and AUTHENTICATE answers ``NO (ENCRYPT-NEEDED)``.
* STARTTLS drops everything buffered after its line (RFC 5804 2.2, the CVE-2011-0411 class).
* Before authentication a literal may be at most :data:`MAX_PREAUTH_LITERAL` octets (a SASL response); after it,
  ``[sieve] max_script_size``.  A larger literal is refused at once (PUTSCRIPT and CHECKSCRIPT with
  ``QUOTA/MAXSIZE``, RFC 5804 2.6) and its octets are discarded.
* ``managesieve_max_errors`` NO replies in a row end the session with BYE; a line longer than
  ``managesieve_max_line`` does at once.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from mailserver import sasl
from mailserver.config import LimitsConfig
from mailserver.managesieve import wire
from mailserver.managesieve.wire import No

#: Largest literal before authentication: enough for any SASL response (mailserver.sasl bounds them).
MAX_PREAUTH_LITERAL = sasl.MAX_RESPONSE_OCTETS + 16


class State(enum.Enum):
    NONAUTH = "NONAUTH"
    AUTH = "AUTH"


NONAUTH, AUTH = State.NONAUTH, State.AUTH
ANY = (NONAUTH, AUTH)


# --------------------------------------------------------------------------------------------- outputs


@dataclass(frozen=True)
class Send:
    data: bytes


@dataclass(frozen=True)
class StartTls:
    """Start TLS now, after the preceding Send; what follows is sent inside TLS."""


@dataclass(frozen=True)
class Authenticate:
    username: str
    password: str = field(repr=False)
    mechanism: str


@dataclass(frozen=True)
class Operation:
    """Carry out a script command for ``account_id`` (HaveSpace, PutScript, CheckScript, ListScripts, SetActive,
    GetScript, DeleteScript, RenameScript); answer with ``op_done(result)`` or ``op_failed(No)``."""

    account_id: int
    command: wire.Command


@dataclass(frozen=True)
class Close:
    reason: str = ""


Output = Send | StartTls | Authenticate | Operation | Close


@dataclass(frozen=True)
class ScriptEntry:
    """One line of LISTSCRIPTS."""

    name: str
    active: bool


@dataclass(frozen=True)
class Capabilities:
    """What the server announces besides SASL and STARTTLS (which the session decides)."""

    implementation: str = "mailserver"
    sieve_extensions: Sequence[str] = ()
    max_redirects: int = 0


# --------------------------------------------------------------------------------------------- session


class ManageSieveSession:
    """One ManageSieve connection.  See the module docstring for the contract."""

    def __init__(self, *, limits: LimitsConfig, max_script_size: int, capabilities: Capabilities,
                 tls_active: bool = False, tls_available: bool = False, plaintext_without_tls: bool = False,
                 sasl_start: Callable[[str, bytes | None], sasl.SaslExchange] = sasl.start):
        self.limits = limits
        self.max_script_size = max_script_size
        self.capabilities = capabilities
        self.tls_active = tls_active
        self.tls_available = tls_available
        self.plaintext_without_tls = plaintext_without_tls
        self._sasl_start = sasl_start
        self.state = NONAUTH
        self.closed = False
        self.account_id: int | None = None
        self.username: str | None = None
        self._reader = wire.CommandReader(limits.managesieve_max_line, MAX_PREAUTH_LITERAL)
        self._sasl: sasl.SaslExchange | None = None
        self._waiting: str | None = None  # "auth" | "op"
        self._pending: wire.Command | None = None
        self._errors = 0

    # ----------------------------------------------------------------------------------------- input

    @property
    def plaintext_allowed(self) -> bool:
        return sasl.plaintext_allowed(tls_active=self.tls_active, loopback=False,
                                      allow_without_tls=self.plaintext_without_tls)

    @property
    def busy(self) -> bool:
        return self._waiting is not None

    def greeting(self) -> list[Output]:
        # RFC 5804 1.7: the server sends its capabilities at connect, then OK.
        return [Send(self._capability_lines() + wire.ok("ManageSieve ready"))]

    def data_received(self, data: bytes) -> list[Output]:
        if self.closed:
            return []
        self._reader.feed(data)
        return self._run()

    def connection_lost(self) -> None:
        self.closed = True
        self._sasl = None

    # ----------------------------------------------------------------------------------------- results

    def auth_result(self, ok: bool, account_id: int | None = None, username: str = "",
                    reason: str = "") -> list[Output]:
        if not self._expect("auth"):
            return []
        out: list[Output] = []
        if ok and account_id is not None:
            self.state = AUTH
            self.account_id = account_id
            self.username = username or None
            self._reader.max_literal = self.max_script_size
            self._errors = 0
            out.append(Send(wire.ok("Logged in")))
        elif reason == "throttled":
            self._fail(out, No("too many failed logins, try again later", wire.TRYLATER))
        else:
            self._fail(out, No("Authentication failed"))
        return out + self._run()

    def auth_error(self) -> list[Output]:
        if not self._expect("auth"):
            return []
        out: list[Output] = []
        self._fail(out, No("authentication temporarily unavailable", wire.TRYLATER))
        return out + self._run()

    def op_done(self, result=None) -> list[Output]:
        """The answer to :class:`Operation`: a list of ScriptEntry (LISTSCRIPTS), the script text (GETSCRIPT),
        or None; for PUTSCRIPT/CHECKSCRIPT a string of warnings ("" for none)."""
        if not self._expect("op"):
            return []
        cmd, self._pending = self._pending, None
        self._errors = 0
        if isinstance(cmd, wire.ListScripts):
            body = b"".join(wire.string(e.name) + (b" ACTIVE" if e.active else b"") + b"\r\n" for e in result)
            out = [Send(body + wire.ok("Listscripts completed"))]
        elif isinstance(cmd, wire.GetScript):
            out = [Send(wire.literal(result) + b"\r\n" + wire.ok("Getscript completed"))]
        elif isinstance(cmd, (wire.PutScript, wire.CheckScript)) and result:
            out = [Send(wire.ok(result, wire.WARNINGS))]  # RFC 5804 1.3: OK (WARNINGS)
        else:
            out = [Send(wire.ok(_DONE.get(type(cmd), "Done")))]
        return out + self._run()

    def op_failed(self, error: No) -> list[Output]:
        if not self._expect("op"):
            return []
        self._pending = None
        out: list[Output] = []
        self._fail(out, error)
        return out + self._run()

    # ----------------------------------------------------------------------------------------- machinery

    def _expect(self, what: str) -> bool:
        if self.closed or self._waiting != what:
            return False
        self._waiting = None
        return True

    def _close(self, out: list[Output], reason: str) -> None:
        self.closed = True
        self._reader.clear()
        out.append(Close(reason))

    def _fail(self, out: list[Output], error: No) -> None:
        out.append(Send(wire.no(error.text, error.code)))
        self._errors += 1
        if self._errors >= self.limits.managesieve_max_errors and not self.closed:
            out.append(Send(wire.bye("Too many errors")))
            self._close(out, "too many errors")

    def _run(self) -> list[Output]:
        out: list[Output] = []
        while not self.closed and self._waiting is None:
            try:
                line = self._reader.next_line()
            except wire.LineTooLong as e:
                out.append(Send(wire.bye(str(e))))
                self._close(out, "line too long")
                break
            except wire.LiteralTooLarge as e:
                self._sasl = None
                code = wire.QUOTA_MAXSIZE if self.state is AUTH else None
                self._fail(out, No(f"{e}", code))
                continue
            except No as e:
                self._sasl = None
                self._fail(out, e)
                continue
            if line is None:
                break
            if self._sasl is not None:
                self._sasl_line(line, out)
            else:
                self._command(line, out)
        return out

    def _command(self, line: wire.Line, out: list[Output]) -> None:
        try:
            cmd = wire.parse_command(line)
            handler, states = HANDLERS[type(cmd)]
            if self.state not in states:
                raise No("authenticate first" if self.state is NONAUTH else "already authenticated")
            handler(self, cmd, out)
        except No as e:
            self._fail(out, e)

    # ----------------------------------------------------------------------------------------- capabilities

    def _capability_lines(self) -> bytes:
        caps = self.capabilities
        lines = [(b"IMPLEMENTATION", caps.implementation),
                 (b"SASL", " ".join(sasl.MECHANISMS) if self.plaintext_allowed else ""),
                 (b"SIEVE", " ".join(caps.sieve_extensions))]
        out = b"".join(b'"' + k + b'" ' + wire.string(v) + b"\r\n" for k, v in lines)
        if self.tls_available and not self.tls_active and self.state is NONAUTH:
            out += b'"STARTTLS"\r\n'
        if caps.max_redirects:
            out += b'"MAXREDIRECTS" ' + wire.string(str(caps.max_redirects)) + b"\r\n"
        if self.state is AUTH and self.username:
            out += b'"OWNER" ' + wire.string(self.username) + b"\r\n"  # RFC 5804 1.7
        out += b'"UNAUTHENTICATE"\r\n"VERSION" "1.0"\r\n'
        return out

    # ----------------------------------------------------------------------------------------- handlers

    def _capability(self, cmd: wire.Capability, out: list[Output]) -> None:
        out.append(Send(self._capability_lines() + wire.ok("Capability completed")))

    def _logout(self, cmd: wire.Logout, out: list[Output]) -> None:
        out.append(Send(wire.ok("Logout completed")))
        self._close(out, "logout")

    def _noop(self, cmd: wire.Noop, out: list[Output]) -> None:
        # RFC 5804 2.13: an argument comes back in a TAG response code.
        out.append(Send(wire.ok("Done", "TAG", cmd.tag) if cmd.tag is not None else wire.ok("Done")))

    def _starttls(self, cmd: wire.StartTls, out: list[Output]) -> None:
        if self.tls_active or not self.tls_available:
            raise No("TLS is not available" if not self.tls_active else "TLS is already active")
        out.append(Send(wire.ok("Begin TLS negotiation now")))
        self._reader.clear()  # RFC 5804 2.2 / the CVE-2011-0411 class: nothing pipelined after STARTTLS
        self.tls_active = True
        out.append(StartTls())
        # RFC 5804 2.2: after the TLS negotiation the server re-issues its capabilities, then OK.
        out.append(Send(self._capability_lines() + wire.ok("TLS negotiation successful")))

    def _unauthenticate(self, cmd: wire.Unauthenticate, out: list[Output]) -> None:
        # RFC 5804 2.14.1: back to the non-authenticated state.
        self.state = NONAUTH
        self.account_id = None
        self.username = None
        self._reader.max_literal = MAX_PREAUTH_LITERAL
        out.append(Send(wire.ok("Unauthenticate completed")))

    def _authenticate(self, cmd: wire.Authenticate, out: list[Output]) -> None:
        if cmd.mechanism.upper() not in sasl.MECHANISMS:
            raise No(f"unsupported mechanism {cmd.mechanism[:32]}")
        if not self.plaintext_allowed:
            raise No("use STARTTLS before authenticating", wire.ENCRYPT_NEEDED)
        try:
            # RFC 5804 2.1: an empty string is an empty initial response ("=" in mailserver.sasl's terms).
            initial = b"=" if cmd.initial_response == b"" else cmd.initial_response
            exchange = self._sasl_start(cmd.mechanism, initial)
        except sasl.SaslAuthorizationError:
            raise No("authorization identity refused") from None
        except sasl.SaslError as e:
            raise No(str(e)) from None
        self._sasl_step(exchange, out)

    def _sasl_step(self, exchange: sasl.SaslExchange, out: list[Output]) -> None:
        if exchange.done:
            self._sasl = None
            self._waiting = "auth"
            out.append(Authenticate(exchange.username, exchange.password, exchange.mechanism))
            return
        self._sasl = exchange
        # RFC 5804 2.1: each challenge is a string of base64 text on its own line.
        out.append(Send(wire.string(exchange.challenge or b"") + b"\r\n"))

    def _sasl_line(self, line: wire.Line, out: list[Output]) -> None:
        exchange, self._sasl = self._sasl, None
        if len(line.tokens) != 1 or not isinstance(line.tokens[0], wire.String):
            self._fail(out, No("expected a string with the SASL response"))
            return
        data = line.tokens[0].data
        try:
            exchange.respond(data)  # RFC 5804 2.1: "*" cancels, answered NO
        except sasl.SaslAuthorizationError:
            self._fail(out, No("authorization identity refused"))
            return
        except sasl.SaslError as e:
            self._fail(out, No(str(e)))
            return
        self._sasl_step(exchange, out)

    def _script(self, cmd, out: list[Output]) -> None:
        if isinstance(cmd, wire.HaveSpace) and cmd.size > self.max_script_size:
            raise No(f"a script may have at most {self.max_script_size} octets", wire.QUOTA_MAXSIZE)
        self._waiting = "op"
        self._pending = cmd
        out.append(Operation(self.account_id, cmd))


_DONE = {wire.HaveSpace: "Putscript would succeed", wire.PutScript: "Putscript completed",
         wire.CheckScript: "Script is valid", wire.SetActive: "Setactive completed",
         wire.DeleteScript: "Deletescript completed", wire.RenameScript: "Renamescript completed"}

#: The one command table: command type -> (handler, states it is valid in).
HANDLERS: dict[type, tuple[Callable, tuple[State, ...]]] = {
    wire.Capability: (ManageSieveSession._capability, ANY),
    wire.Logout: (ManageSieveSession._logout, ANY),
    wire.Noop: (ManageSieveSession._noop, ANY),
    wire.StartTls: (ManageSieveSession._starttls, (NONAUTH,)),
    wire.Authenticate: (ManageSieveSession._authenticate, (NONAUTH,)),
    wire.Unauthenticate: (ManageSieveSession._unauthenticate, (AUTH,)),
    wire.HaveSpace: (ManageSieveSession._script, (AUTH,)),
    wire.PutScript: (ManageSieveSession._script, (AUTH,)),
    wire.CheckScript: (ManageSieveSession._script, (AUTH,)),
    wire.ListScripts: (ManageSieveSession._script, (AUTH,)),
    wire.SetActive: (ManageSieveSession._script, (AUTH,)),
    wire.GetScript: (ManageSieveSession._script, (AUTH,)),
    wire.DeleteScript: (ManageSieveSession._script, (AUTH,)),
    wire.RenameScript: (ManageSieveSession._script, (AUTH,)),
}
