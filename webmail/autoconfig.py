"""Client auto-configuration documents, built from the listeners actually configured (no I/O, no Twisted).

* Mozilla autoconfig ``clientConfig`` version 1.1 (Thunderbird; also used by many other clients).
* Outlook Autodiscover POX: request schema ``…/outlook/requestschema/2006``, response schema
  ``…/outlook/responseschema/2006a`` with one ``<Protocol>`` per IMAP, POP3 and SMTP server.
* An Apple configuration profile (``com.apple.mail.managed`` payload).

Implicit TLS (RFC 8314) servers are listed before STARTTLS ones, which is the order RFC 8314 5.1 recommends.
"""

from __future__ import annotations

import plistlib
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass

AUTODISCOVER_NS = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
OUTLOOK_NS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
REQUEST_NS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"
#: Largest Autodiscover request body accepted.
MAX_AUTODISCOVER_REQUEST = 16 * 1024

#: listener name -> (protocol, socket type); port 25 (MTA relay) is not for clients.
LISTENER_KINDS = {
    "imaps": ("imap", "SSL"),
    "imap": ("imap", "STARTTLS"),
    "pop3s": ("pop3", "SSL"),
    "pop3": ("pop3", "STARTTLS"),
    "submissions": ("smtp", "SSL"),
    "submission": ("smtp", "STARTTLS"),
}


@dataclass(frozen=True)
class ServerEntry:
    protocol: str  # "imap" | "pop3" | "smtp"
    hostname: str
    port: int
    socket_type: str  # "SSL" (implicit TLS) | "STARTTLS"


class AutoconfigError(ValueError):
    """A malformed request (answered 400)."""


def entries(hostname: str, ports: dict[str, list[int]]) -> list[ServerEntry]:
    """One entry per configured client listener port (``ports``: listener name -> ports)."""
    out: list[ServerEntry] = []
    for name in ("imaps", "imap", "pop3s", "pop3", "submissions", "submission"):
        proto, sock = LISTENER_KINDS[name]
        for port in dict.fromkeys(ports.get(name, ())):
            out.append(ServerEntry(proto, hostname, port, sock))
    return out


def split_address(address: str) -> tuple[str, str]:
    address = address.strip()
    if not address or len(address) > 320 or address.count("@") != 1 or any(c.isspace() or c in "<>\"'&"
                                                                             for c in address):
        raise AutoconfigError("not an email address")
    local, domain = address.rsplit("@", 1)
    if not local or not domain:
        raise AutoconfigError("not an email address")
    return local, domain.lower().rstrip(".")


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs) -> ET.Element:
    el = ET.SubElement(parent, tag, attrs)
    if text is not None:
        el.text = text
    return el


def mozilla_autoconfig(domain: str, servers: list[ServerEntry]) -> bytes:
    root = ET.Element("clientConfig", {"version": "1.1"})
    prov = _sub(root, "emailProvider", id=domain)
    _sub(prov, "domain", domain)
    _sub(prov, "displayName", f"{domain} mail")
    _sub(prov, "displayShortName", domain)
    for s in servers:
        tag = "outgoingServer" if s.protocol == "smtp" else "incomingServer"
        el = _sub(prov, tag, type=s.protocol)
        _sub(el, "hostname", s.hostname)
        _sub(el, "port", str(s.port))
        _sub(el, "socketType", s.socket_type)
        _sub(el, "authentication", "password-cleartext")
        _sub(el, "username", "%EMAILADDRESS%")
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="utf-8", xml_declaration=False)


def parse_autodiscover_request(body: bytes) -> str:
    """The ``EMailAddress`` of a POX request.  Refuses DTDs (no entity expansion) and oversized bodies."""
    if len(body) > MAX_AUTODISCOVER_REQUEST:
        raise AutoconfigError("request too large")
    if b"<!" in body:  # DOCTYPE / ENTITY declarations: never expanded, simply refused
        raise AutoconfigError("DTDs are not accepted")
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        raise AutoconfigError("not XML") from None
    for el in root.iter():
        if el.tag.rsplit("}", 1)[-1] == "EMailAddress" and el.text:
            return el.text.strip()
    raise AutoconfigError("no EMailAddress")


def autodiscover_response(address: str, display_name: str, servers: list[ServerEntry]) -> bytes:
    ET.register_namespace("", AUTODISCOVER_NS)
    root = ET.Element(f"{{{AUTODISCOVER_NS}}}Autodiscover")
    resp = ET.SubElement(root, f"{{{OUTLOOK_NS}}}Response")

    def sub(parent, tag, text=None):
        el = ET.SubElement(parent, f"{{{OUTLOOK_NS}}}{tag}")
        if text is not None:
            el.text = text
        return el

    user = sub(resp, "User")
    sub(user, "DisplayName", display_name or address)
    sub(user, "AutoDiscoverSMTPAddress", address)
    acct = sub(resp, "Account")
    sub(acct, "AccountType", "email")
    sub(acct, "Action", "settings")
    for s in servers:
        p = sub(acct, "Protocol")
        sub(p, "Type", s.protocol.upper())
        sub(p, "Server", s.hostname)
        sub(p, "Port", str(s.port))
        sub(p, "DomainRequired", "off")
        sub(p, "LoginName", address)
        sub(p, "SPA", "off")
        # <SSL>on</SSL> with <Encryption>: SSL = implicit TLS, TLS = STARTTLS (Encryption overrides SSL).
        sub(p, "SSL", "on")
        sub(p, "Encryption", "SSL" if s.socket_type == "SSL" else "TLS")
        sub(p, "AuthRequired", "on")
        if s.protocol == "smtp":
            sub(p, "UsePOPAuth", "off")
            sub(p, "SMTPLast", "off")
    return b'<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="utf-8", xml_declaration=False)


def autodiscover_error(code: str, message: str) -> bytes:
    ET.register_namespace("", AUTODISCOVER_NS)
    root = ET.Element(f"{{{AUTODISCOVER_NS}}}Autodiscover")
    resp = ET.SubElement(root, f"{{{AUTODISCOVER_NS}}}Response")
    err = ET.SubElement(resp, f"{{{AUTODISCOVER_NS}}}Error", {"Time": "00:00:00", "Id": "1"})
    ET.SubElement(err, f"{{{AUTODISCOVER_NS}}}ErrorCode").text = code
    ET.SubElement(err, f"{{{AUTODISCOVER_NS}}}Message").text = message
    ET.SubElement(err, f"{{{AUTODISCOVER_NS}}}DebugData")
    return b'<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="utf-8", xml_declaration=False)


def mobileconfig(address: str, display_name: str, servers: list[ServerEntry], hostname: str) -> bytes:
    """An unsigned Apple configuration profile with one mail account (IMAP preferred over POP3)."""
    incoming = next((s for s in servers if s.protocol == "imap"), None) or \
        next((s for s in servers if s.protocol == "pop3"), None)
    outgoing = next((s for s in servers if s.protocol == "smtp"), None)
    if incoming is None or outgoing is None:
        raise AutoconfigError("no incoming or outgoing server is configured")
    ident = ".".join(reversed(hostname.split(".")))
    payload = {
        "PayloadType": "com.apple.mail.managed",
        "PayloadVersion": 1,
        "PayloadIdentifier": f"{ident}.mail.{uuid.uuid5(uuid.NAMESPACE_DNS, address)}",
        "PayloadUUID": str(uuid.uuid5(uuid.NAMESPACE_URL, "mail:" + address)).upper(),
        "PayloadDisplayName": address,
        "EmailAccountDescription": address,
        "EmailAccountName": display_name or address,
        "EmailAccountType": "EmailTypeIMAP" if incoming.protocol == "imap" else "EmailTypePOP",
        "EmailAddress": address,
        "IncomingMailServerAuthentication": "EmailAuthPassword",
        "IncomingMailServerHostName": incoming.hostname,
        "IncomingMailServerPortNumber": incoming.port,
        "IncomingMailServerUseSSL": True,
        "IncomingMailServerUsername": address,
        "OutgoingMailServerAuthentication": "EmailAuthPassword",
        "OutgoingMailServerHostName": outgoing.hostname,
        "OutgoingMailServerPortNumber": outgoing.port,
        "OutgoingMailServerUseSSL": True,
        "OutgoingMailServerUsername": address,
        "OutgoingPasswordSameAsIncomingPassword": True,
        "SMIMEEnabled": False,
    }
    profile = {
        "PayloadType": "Configuration",
        "PayloadVersion": 1,
        "PayloadIdentifier": f"{ident}.profile.{uuid.uuid5(uuid.NAMESPACE_DNS, address)}",
        "PayloadUUID": str(uuid.uuid5(uuid.NAMESPACE_URL, "profile:" + address)).upper(),
        "PayloadDisplayName": f"Mail: {address}",
        "PayloadDescription": f"Sets up {address} on {hostname}",
        "PayloadOrganization": hostname,
        "PayloadContent": [payload],
    }
    return plistlib.dumps(profile, fmt=plistlib.FMT_XML)
