"""Twisted glue for the ManageSieve session: transport, TLS, the idle timer, and the requests the session makes.

``build_factory(services, "managesieve")`` is what ``mailserver.service`` calls for ``[listen] managesieve``.
Everything protocol-related is decided by :class:`mailserver.managesieve.session.ManageSieveSession`; this module
carries its outputs out:

* logins through :func:`mailserver.login.login` (the shared authenticator: hashing in its pool, the per-IP and
  per-account throttling, the one log line), with the plaintext policy of ``services.auth.plaintext_allowed``;
* script commands through :func:`mailserver.managesieve.scripts.execute` (database pools, compiling in the cpu
  pool); while one runs, the transport is paused, so a client that pipelines cannot make us buffer without bound;
* STARTTLS: the session drops input buffered after it before :class:`StartTls` is carried out; the listener's
  wrapper puts a time limit on the handshake;
* the per-address cap (``limits.managesieve_max_sessions_per_ip``) and the idle timeout
  (``limits.managesieve_idle_timeout``; never while a command runs); every close goes through
  :func:`mailserver.connections.close_transport`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet import defer, protocol
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin

from mailserver import login as login_mod
from mailserver.connections import close_transport, refuse
from mailserver.managesieve import scripts, wire
from mailserver.managesieve import session as S
from mailserver.sieve import EXTENSIONS

if TYPE_CHECKING:
    from mailserver.services import Services

log = Logger()


def capabilities(services: Services) -> S.Capabilities:
    return S.Capabilities(implementation="mailserver", sieve_extensions=EXTENSIONS,
                          max_redirects=services.config.sieve.max_redirects)


class ManageSieveProtocol(protocol.Protocol, TimeoutMixin):
    def __init__(self, factory: ManageSieveFactory):
        self.factory = factory
        self.callLater = factory.clock.callLater
        self.session: S.ManageSieveSession | None = None
        self.client_ip = ""
        self._counted = False
        self._closing = None
        self._gone = False
        self._paused = False

    def connectionMade(self) -> None:
        services = self.factory.services
        self.client_ip = getattr(self.transport.getPeer(), "host", "") or ""
        if not self.factory.limiter.acquire(self.client_ip):
            self._closing = refuse(self.transport, services.reactor,
                                   wire.bye("too many connections from your address", wire.TRYLATER),
                                   tls_handshake_pending=False)
            return
        self._counted = True
        limits = services.config.limits
        self.session = S.ManageSieveSession(
            limits=limits, max_script_size=services.config.sieve.max_script_size,
            capabilities=capabilities(services), tls_active=False, tls_available=services.tls is not None,
            plaintext_without_tls=services.auth.plaintext_allowed(self.client_ip, False))
        self.setTimeout(self.factory.idle_timeout)
        self._carry_out(self.session.greeting())

    def dataReceived(self, data: bytes) -> None:
        if self.session is None:
            return
        self.resetTimeout()
        self._carry_out(self.session.data_received(data))

    def connectionLost(self, reason=protocol.connectionDone) -> None:
        self.setTimeout(None)
        self._gone = True
        if self._closing is not None and self._closing.active():
            self._closing.cancel()
        if self._counted:
            self._counted = False
            self.factory.limiter.release(self.client_ip)
        if self.session is not None:
            self.session.connection_lost()

    def timeoutConnection(self) -> None:
        if self.session is not None and self.session.busy:
            self.resetTimeout()
            return
        log.info("managesieve idle timeout for {ip}", ip=self.client_ip)
        self.transport.write(wire.bye("idle for too long"))
        self._close()

    def server_shutdown(self) -> None:
        if self.session is not None and not self.session.busy and not self.session.closed:
            self.transport.write(wire.bye("server shutting down", wire.TRYLATER))
            self._close()

    def _close(self) -> None:
        if self._closing is None and not self._gone:
            self._closing = close_transport(self.transport, self.factory.services.reactor)

    def _alive(self) -> bool:
        return self.session is not None and not self.session.closed and not self._gone

    # ----------------------------------------------------------------------------------------- outputs

    def _carry_out(self, outputs: list) -> None:
        for o in outputs:
            if isinstance(o, S.Send):
                self.transport.write(o.data)
            elif isinstance(o, S.Close):
                self._close()
            elif isinstance(o, S.StartTls):
                self.transport.startTLS(self.factory.services.tls)
            elif isinstance(o, S.Authenticate):
                self._pause()
                self._authenticate(o)
            elif isinstance(o, S.Operation):
                self._pause()
                defer.ensureDeferred(self._operate(o))
            else:  # pragma: no cover
                raise TypeError(f"unknown output {o!r}")
        if self._paused and self.session is not None and not self.session.busy:
            self._paused = False
            if not self._gone:
                self.transport.resumeProducing()

    def _pause(self) -> None:
        if not self._paused:
            self._paused = True
            self.transport.pauseProducing()

    def _authenticate(self, req: S.Authenticate) -> None:
        d = login_mod.login(self.factory.services.auth, req.username, req.password, self.client_ip,
                            "managesieve")

        def done(attempt: login_mod.Login):
            if not self._alive():
                return
            if attempt.outcome == login_mod.TEMPFAIL:
                self._carry_out(self.session.auth_error())
                return
            r = attempt.result
            self._carry_out(self.session.auth_result(r.ok, r.account_id, r.address or req.username, r.reason))

        d.addCallback(done).addErrback(lambda f: log.failure("managesieve glue error", f))

    async def _operate(self, op: S.Operation) -> None:
        try:
            result = await scripts.execute(self.factory.services, op.account_id, op.command)
        except wire.No as e:
            outputs = self.session.op_failed(e) if self._alive() else []
        except Exception:
            log.failure("managesieve {cmd} failed", cmd=type(op.command).__name__)
            outputs = self.session.op_failed(wire.No("internal error, try again later", wire.TRYLATER)) \
                if self._alive() else []
        else:
            if isinstance(op.command, (wire.PutScript, wire.SetActive, wire.DeleteScript, wire.RenameScript)):
                log.info("managesieve {user}: {cmd}", user=self.session.username, cmd=_brief(op.command))
            outputs = self.session.op_done(result) if self._alive() else []
        self._carry_out(outputs)


def _brief(cmd) -> str:
    if isinstance(cmd, wire.RenameScript):
        return f"RENAMESCRIPT {cmd.old!r} {cmd.new!r}"
    return f"{type(cmd).__name__.upper()} {getattr(cmd, 'name', '')!r}"


class ManageSieveFactory(protocol.Factory):
    def __init__(self, services: Services, listener_name: str):
        self.services = services
        self.listener_name = listener_name
        self.idle_timeout = services.config.limits.managesieve_idle_timeout
        self.clock = services.reactor
        self.limiter = services.state.limiter("managesieve", services.config.limits.managesieve_max_sessions_per_ip)

    def buildProtocol(self, addr) -> ManageSieveProtocol:
        return ManageSieveProtocol(self)


def build_factory(services: Services, listener_name: str) -> ManageSieveFactory:
    if listener_name != "managesieve":
        raise ValueError(f"not a ManageSieve listener: {listener_name}")
    return ManageSieveFactory(services, listener_name)
