"""The ``mailserver`` command: one module per verb group, each with ``register(subparsers)``.

Exit codes: 0 success, 1 the operation failed (unknown domain, duplicate, cannot listen…), 2 usage or configuration
error.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from mailserver import config as config_mod

#: Modules adding subcommands; each has register(subparsers) setting ``func(args) -> int``.
COMMAND_MODULES = (
    "mailserver.cli.serve",
    "mailserver.cli.admin",
    "mailserver.cli.queue",
    "mailserver.cli.dkim",
    "mailserver.cli.dnsrecords",
    "mailserver.cli.mail",
    "mailserver.cli.sieve",
    "mailserver.cli.quarantine",
    "mailserver.cli.spam",
    "mailserver.cli.sendas",
    "mailserver.cli.node",
    "mailserver.cli.sharing",
)


class CliError(Exception):
    """A failure to report as ``error: …`` with exit code 1."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mailserver", description="One-process mail server: SMTP, IMAP, POP3, "
                                     "webmail.")
    parser.add_argument("--config", "-c", metavar="PATH",
                        help=f"configuration file (default: ${config_mod.ENV_CONFIG})")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError as e:
            if e.name == name:  # that command group is not built yet
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from mailserver import reactor as server_reactor

    server_reactor.install()  # before anything imports twisted.internet.reactor (mailserver/reactor.py)
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "needs_config", True):
        try:
            args.config_obj = config_mod.load(args.config)
        except config_mod.ConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    try:
        return int(args.func(args) or 0)
    except CliError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        admin = sys.modules.get("mailserver.cli.admin")
        if admin is not None:
            admin.close_stores()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
