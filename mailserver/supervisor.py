"""The supervisor of ``mailserver serve`` with ``[server] workers`` above 1.

In order: bind every ``[listen]``/``[listen_proxied]`` address once (root may bind ports below 1024 here), drop
privileges (``[server] user``/``group``), prepare what the workers must not race for (data_dir, migrations, the
``[[domain]]`` rows, the self-signed certificate, the demo account), open the worker bus (:mod:`mailserver.bus`),
then spawn the workers: fresh interpreters (``python -m mailserver worker``), each inheriting the listening sockets
and running one reactor on them (the kernel hands each new connection to one of the workers waiting in
``accept``).  With ``[server] reuse_port = true`` every listener is bound once per worker with ``SO_REUSEPORT``
(all before privileges drop, so ports below 1024 work too) and worker ``i`` inherits only the ``i``-th socket of
each listener: the kernel then picks the socket, hence the worker, by a hash of the connection's addresses, whether
that worker is busy or not.  A restarted worker takes over the same sockets, so connections that queued on them
while it was down are served, not reset (they wait for the restart: up to the backoff delay).

A worker that ends while the server runs is restarted, after a delay that doubles with each quick death
(:data:`BACKOFF_FIRST` up to :data:`BACKOFF_MAX`); before, its leases and maildrop locks are freed
(:func:`mailserver.leases.free_holder`) and every other worker is told to RESYNC (changes it committed but never sent
are read from the database).  SIGHUP is passed on to the workers; SIGTERM/SIGINT stop them (SIGTERM each, SIGKILL
after :data:`STOP_TIMEOUT` seconds) and then the supervisor.  A worker whose supervisor is gone stops itself.

The supervisor serves no connection and holds no per-cluster state: it runs a reactor only for the bus, the timers
and the children.
"""

from __future__ import annotations

import grp
import os
import pwd
import secrets
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from twisted.internet import defer, protocol, threads
from twisted.logger import Logger

from mailserver.bus import RESYNC, BusServerFactory
from mailserver.config import Config, ListenAddress
from mailserver.leases import free_holder, new_holder
from mailserver.workerspec import ENV, InheritedSocket, WorkerSpec

log = Logger()

BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0
#: A worker that ran at least this long before it died is restarted without delay growth.
STABLE_AFTER = 10.0
#: Seconds a stopping worker gets before SIGKILL.
STOP_TIMEOUT = 30.0
#: Backlog of each listening socket (the same as a single process's).
BACKLOG = 1024


class ListenError(Exception):
    """A listener could not be bound (the same sentence as mailserver.service.ListenError)."""


@dataclass
class BoundSocket:
    section: str
    name: str
    address: ListenAddress
    #: One socket every worker shares, or (``reuse_port``) one ``SO_REUSEPORT`` socket per worker.
    socks: tuple[socket.socket, ...]

    @property
    def sock(self) -> socket.socket:
        return self.socks[0]

    def sock_for(self, index: int) -> socket.socket:
        """The socket worker ``index`` listens on."""
        return self.socks[index] if len(self.socks) > 1 else self.socks[0]

    def close(self) -> None:
        for s in self.socks:
            s.close()

    @property
    def bound_port(self) -> int:
        return self.sock.getsockname()[1]

    @property
    def proxy(self):
        return True if self.section == "listen_proxied" else None


def _bind_one(section: str, name: str, address: ListenAddress, port: int, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.bind((address.host, port))
        s.listen(BACKLOG)
        s.setblocking(False)
    except OSError as e:
        s.close()
        raise ListenError(f"{section}.{name}: cannot listen on {address}: {e.strerror or e}") from None
    return s


def bind_all(cfg: Config, copies: int = 1) -> list[BoundSocket]:
    """Bind and listen on every configured address (closing all of them if one fails): one socket each, or with
    ``copies`` above 1 that many ``SO_REUSEPORT`` sockets on the same address (the first one's port: port 0 binds
    one free port for all)."""
    out: list[BoundSocket] = []
    try:
        for section, items in (("listen", cfg.listen.items()), ("listen_proxied", cfg.listen_proxied.items())):
            for name, address in items:
                reuse = copies > 1
                socks = [_bind_one(section, name, address, address.port, reuse)]
                try:
                    port = socks[0].getsockname()[1]
                    for _ in range(copies - 1):
                        socks.append(_bind_one(section, name, address, port, reuse))
                except BaseException:
                    for s in socks:
                        s.close()
                    raise
                out.append(BoundSocket(section, name, address, tuple(socks)))
    except BaseException:
        for b in out:
            b.close()
        raise
    return out


def drop_privileges(user: str, group: str) -> None:
    """Become ``user`` (and ``group``, else the user's primary group); nothing when ``user`` is empty."""
    if not user:
        return
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        raise ListenError(f"server.user: no such user {user!r}") from None
    try:
        gid = grp.getgrnam(group).gr_gid if group else pw.pw_gid
    except KeyError:
        raise ListenError(f"server.group: no such group {group!r}") from None
    if os.getuid() == pw.pw_uid and os.getgid() == gid:
        return
    if os.geteuid() != 0:
        raise ListenError(f"server.user: only root can become {user!r}")
    os.setgroups([gid])
    os.setgid(gid)
    os.setuid(pw.pw_uid)
    os.environ["HOME"] = pw.pw_dir
    log.info("running as user {user} (uid {uid}, gid {gid})", user=user, uid=pw.pw_uid, gid=gid)


class WorkerProcess(protocol.ProcessProtocol):
    def __init__(self, supervisor: "Supervisor", index: int, holder: str):
        self.supervisor = supervisor
        self.index = index
        self.holder = holder
        self.started = time.monotonic()
        self.pid: int | None = None
        self.ended = defer.Deferred()

    def connectionMade(self):
        self.pid = self.transport.pid

    def processEnded(self, reason):
        self.supervisor._ended(self, reason)
        self.ended.callback(None)


class Supervisor:
    """Runs ``count`` workers of the server configured by ``cfg`` (whose ``source`` is the file they load)."""

    def __init__(self, cfg: Config, reactor, count: int):
        self.cfg = cfg
        self.reactor = reactor
        self.count = count
        self.sockets: list[BoundSocket] = []
        self.store = None
        self.bus = BusServerFactory(on_ready=self._worker_ready)
        self.on_all_ready = None  # called once, when every worker has said it serves
        self._announced = False
        self.bus_path = str(Path(cfg.data_dir) / "run" / "bus.sock")
        self._bus_port = None
        self.workers: dict[int, WorkerProcess] = {}
        self._quick_deaths: dict[int, int] = {}
        self._restarts: dict[int, object] = {}
        self.restarted = 0
        self.stopping = False
        #: Keys the workers' shared login success cache (mailserver/auth.py); lives as long as this supervisor.
        self.auth_secret = secrets.token_bytes(32)

    # ------------------------------------------------------------------ start

    def prepare(self) -> None:
        """Bind, drop privileges, migrate and prepare shared files (blocking; before the reactor runs)."""
        from mailserver.service import check_shared_storage, open_store

        cfg = self.cfg
        self.sockets = bind_all(cfg, self.count if cfg.server.reuse_port else 1)
        drop_privileges(cfg.server.user, cfg.server.group)
        check_shared_storage(cfg)
        self.store = open_store(cfg, pool_size=2)  # migrations once, [[domain]] rows, data_dir
        if cfg.listen.items() or cfg.listen_proxied.items():
            from mailserver.tls import server_context_factory

            try:
                server_context_factory(cfg, self.store)  # the self-signed pair made once, before any worker
            except ValueError as e:
                raise ListenError(f"tls: {e}") from None
        run_dir = Path(self.bus_path).parent
        run_dir.mkdir(mode=0o700, exist_ok=True)
        os.chmod(run_dir, 0o700)
        try:
            os.unlink(self.bus_path)  # left by a supervisor that was killed
        except FileNotFoundError:
            pass
        from mailserver import commitboard

        commitboard.create(run_dir, self.count)  # each worker's committed modseqs, read by the others

    @property
    def listening(self) -> list[BoundSocket]:
        return self.sockets

    def start(self) -> None:
        """On the reactor: open the bus and spawn every worker."""
        self._bus_port = self.reactor.listenUNIX(self.bus_path, self.bus, mode=0o600)
        log.info("supervisor (pid {pid}) starting {n} workers", pid=os.getpid(), n=self.count)
        for i in range(self.count):
            self._spawn(i)

    def _worker_ready(self, origin: str) -> None:
        log.info("worker {origin} serving", origin=origin)
        if not self._announced and len(self.bus.ready) >= self.count:
            self._announced = True
            if self.on_all_ready is not None:
                self.on_all_ready()

    def _spawn(self, index: int) -> None:
        self._restarts.pop(index, None)
        if self.stopping:
            return
        holder = new_holder(f"worker{index}")
        spec = WorkerSpec(index=index, holder=holder, bus_path=self.bus_path, supervisor_pid=os.getpid(),
                          auth_secret=self.auth_secret,
                          sockets=tuple(InheritedSocket(b.section, b.name, b.sock_for(index).fileno(),
                                                        b.sock_for(index).family) for b in self.sockets))
        child_fds: dict[int, object] = {0: 0, 1: 1, 2: 2}
        for b in self.sockets:
            fd = b.sock_for(index).fileno()
            os.set_inheritable(fd, True)
            child_fds[fd] = fd
        env = dict(os.environ)
        env[ENV] = spec.to_env()
        proc = WorkerProcess(self, index, holder)
        argv = [sys.executable, "-m", "mailserver", "--config", os.path.abspath(self.cfg.source), "worker"]
        self.reactor.spawnProcess(proc, sys.executable, argv, env=env, path=os.getcwd(), childFDs=child_fds)
        self.workers[index] = proc
        log.info("worker {i} started (pid {pid})", i=index, pid=proc.pid)

    # ------------------------------------------------------------------ children

    def _ended(self, proc: WorkerProcess, reason) -> None:
        if self.workers.get(proc.index) is proc:
            del self.workers[proc.index]
        status = reason.value
        how = (f"signal {status.signal}" if getattr(status, "signal", None)
               else f"exit code {getattr(status, 'exitCode', '?')}")
        # Whatever it held (the maintenance lease, POP3 maildrop locks) is free now; changes it committed but did not
        # send on the bus are read from the database by the others.
        d = threads.deferToThread(free_holder, self.store, proc.holder)
        d.addErrback(lambda f: log.failure("freeing the leases of worker {i} failed", f, i=proc.index))
        self.bus.broadcast(RESYNC)
        if self.stopping:
            log.info("worker {i} (pid {pid}) stopped ({how})", i=proc.index, pid=proc.pid, how=how)
            return
        lived = time.monotonic() - proc.started
        quick = self._quick_deaths.get(proc.index, 0) + 1 if lived < STABLE_AFTER else 0
        self._quick_deaths[proc.index] = quick
        delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (quick - 1)) if quick else 0.0
        log.warn("worker {i} (pid {pid}) ended ({how}); restarting it in {delay}s", i=proc.index, pid=proc.pid,
                 how=how, delay=delay)
        self.restarted += 1
        self._restarts[proc.index] = self.reactor.callLater(delay, self._spawn, proc.index)

    def signal_workers(self, signum: int) -> None:
        for proc in list(self.workers.values()):
            try:
                proc.transport.signalProcess(signum)
            except Exception:
                pass  # already gone

    # ------------------------------------------------------------------ stop

    @defer.inlineCallbacks
    def stop(self):
        """SIGTERM every worker, wait for them (SIGKILL after STOP_TIMEOUT), then close everything."""
        self.stopping = True
        for call in list(self._restarts.values()):
            if call.active():
                call.cancel()
        self._restarts.clear()
        waiting = [p.ended for p in self.workers.values()]
        if waiting:
            log.info("stopping {n} workers", n=len(waiting))
        self.signal_workers(signal.SIGTERM)
        killer = self.reactor.callLater(STOP_TIMEOUT, self.signal_workers, signal.SIGKILL)
        yield defer.DeferredList(waiting)
        if killer.active():
            killer.cancel()
        if self._bus_port is not None:
            yield self._bus_port.stopListening()
        for b in self.sockets:
            b.close()
        if self.store is not None:
            self.store.dispose()
        log.info("stopped")
