"""``mailserver dns DOMAIN [--ip ADDRESS …]``: the records to publish for a domain, ready to paste into a zone file.

MX, SPF (RFC 7208), the DKIM key records (RFC 6376, RFC 8463), DMARC (RFC 7489), the client-setup SRV records
(RFC 6186 and RFC 8314 5.1, ManageSieve's ``_sieve._tcp`` of RFC 5804 1.8; "." target = service not offered), the autoconfig/autodiscover names the webmail answers,
and the address and reverse-DNS (PTR) records of the mail host: receivers check that the sending address's PTR names
the host and that the name resolves back (forward-confirmed reverse DNS).
"""

from __future__ import annotations

import ipaddress

from mailserver.cli.dkim import format_txt
from mailserver.cli.main import CliError

#: (SRV owner label, listener name, standard port) in the order RFC 8314 5.1 prefers (implicit TLS first).
SRV_SERVICES = (
    ("_submissions._tcp", "submissions", 465),
    ("_submission._tcp", "submission", 587),
    ("_imaps._tcp", "imaps", 993),
    ("_imap._tcp", "imap", 143),
    ("_pop3s._tcp", "pop3s", 995),
    ("_pop3._tcp", "pop3", 110),
    ("_sieve._tcp", "managesieve", 4190),  # RFC 5804 1.8
)


def records(config, domain: str, ips: list[str], ttl: int = 3600, dkim_keys=()) -> list[str]:
    """The zone lines for ``domain``; ``dkim_keys`` are its DKIM keys (``delivery.dkim.keys_for``)."""
    domain = domain.strip().lower().rstrip(".")
    host = config.hostname.rstrip(".")
    d, h = domain + ".", host + "."
    out = [f"; DNS records for {domain} (mail host {host})", "", "; where mail for the domain goes",
           f"{d} {ttl} IN MX 10 {h}", "",
           "; who may send for it (RFC 7208): the MX host; reject the rest",
           format_txt(d, "v=spf1 mx -all", ttl), ""]
    keys = list(dkim_keys)
    if keys:
        out.append("; DKIM public keys (RFC 6376; RFC 8463 for ed25519)")
        out.extend(format_txt(k.record_name + ".", k.txt_record(), ttl) for k in keys)
    else:
        out.append(f"; no DKIM key yet: run `mailserver dkim generate {domain}` and run this command again")
    out += ["", "; DMARC policy (RFC 7489): start with p=none or quarantine, reports to postmaster",
            format_txt(f"_dmarc.{d}", f"v=DMARC1; p=quarantine; adkim=s; aspf=s; rua=mailto:postmaster@{domain}",
                       ttl), "",
            "; client setup (RFC 6186, RFC 8314 5.1; _sieve: RFC 5804); target \".\" = not offered"]
    for label, listener, port in SRV_SERVICES:
        if getattr(config.listen, listener):
            out.append(f"{label}.{d} {ttl} IN SRV 0 1 {port} {h}")
        else:
            out.append(f"{label}.{d} {ttl} IN SRV 0 0 0 .")
    out += ["", "; automatic account setup (Thunderbird autoconfig, Outlook autodiscover) served by the webmail",
            f"autoconfig.{d} {ttl} IN CNAME {h}",
            f"autodiscover.{d} {ttl} IN CNAME {h}",
            f"_autodiscover._tcp.{d} {ttl} IN SRV 0 1 443 {h}", "",
            "; the mail host's addresses, and their reverse DNS (set the PTR at your provider)"]
    if ips:
        for ip in ips:
            a = ipaddress.ip_address(ip)
            out.append(f"{h} {ttl} IN {'AAAA' if a.version == 6 else 'A'} {a}")
        for ip in ips:
            out.append(f"{ipaddress.ip_address(ip).reverse_pointer}. {ttl} IN PTR {h}")
    else:
        out.append(f"; give the public sending addresses with --ip to print the A/AAAA and PTR records; each "
                   f"address's PTR must name {host}")
    return out


def dns_command(args) -> int:
    for ip in args.ip:
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise CliError(f"not an IP address: {ip!r}") from None
    from mailserver.cli.admin import open_store
    from mailserver.delivery.dkim import keys_for

    keys = keys_for(open_store(args), args.domain)
    print("\n".join(records(args.config_obj, args.domain, args.ip, dkim_keys=keys)))
    return 0


def register(sub) -> None:
    p = sub.add_parser("dns", help="print the DNS records to publish for a domain (zone-file format)")
    p.add_argument("domain")
    p.add_argument("--ip", action="append", default=[], metavar="ADDRESS",
                   help="a public address the server sends from (repeatable): prints A/AAAA and PTR")
    p.set_defaults(func=dns_command)
