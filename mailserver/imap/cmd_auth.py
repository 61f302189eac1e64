"""Connection-level IMAP commands: CAPABILITY, NOOP, LOGOUT, ID (any state); STARTTLS, LOGIN, AUTHENTICATE
(not authenticated); ENABLE, NAMESPACE, IDLE, COMPRESS (authenticated).

Handlers take ``(session, command)`` and follow the contract of :mod:`mailserver.imap.cmd_common`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.logger import Logger

from mailserver import login as login_mod
from mailserver import sasl

from . import commands as c
from . import response as r
from .cmd_common import REPLIED, Bad, No, Ok
from .parser import is_idle_done

if TYPE_CHECKING:
    from .session import ImapSession

log = Logger(namespace="mailserver.imap.session")

SERVER_NAME = "mailserver"
SERVER_VERSION = "1.0"
ENABLE_KNOWN = ("CONDSTORE", "QRESYNC", "UTF8=ACCEPT", "IMAP4REV2")


# ---------------------------------------------------------------------------------------------- any state

async def capability(s: ImapSession, cmd: c.Capability):
    s.send(r.untagged("CAPABILITY " + " ".join(s.capabilities())))


async def noop(s: ImapSession, cmd):
    return None


async def logout(s: ImapSession, cmd: c.Logout):
    s.flush_updates(cmd)
    s.send(r.status_line("BYE", "logging out"))
    s.send(r.tagged(cmd.tag, "OK", "LOGOUT completed"))
    s.close()
    return REPLIED


async def id_(s: ImapSession, cmd: c.Id):
    # RFC 2971 3.1: the server answers with its own identification.
    s.send(r.untagged(b'ID ("name" "' + SERVER_NAME.encode() + b'" "version" "' + SERVER_VERSION.encode() + b'")'))


# ---------------------------------------------------------------------------------------------- not authenticated

async def starttls(s: ImapSession, cmd: c.StartTLS):
    if s.tls_active or not s.tls_available:
        raise Bad("TLS is not available here" if not s.tls_active else "TLS is already active")
    s.send(r.tagged(cmd.tag, "OK", "begin TLS negotiation now"))
    # RFC 9051 6.2.1 / RFC 3207 class: plaintext pipelined after STARTTLS is discarded, never executed in TLS.
    dropped = s.reader.discard_buffer()
    if dropped:
        log.info("imap STARTTLS from {ip}: discarded {n} octets sent before TLS", ip=s.client_ip, n=dropped)
    s.conn.start_tls()
    s.tls_active = True
    return REPLIED


async def _authenticated(s: ImapSession, username: str, password: str, name: str) -> Ok:
    attempt = await login_mod.login(s.services.auth, username, password, s.client_ip, "imap")
    if attempt.outcome == login_mod.THROTTLED:
        raise No("too many failed attempts, try later", "UNAVAILABLE")  # RFC 5530 3
    if attempt.outcome == login_mod.INVALID:
        raise No("authentication failed", "AUTHENTICATIONFAILED")  # RFC 5530 3
    if attempt.outcome == login_mod.TEMPFAIL:
        raise No(f"{name} failed: server error", "SERVERBUG")  # as the dispatcher answers any failure
    result = attempt.result
    s.sign_in(result.account_id, result.address or username)
    # RFC 9051 6.2.2: the tagged OK may carry the new capabilities.
    return Ok("logged in", s.capability_code())


async def login(s: ImapSession, cmd: c.Login):
    if not s.plaintext_allowed:
        raise No("LOGIN needs TLS (use STARTTLS)", "PRIVACYREQUIRED")  # RFC 9051 6.2.3 LOGINDISABLED
    return await _authenticated(s, cmd.username, cmd.password, "LOGIN")


async def authenticate(s: ImapSession, cmd: c.Authenticate):
    if cmd.mechanism not in sasl.MECHANISMS:
        raise No(f"mechanism {cmd.mechanism} not supported", "CANNOT")
    if not s.plaintext_allowed:
        raise No("authentication needs TLS (use STARTTLS)", "PRIVACYREQUIRED")
    initial = cmd.initial_response.encode("ascii") if cmd.initial_response is not None else None
    exchange = sasl.start(cmd.mechanism, initial)
    while not exchange.done:
        s.send(r.continuation(exchange.challenge or b""))
        frame = await s.next_line()
        line = frame.line
        if line is None:
            raise Bad("literal in SASL response")
        exchange.respond(line.strip())
    return await _authenticated(s, exchange.username, exchange.password, "AUTHENTICATE")


# ---------------------------------------------------------------------------------------------- authenticated

async def enable(s: ImapSession, cmd: c.Enable):
    newly = []
    for cap in cmd.capabilities:
        if cap in ENABLE_KNOWN and cap not in s.enabled:
            s.enabled.add(cap)
            newly.append(cap)
            if cap == "QRESYNC":
                s.condstore = True  # RFC 7162 3.2.3: QRESYNC implies CONDSTORE
            elif cap == "CONDSTORE":
                s.condstore = True
    names = {"IMAP4REV2": "IMAP4rev2"}
    # RFC 5161 3.1: only the extensions newly enabled by this command are listed.
    s.send(r.untagged("ENABLED" + "".join(" " + names.get(x, x) for x in newly)))


async def namespace(s: ImapSession, cmd):
    # RFC 2342 / RFC 9051 6.3.10: personal, other users' and shared namespaces (storage/shared.py).
    s.send(r.untagged('NAMESPACE (("" "/")) (("Other Users/" "/")) (("Shared/" "/"))'))



async def idle(s: ImapSession, cmd: c.Idle):
    s.send(r.continuation("idling"))
    s.enter_idle(cmd.tag)
    s.conn.activity(idle=True)  # RFC 9051 6.3.13: IDLE re-arms the autologout timer
    try:
        s.heard_all()  # what another worker committed before IDLE began is told at once
        s.flush_in_idle()
        while True:
            frame = await s.next_line()
            if is_idle_done(frame):
                break
            raise Bad("expected DONE")
    finally:
        s.leave_idle()
    return Ok("IDLE terminated")


async def compress(s: ImapSession, cmd: c.Compress):
    if cmd.mechanism != "DEFLATE":
        raise Bad(f"unknown compression mechanism {cmd.mechanism}")
    if s.compressing:
        raise No("compression already active", "COMPRESSIONACTIVE")  # RFC 4978 3
    s.send(r.tagged(cmd.tag, "OK", "DEFLATE active"))
    s.reader.discard_buffer()  # RFC 4978 3: everything after the OK is compressed
    s.conn.start_compress()
    s.compressing = True
    return REPLIED
