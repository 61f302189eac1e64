"""``mailserver dkim generate DOMAIN [--selector S] [--force]`` and ``mailserver dkim show DOMAIN``."""

from __future__ import annotations

from mailserver.cli.main import CliError


def dkim_generate(args) -> int:
    from mailserver.cli.admin import open_store
    from mailserver.delivery.dkim import DkimError, generate

    selector = args.selector or args.config_obj.queue.dkim_selector
    store = open_store(args)
    try:
        keys = generate(store, args.domain, selector, overwrite=args.force)
    except DkimError as e:
        raise CliError(str(e)) from None
    for k in keys:
        print(f"; {k.algorithm} key {k.selector} stored in the database (every node signs with it)")
    print("; publish these records (mailserver dns " + args.domain + " prints every record):")
    for k in keys:
        print(format_txt(k.record_name + ".", k.txt_record()))
    return 0


def dkim_show(args) -> int:
    from mailserver.cli.admin import open_store
    from mailserver.delivery.dkim import keys_for

    keys = keys_for(open_store(args), args.domain)
    if not keys:
        raise CliError(f"no DKIM key for {args.domain} (mailserver dkim generate {args.domain})")
    for k in keys:
        print(format_txt(k.record_name + ".", k.txt_record()))
    return 0


def format_txt(name: str, value: str, ttl: int = 3600) -> str:
    """A zone-file TXT record; long values split into 255-octet strings (RFC 1035 3.3.14, RFC 6376 3.6.2.2)."""
    chunks = [value[i:i + 255] for i in range(0, len(value), 255)] or [""]
    if len(chunks) == 1:
        return f'{name} {ttl} IN TXT "{chunks[0]}"'
    inner = "\n    ".join(f'"{c}"' for c in chunks)
    return f"{name} {ttl} IN TXT (\n    {inner} )"


def register(sub) -> None:
    d = sub.add_parser("dkim", help="DKIM signing keys").add_subparsers(dest="action", metavar="ACTION")
    d.required = True
    p = d.add_parser("generate", help="create RSA 2048 and Ed25519 keys for a domain")
    p.add_argument("domain")
    p.add_argument("--selector", default="", help="DNS selector (default: [queue] dkim_selector); the Ed25519 key "
                                                  "uses SELECTOR-ed25519")
    p.add_argument("--force", action="store_true", help="replace existing keys")
    p.set_defaults(func=dkim_generate)
    p = d.add_parser("show", help="print the TXT records of a domain's keys")
    p.add_argument("domain")
    p.set_defaults(func=dkim_show)
