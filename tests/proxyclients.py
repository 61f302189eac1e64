"""Real stdlib clients whose connection begins with a PROXY header (what a load balancer would send first)."""

from __future__ import annotations

import imaplib
import poplib
import smtplib
import socket
import ssl


def proxied_socket(port: int, header: bytes, *, source: str = "127.0.0.1", timeout: float = 30.0) -> socket.socket:
    """A TCP connection to 127.0.0.1:``port`` from ``source`` that has sent ``header``."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0))
    sock.sendall(header)
    return sock


def client_tls() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the test server's self-signed certificate
    return ctx


class SMTP(smtplib.SMTP):
    def __init__(self, port: int, header: bytes, **kwargs):
        self._proxy_header = header
        super().__init__("127.0.0.1", port, **kwargs)

    def _get_socket(self, host, port, timeout):
        return proxied_socket(port, self._proxy_header, timeout=timeout or 30.0)


class SMTP_SSL(smtplib.SMTP_SSL):
    def __init__(self, port: int, header: bytes, **kwargs):
        self._proxy_header = header
        super().__init__("127.0.0.1", port, context=client_tls(), **kwargs)

    def _get_socket(self, host, port, timeout):
        sock = proxied_socket(port, self._proxy_header, timeout=timeout or 30.0)
        return self.context.wrap_socket(sock, server_hostname=None)


class IMAP4(imaplib.IMAP4):
    def __init__(self, port: int, header: bytes):
        self._proxy_header = header
        super().__init__("127.0.0.1", port, timeout=30)

    def _create_socket(self, timeout):
        return proxied_socket(self.port, self._proxy_header, timeout=timeout or 30.0)


class IMAP4_SSL(imaplib.IMAP4_SSL):
    def __init__(self, port: int, header: bytes):
        self._proxy_header = header
        super().__init__("127.0.0.1", port, ssl_context=client_tls(), timeout=30)

    def _create_socket(self, timeout):
        sock = proxied_socket(self.port, self._proxy_header, timeout=timeout or 30.0)
        return self.ssl_context.wrap_socket(sock, server_hostname=None)


class POP3(poplib.POP3):
    def __init__(self, port: int, header: bytes):
        self._proxy_header = header
        super().__init__("127.0.0.1", port, timeout=30)

    def _create_socket(self, timeout):
        return proxied_socket(self.port, self._proxy_header, timeout=timeout or 30.0)


class POP3_SSL(poplib.POP3_SSL):
    def __init__(self, port: int, header: bytes):
        self._proxy_header = header
        super().__init__("127.0.0.1", port, context=client_tls(), timeout=30)

    def _create_socket(self, timeout):
        sock = proxied_socket(self.port, self._proxy_header, timeout=timeout or 30.0)
        return self.context.wrap_socket(sock, server_hostname=None)
