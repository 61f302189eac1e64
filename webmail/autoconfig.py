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


def _in_default_namespace(parent: ET.Element | None, tag: str, namespace: str | None = None) -> ET.Element:
    """An element with a plain (unprefixed) name; ``namespace`` makes it the default namespace (``xmlns=``) there.

    Elements are never built as ``{namespace}tag``: ElementTree would then invent ``ns0:``/``ns1:`` prefixes, and
    clients that look elements up by node name (Thunderbird's Autodiscover reader wants ``Autodiscover.Response``)
    reject such a document although it is valid XML.  Children inherit the default namespace of their parent.
    """
    attrs = {"xmlns": namespace} if namespace else {}
    return ET.Element(tag, attrs) if parent is None else ET.SubElement(parent, tag, attrs)


def _xml_document(root: ET.Element) -> bytes:
    return b'<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="utf-8", xml_declaration=False)


def autodiscover_response(address: str, display_name: str, servers: list[ServerEntry]) -> bytes:
    """The POX answer: ``<Autodiscover xmlns="…/2006"><Response xmlns="…/2006a">…``, as in Microsoft's examples."""
    root = _in_default_namespace(None, "Autodiscover", AUTODISCOVER_NS)
    resp = _in_default_namespace(root, "Response", OUTLOOK_NS)
    user = _sub(resp, "User")
    _sub(user, "DisplayName", display_name or address)
    _sub(user, "AutoDiscoverSMTPAddress", address)
    acct = _sub(resp, "Account")
    _sub(acct, "AccountType", "email")
    _sub(acct, "Action", "settings")
    for s in servers:
        p = _sub(acct, "Protocol")
        _sub(p, "Type", s.protocol.upper())
        _sub(p, "Server", s.hostname)
        _sub(p, "Port", str(s.port))
        _sub(p, "DomainRequired", "off")
        _sub(p, "LoginName", address)
        _sub(p, "SPA", "off")
        # <SSL>on</SSL> with <Encryption>: SSL = implicit TLS, TLS = STARTTLS (Encryption overrides SSL).
        _sub(p, "SSL", "on")
        _sub(p, "Encryption", "SSL" if s.socket_type == "SSL" else "TLS")
        _sub(p, "AuthRequired", "on")
        if s.protocol == "smtp":
            _sub(p, "UsePOPAuth", "off")
            _sub(p, "SMTPLast", "off")
    return _xml_document(root)


def autodiscover_error(code: str, message: str) -> bytes:
    """The error answer; its ``Response`` and ``Error`` belong to the outer 2006 namespace."""
    root = _in_default_namespace(None, "Autodiscover", AUTODISCOVER_NS)
    resp = _sub(root, "Response")
    err = _sub(resp, "Error", Time="00:00:00", Id="1")
    _sub(err, "ErrorCode", code)
    _sub(err, "Message", message)
    _sub(err, "DebugData")
    return _xml_document(root)


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
