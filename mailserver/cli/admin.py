"""``mailserver domain … | user … | alias …``: manage protected domains, accounts and aliases."""

from __future__ import annotations

import getpass
import re
import sys

from mailserver.cli.main import CliError

SIZE_RE = re.compile(r"^\s*(\d+)\s*([kmgt]?)i?b?\s*$", re.I)
UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_size(text: str) -> int:
    """"500M", "2G", "1048576" -> bytes; "0" = unlimited."""
    m = SIZE_RE.match(text)
    if not m:
        raise CliError(f"not a size: {text!r} (examples: 0, 500M, 2G)")
    return int(m.group(1)) * UNITS[m.group(2).lower()]


_opened: list = []


def open_store(args):
    from mailserver.service import open_store as _open

    try:
        store = _open(args.config_obj)
    except Exception as e:
        raise CliError(f"cannot open the store: {e}") from None
    _opened.append(store)
    return store


def close_stores() -> None:
    """Dispose of the engines this command opened (main() calls it when the command ends)."""
    while _opened:
        _opened.pop().engine.dispose()


def _store_call(f, *a, **kw):
    from storage.store import StoreError

    try:
        return f(*a, **kw)
    except StoreError as e:
        raise CliError(str(e)) from None


def read_password(args, confirm: bool = True) -> str:
    if args.password_stdin:
        line = sys.stdin.readline()
        password = line.rstrip("\r\n")
    else:
        if not sys.stdin.isatty():
            raise CliError("no terminal to ask for the password: use --password-stdin or --password-hash")
        password = getpass.getpass("Password: ")
        if confirm and getpass.getpass("Again: ") != password:
            raise CliError("passwords differ")
    if not password:
        raise CliError("empty password")
    if len(password.encode()) > 1024:
        raise CliError("password longer than 1024 bytes")
    return password


def register(sub) -> None:
    # domain
    d = sub.add_parser("domain", help="protected domains").add_subparsers(dest="action", metavar="ACTION")
    d.required = True
    p = d.add_parser("add", help="add a protected domain")
    p.add_argument("name")
    p.add_argument("--mode", choices=("local", "relay"), default="local",
                   help="local: mailboxes here (server mode); relay: accept and relay to --relay-to (gateway mode)")
    p.add_argument("--relay-to", default="", metavar="HOST:PORT")
    p.set_defaults(func=domain_add)
    p = d.add_parser("list", help="list protected domains")
    p.set_defaults(func=domain_list)
    p = d.add_parser("remove", help="remove a domain (it must have no accounts)")
    p.add_argument("name")
    p.set_defaults(func=domain_remove)

    # user
    u = sub.add_parser("user", help="accounts").add_subparsers(dest="action", metavar="ACTION")
    u.required = True
    p = u.add_parser("add", help="add an account")
    p.add_argument("address")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    g.add_argument("--password-hash", metavar="HASH", help="import an existing hash ({SHA512-CRYPT}…, $argon2id$…)")
    p.add_argument("--name", default="", help="display name")
    p.add_argument("--quota", default="0", help="quota, e.g. 2G (0 = unlimited)")
    p.set_defaults(func=user_add)
    p = u.add_parser("passwd", help="set an account's password")
    p.add_argument("address")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--password-stdin", action="store_true")
    g.add_argument("--password-hash", metavar="HASH")
    p.set_defaults(func=user_passwd)
    p = u.add_parser("list", help="list accounts")
    p.add_argument("--domain")
    p.set_defaults(func=user_list)
    p = u.add_parser("remove", help="remove an account and all its mail")
    p.add_argument("address")
    p.set_defaults(func=user_remove)
    p = u.add_parser("set-quota", help="set an account's quota")
    p.add_argument("address")
    p.add_argument("quota", help="e.g. 2G, 500M, 0 = unlimited")
    p.set_defaults(func=user_set_quota)
    p = u.add_parser("import", help="create accounts from a Dovecot passwd-file (address:{SCHEME}hash[:…])")
    p.add_argument("file")
    p.set_defaults(func=user_import)
    p = u.add_parser("admin", help="the domain-admin role: sees and acts on a domain's quarantine in the webmail")
    adm = p.add_subparsers(dest="admin_action", metavar="grant|revoke|list")
    adm.required = True
    for verb, func in (("grant", user_admin_grant), ("revoke", user_admin_revoke)):
        q = adm.add_parser(verb, help=f"{verb} ADDRESS the admin role for DOMAIN")
        q.add_argument("address")
        q.add_argument("domain")
        q.set_defaults(func=func)
    q = adm.add_parser("list", help="list domain admins")
    q.add_argument("--domain")
    q.set_defaults(func=user_admin_list)

    # alias
    a = sub.add_parser("alias", help="aliases (one address to one or more targets; @domain = catch-all)"
                       ).add_subparsers(dest="action", metavar="ACTION")
    a.required = True
    p = a.add_parser("add", help="add an alias")
    p.add_argument("address", help="local@domain, or @domain for a catch-all")
    p.add_argument("targets", nargs="+", help="local accounts or external addresses")
    p.set_defaults(func=alias_add)
    p = a.add_parser("list", help="list aliases")
    p.add_argument("--domain")
    p.set_defaults(func=alias_list)
    p = a.add_parser("remove", help="remove an alias (all its targets, or one)")
    p.add_argument("address")
    p.add_argument("target", nargs="?")
    p.set_defaults(func=alias_remove)


# ------------------------------------------------------------------------------------------------ domain


def domain_add(args) -> int:
    store = open_store(args)
    if args.mode == "relay" and not args.relay_to:
        raise CliError("--mode relay needs --relay-to HOST:PORT")
    d = _store_call(store.add_domain, args.name, args.mode, args.relay_to)
    print(f"added domain {d.name} ({d.mode}{' -> ' + d.relay_to if d.relay_to else ''})")
    return 0


def domain_list(args) -> int:
    for d in open_store(args).list_domains():
        print(f"{d.name}\t{d.mode}\t{d.relay_to}".rstrip())
    return 0


def domain_remove(args) -> int:
    _store_call(open_store(args).remove_domain, args.name)
    print(f"removed domain {args.name}")
    return 0


# ------------------------------------------------------------------------------------------------ user


def _hasher(args):
    from mailserver.auth import PasswordHasher

    return PasswordHasher(args.config_obj.auth.default_scheme)


def _hash_from_args(args, hasher) -> str:
    if args.password_hash:
        try:
            hasher.check_importable(args.password_hash)
        except ValueError as e:
            raise CliError(str(e)) from None
        return args.password_hash
    return hasher.hash(read_password(args))


def user_add(args) -> int:
    store = open_store(args)
    quota = parse_size(args.quota)
    from storage.store import _ADDR_RE, normalize_address

    address = normalize_address(args.address)
    if not _ADDR_RE.match(address):
        raise CliError(f"malformed address: {args.address!r}")
    if store.get_domain(address.rsplit("@", 1)[1]) is None:
        raise CliError(f"unknown domain {address.rsplit('@', 1)[1]} (add it first: mailserver domain add "
                       f"{address.rsplit('@', 1)[1]})")
    if store.get_account(address) is not None:
        raise CliError(f"account {address} exists")
    password_hash = _hash_from_args(args, _hasher(args))
    acct = _store_call(store.add_account, address, password_hash, args.name, quota)
    print(f"added {acct.address}")
    return 0


def user_passwd(args) -> int:
    store = open_store(args)
    acct = store.get_account(args.address)
    if acct is None:
        raise CliError(f"no account {args.address}")
    store.set_password_hash(acct.id, _hash_from_args(args, _hasher(args)))
    print(f"password changed for {acct.address}")
    return 0


def user_list(args) -> int:
    from mailserver.cli.admin import format_size

    for a in open_store(args).list_accounts(args.domain):
        quota = format_size(a.quota_bytes) if a.quota_bytes else "unlimited"
        print(f"{a.address}\t{format_size(a.used_bytes)}/{quota}\t{'enabled' if a.enabled else 'disabled'}\t"
              f"{a.display_name}".rstrip())
    return 0


def format_size(n: int) -> str:
    for unit in ("B", "K", "M", "G"):
        if n < 1024 or unit == "G":
            return f"{n}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return str(n)  # pragma: no cover


def user_remove(args) -> int:
    _store_call(open_store(args).remove_account, args.address)
    print(f"removed {args.address}")
    return 0


def user_set_quota(args) -> int:
    acct = _store_call(open_store(args).set_quota, args.address, parse_size(args.quota))
    print(f"quota of {acct.address}: {format_size(acct.quota_bytes) if acct.quota_bytes else 'unlimited'}")
    return 0


def _admin_args(args):
    store = open_store(args)
    acct = store.get_account(args.address)
    if acct is None:
        raise CliError(f"no account {args.address}")
    dom = store.get_domain(args.domain)
    if dom is None:
        raise CliError(f"no domain {args.domain}")
    return store, acct, dom


def user_admin_grant(args) -> int:
    store, acct, dom = _admin_args(args)
    store.set_domain_admin(acct.id, dom.id, True)
    print(f"{acct.address} is an admin of {dom.name}")
    return 0


def user_admin_revoke(args) -> int:
    store, acct, dom = _admin_args(args)
    store.set_domain_admin(acct.id, dom.id, False)
    print(f"{acct.address} is no admin of {dom.name}")
    return 0


def user_admin_list(args) -> int:
    store = open_store(args)
    domain_id = None
    if args.domain:
        dom = store.get_domain(args.domain)
        if dom is None:
            raise CliError(f"no domain {args.domain}")
        domain_id = dom.id
    names = {d.id: d.name for d in store.list_domains()}
    for address, d in store.domain_admins(domain_id):
        print(f"{address}\t{names.get(d, d)}")
    return 0


def user_import(args) -> int:
    """Lines ``address:{SCHEME}hash[:uid:gid:gecos:home:shell:extra]``; blank lines and # comments are skipped."""
    store = open_store(args)
    hasher = _hasher(args)
    try:
        lines = open(args.file, encoding="utf-8").read().splitlines()
    except OSError as e:
        raise CliError(f"cannot read {args.file}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise CliError(f"{args.file} is not UTF-8") from None
    from storage.store import StoreError

    ok = failed = 0
    for n, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        address, sep, rest = line.partition(":")
        password_hash = rest.split(":", 1)[0] if sep else ""
        try:
            if not sep or not password_hash:
                raise ValueError("expected address:{SCHEME}hash")
            if "@" not in address:
                raise ValueError(f"{address!r} is not an address (user@domain)")
            hasher.check_importable(password_hash)
            store.add_account(address, password_hash)
        except (ValueError, StoreError) as e:
            failed += 1
            print(f"{args.file}:{n}: {address or '?'}: {e}")
            continue
        ok += 1
        print(f"{args.file}:{n}: {address.strip().lower()}: added")
    print(f"{ok} added, {failed} failed")
    return 1 if failed else 0


# ------------------------------------------------------------------------------------------------ alias


def alias_add(args) -> int:
    store = open_store(args)
    for target in args.targets:
        a = _store_call(store.add_alias, args.address, target)
        print(f"added alias {a.address} -> {a.target}")
    return 0


def alias_list(args) -> int:
    for a in open_store(args).list_aliases(args.domain):
        print(f"{a.address}\t{a.target}")
    return 0


def alias_remove(args) -> int:
    n = _store_call(open_store(args).remove_alias, args.address, args.target)
    print(f"removed {n} alias entr{'y' if n == 1 else 'ies'}")
    return 0
