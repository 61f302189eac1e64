"""``mailserver serve | check-config | migrate``."""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

from mailserver.cli.main import CliError

DEMO_FILE = "demo-account.txt"


def register(sub) -> None:
    p = sub.add_parser("serve", help="run every configured listener ([server] workers processes)")
    p.add_argument("--workers", type=int, metavar="N", default=None,
                   help="worker processes (overrides [server] workers; 1 = one process, no supervisor)")
    p.set_defaults(func=cmd_serve)
    import argparse

    p = sub.add_parser("worker", help=argparse.SUPPRESS)  # started by the supervisor, never by hand
    p.set_defaults(func=cmd_worker)
    p = sub.add_parser("check-config", help="load and validate the configuration, then exit")
    p.set_defaults(func=cmd_check_config)
    p = sub.add_parser("migrate", help="apply database migrations")
    p.set_defaults(func=cmd_migrate)


def cmd_check_config(args) -> int:
    cfg = args.config_obj
    from mailserver.tls import check_configured

    if cfg.tls.cert or cfg.tls.sni:
        try:
            check_configured(cfg)
        except ValueError as e:
            raise CliError(str(e)) from None
    print(f"{cfg.source}: OK ({len(cfg.listen.items()) + len(cfg.listen_proxied.items())} listener(s), database {redact(cfg.db_url)})")
    return 0


def cmd_migrate(args) -> int:
    from storage import migrate
    from storage.db import make_engine

    cfg = args.config_obj
    os.makedirs(cfg.data_dir, exist_ok=True)
    engine = make_engine(cfg.db_url)
    try:
        applied = migrate.upgrade(engine)
        print(f"schema at {', '.join(migrate.current_revisions(engine))}"
              + (f" (applied {', '.join(applied)})" if applied else " (up to date)"))
    finally:
        engine.dispose()
    return 0


def redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        if ":" in creds:
            creds = creds.split(":", 1)[0] + ":***"
        return f"{scheme}://{creds}@{host}"
    return url


def ensure_demo(cfg, store) -> tuple[str, str] | None:
    """First run of a config with ``demo = true``: create a demo domain + account; returns (address, password)."""
    path = Path(cfg.data_dir) / DEMO_FILE
    if path.exists():
        address, _, password = path.read_text().strip().partition(" ")
        if store.get_account(address) is not None:
            return address, password
    from mailserver.auth import PasswordHasher

    domain = cfg.domain[0].name if cfg.domain else "example.test"
    if store.get_domain(domain) is None:
        store.add_domain(domain)
    address = f"demo@{domain}"
    if store.get_account(address) is not None:
        return None  # created by hand earlier; we do not know its password
    password = secrets.token_urlsafe(12)
    store.add_account(address, PasswordHasher(cfg.auth.default_scheme).hash(password), display_name="Demo User")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"{address} {password}\n")
    return address, password


def first_run_text(cfg, server, demo) -> str:
    lines = ["", f"mailserver is running as {cfg.hostname} (data in {cfg.data_dir})"]
    for lst in server.listening:
        host = lst.address.host
        host = f"[{host}]" if ":" in host else host
        port = lst.bound_port
        extra = ""
        if lst.name in ("http", "https"):
            extra = f"   {lst.name}://{host}:{port}/" + ("  <- webmail" if lst.name == "https" else "")
        lines.append(f"  {lst.name:<12} {host}:{port}{extra}")
    if demo:
        lines += ["", f"Log in as {demo[0]} with password {demo[1]}",
                  "  (IMAP/POP3/SMTP submission user name = the address; the TLS certificate is self-signed)"]
    conf = os.path.relpath(cfg.source) if cfg.source else "FILE"
    domain = cfg.domain[0].name if cfg.domain else "example.test"
    lines += ["", "Add a user:", f"  {command_name()} --config {conf} user add you@{domain}", "Stop with Ctrl-C.", ""]
    return "\n".join(lines)


def command_name() -> str:
    """How the operator can run this command again: "mailserver" when it is on PATH, else its path."""
    import shutil

    exe = sys.argv[0] if sys.argv and os.path.basename(sys.argv[0]) == "mailserver" else ""
    if exe and shutil.which("mailserver") and os.path.samefile(shutil.which("mailserver"), exe):
        return "mailserver"
    return os.path.relpath(exe) if exe else "mailserver"


def ignore_sighup(reactor) -> None:
    """Log and ignore SIGHUP (``systemctl reload``, a log-rotation script's ``kill -HUP``).

    Its default action ends the process without a word.  Until configuration reload exists, the server keeps running
    with the configuration it has.  The handler only queues the log line for the reactor thread (as Twisted's own
    SIGINT/SIGTERM handlers queue ``stop``), so it never runs Twisted code in the middle of an interrupted call.
    """
    import signal

    from twisted.logger import Logger

    log = Logger(namespace="mailserver.cli.serve")

    def on_sighup(signum, frame) -> None:
        reactor.callFromThread(log.warn, "SIGHUP received; reload is not supported yet, ignoring")

    signal.signal(signal.SIGHUP, on_sighup)


def stop_once(reactor) -> None:
    """Stop the reactor unless it is already stopping.

    A process can be told to stop more than once: a second SIGTERM or Ctrl-C while the sessions drain, the
    supervisor's SIGTERM and the parent-death signal together, the orphan check firing again during the shutdown.
    Twisted's own handlers call ``reactor.stop`` each time, and every call after the first raises
    ``ReactorNotRunning`` and is logged as a critical error.  Here the later requests are no-ops.
    """
    from twisted.internet.error import ReactorNotRunning

    if getattr(reactor, "_stopped", False) or not reactor.running:
        return
    try:
        reactor.stop()
    except ReactorNotRunning:
        pass


def stop_on_signals(reactor) -> None:
    """SIGTERM and SIGINT stop the reactor once, however often they arrive (called once the reactor runs, after
    Twisted installed its own handlers, which this replaces).  Like Twisted's, the handler only queues the stop."""
    import signal

    def on_signal(signum, frame) -> None:
        reactor.callFromThread(stop_once, reactor)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def worker_count(cfg, override: int | None) -> int:
    """``--workers`` if given, else ``[server] workers`` (0 = one per CPU core)."""
    import dataclasses

    from mailserver.config import MAX_WORKERS

    if override is None:
        return cfg.server.worker_count()
    if not 0 <= override <= MAX_WORKERS:
        raise CliError(f"--workers: expected 0 (one per CPU core) to {MAX_WORKERS}")
    return dataclasses.replace(cfg.server, workers=override).worker_count()


def cmd_serve(args) -> int:
    cfg = args.config_obj
    count = worker_count(cfg, getattr(args, "workers", None))
    if count > 1:
        return serve_workers(cfg, count)
    return serve_one(cfg)


def serve_workers(cfg, count: int) -> int:
    """The supervisor and ``count`` worker processes (mailserver/supervisor.py)."""
    from twisted.internet import reactor

    from mailserver.log import start_logging
    from mailserver.service import ListenError
    from mailserver.supervisor import ListenError as BindError
    from mailserver.supervisor import Supervisor

    start_logging(cfg.log.format, cfg.log.level)
    sup = Supervisor(cfg, reactor, count)
    try:
        sup.prepare()
    except (ListenError, BindError) as e:
        raise CliError(str(e)) from None
    except Exception as e:  # database unreachable, bad TLS files, …
        raise CliError(f"cannot start: {e}") from None
    demo = ensure_demo(cfg, sup.store) if cfg.demo else None
    # The first-run text says the server is ready: printed once every worker serves on the shared sockets.
    sup.on_all_ready = lambda: print(first_run_text(cfg, sup, demo), flush=True)
    reactor.addSystemEventTrigger("before", "shutdown", sup.stop)
    reactor.callWhenRunning(sup.start)
    reactor.callWhenRunning(forward_sighup, reactor, sup)
    reactor.callWhenRunning(stop_on_signals, reactor)
    reactor.run()
    sys.stdout.flush()
    return 0


def forward_sighup(reactor, sup) -> None:
    """SIGHUP to the supervisor goes to every worker (each logs and ignores it until reload exists)."""
    import signal

    def on_sighup(signum, frame) -> None:
        reactor.callFromThread(sup.signal_workers, signal.SIGHUP)

    signal.signal(signal.SIGHUP, on_sighup)


def cmd_worker(args) -> int:
    """One worker process of a supervisor (the spec is in the environment: mailserver/workerspec.py)."""
    from twisted.internet import reactor, task

    from mailserver.log import start_logging
    from mailserver.service import MailServer
    from mailserver.workerspec import ENV, WorkerSpec

    spec = WorkerSpec.from_env()
    if spec is None:
        raise CliError(f"worker: started without {ENV} (use `serve`)")
    from mailserver.memory import return_large_blocks_to_the_system

    return_large_blocks_to_the_system()  # before anything large is allocated (the process is a worker's)
    cfg = args.config_obj
    start_logging(cfg.log.format, cfg.log.level)
    _die_with_parent()
    ignore_sighup(reactor)
    server = MailServer(cfg, reactor, worker=spec)
    server.trim_memory = True
    try:
        server.startService()
    except Exception as e:
        raise CliError(f"worker {spec.index}: cannot start: {e}") from None

    def orphaned() -> None:
        if os.getppid() != spec.supervisor_pid:
            from twisted.logger import Logger

            Logger(namespace="mailserver.cli.serve").warn("supervisor is gone; worker stopping")
            watch.stop()
            stop_once(reactor)

    watch = task.LoopingCall(orphaned)
    watch.start(1.0, now=False)
    reactor.addSystemEventTrigger("before", "shutdown", server.stopService)
    reactor.callWhenRunning(ignore_sighup, reactor)
    reactor.callWhenRunning(stop_on_signals, reactor)
    if server.bus is not None:
        reactor.callWhenRunning(server.bus.announce_ready)  # the reactor runs: the listeners accept
    reactor.run()
    return 0


def _die_with_parent() -> None:
    """Linux: SIGTERM this process when the supervisor dies (the 1 s orphan check covers other systems)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, 15)  # PR_SET_PDEATHSIG, SIGTERM
    except Exception:
        pass


def serve_one(cfg) -> int:
    """Everything in this process (``[server] workers = 1``)."""
    from twisted.internet import reactor

    from mailserver.log import start_logging
    from mailserver.memory import return_large_blocks_to_the_system
    from mailserver.service import ListenError, MailServer

    return_large_blocks_to_the_system()  # before anything large is allocated (the process is the server's)
    start_logging(cfg.log.format, cfg.log.level)
    ignore_sighup(reactor)
    server = MailServer(cfg, reactor)
    server.trim_memory = True
    try:
        server.startService()
    except ListenError as e:
        raise CliError(str(e)) from None
    except Exception as e:  # database unreachable, bad TLS files, …
        raise CliError(f"cannot start: {e}") from None
    demo = ensure_demo(cfg, server.store) if cfg.demo else None
    print(first_run_text(cfg, server, demo), flush=True)
    reactor.addSystemEventTrigger("before", "shutdown", server.stopService)
    reactor.callWhenRunning(ignore_sighup, reactor)  # again once the reactor has installed its own handlers
    reactor.run()
    sys.stdout.flush()
    return 0
