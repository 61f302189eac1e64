"""Configuration: one TOML file loaded once into frozen dataclasses.

Every key except ``hostname`` and ``data_dir`` has a default (the field default below, documented in
``etc/mailserver.example.toml``).  Validation happens before anything starts: an unknown key, a wrong type
or a bad value raises :class:`ConfigError` naming the file, the key and what is wrong.

The schema *is* the dataclasses: ``_build`` walks their fields and type hints, so adding a setting means
adding one annotated field with a default (and a line in the example file).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import re
import socket
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

ENV_CONFIG = "MAILSERVER_CONFIG"

LISTENER_NAMES = ("smtp", "submission", "submissions", "imap", "imaps", "pop3", "pop3s", "http", "https",
                  "managesieve", "metrics")
#: Listeners that speak TLS from the first byte (RFC 8314 implicit TLS).
IMPLICIT_TLS = frozenset({"submissions", "imaps", "pop3s", "https"})


#: Most worker processes ``[server] workers`` may ask for.
MAX_WORKERS = 256


class ConfigError(Exception):
    """A configuration problem; ``str()`` names the file, the key and what is wrong."""

    def __init__(self, source: str, key: str, problem: str):
        self.source, self.key, self.problem = source, key, problem
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{key}: {problem}" if key else f"{where}{problem}")


# --------------------------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class ListenAddress:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class ProxiedListenConfig:
    """``[listen_proxied]``: the protocol listeners of ``[listen]``, behind a TCP load balancer: connections there
    must begin with a PROXY header from an address in ``[proxy] trusted`` (``mailserver/proxied.py``)."""

    smtp: tuple[ListenAddress, ...] = ()
    submission: tuple[ListenAddress, ...] = ()
    submissions: tuple[ListenAddress, ...] = ()
    imap: tuple[ListenAddress, ...] = ()
    imaps: tuple[ListenAddress, ...] = ()
    pop3: tuple[ListenAddress, ...] = ()
    pop3s: tuple[ListenAddress, ...] = ()
    http: tuple[ListenAddress, ...] = ()
    https: tuple[ListenAddress, ...] = ()
    #: RFC 5804 (port 4190), with STARTTLS.
    managesieve: tuple[ListenAddress, ...] = ()

    def items(self) -> list[tuple[str, ListenAddress]]:
        return [(name, a) for name in LISTENER_NAMES if hasattr(self, name) for a in getattr(self, name)]


@dataclass(frozen=True)
class ListenConfig(ProxiedListenConfig):
    """``[listen]``: each listener a list of "ADDRESS:PORT"; missing or empty = off."""

    #: Prometheus /metrics and the load balancer's /healthz (plain HTTP; keep it on a private address).
    metrics: tuple[ListenAddress, ...] = ()


@dataclass(frozen=True)
class SniCertificate:
    cert: str
    key: str


@dataclass(frozen=True)
class TlsConfig:
    """``[tls]``: empty cert/key = a self-signed certificate generated in data_dir at first start."""

    cert: str = ""
    key: str = ""
    #: ``[tls.sni."example.org"]`` tables with ``cert`` and ``key``: per-domain certificates chosen by SNI.
    sni: dict[str, SniCertificate] = field(default_factory=dict)
    #: Lowest TLS version accepted by our listeners: "1.2" or "1.3".
    min_version: str = "1.2"


@dataclass(frozen=True)
class DnsConfig:
    """``[dns]``: empty nameservers = the system resolver."""

    nameservers: tuple[ListenAddress, ...] = ()
    timeout: float = 10.0


@dataclass(frozen=True)
class DomainConfig:
    """``[[domain]]``: a protected domain declared in the config (ensured in the database at start)."""

    name: str
    mode: str = "local"
    relay_to: str = ""


@dataclass(frozen=True)
class LimitsConfig:
    """``[limits]``: every named limit, in one place."""

    # SMTP (RFC 5321 4.5.3.1 minimums: command line 512, text line 1000, 100 recipients)
    smtp_max_command_line: int = 2048
    smtp_max_text_line: int = 65536
    message_size: int = 50 * 1024 * 1024
    smtp_max_recipients: int = 100
    smtp_max_errors: int = 20
    smtp_max_sessions_per_ip: int = 50
    smtp_max_received_headers: int = 50
    smtp_max_messages_per_session: int = 1000
    # RFC 5321 4.5.3.2 timeouts, seconds: the server waits smtp_timeout_command for a command and
    # smtp_timeout_data_block for each block of DATA; our outbound client waits as long for each reply (greeting,
    # MAIL, RCPT, ...), smtp_timeout_data_init for the 354, smtp_timeout_data_end for the reply after the final dot,
    # and smtp_timeout_connect for the TCP connection.
    smtp_timeout_command: float = 300.0
    smtp_timeout_data_block: float = 180.0
    smtp_timeout_data_init: float = 120.0
    smtp_timeout_data_end: float = 600.0
    smtp_timeout_connect: float = 30.0
    # IMAP
    imap_max_line: int = 65536
    imap_max_literal: int = 50 * 1024 * 1024
    imap_max_nesting: int = 32
    imap_max_sequence_ranges: int = 10000
    imap_max_commands_without_progress: int = 50
    imap_idle_timeout: float = 1800.0
    imap_max_sessions_per_ip: int = 50
    # POP3
    pop3_max_line: int = 512
    pop3_max_commands_without_progress: int = 50
    pop3_idle_timeout: float = 600.0
    pop3_max_sessions_per_ip: int = 20
    # ManageSieve (RFC 5804; a literal may be [sieve] max_script_size octets)
    managesieve_max_line: int = 8192
    managesieve_max_errors: int = 20
    managesieve_idle_timeout: float = 1800.0
    managesieve_max_sessions_per_ip: int = 20
    # HTTP
    http_max_body: int = 60 * 1024 * 1024
    http_max_connections_per_ip: int = 256
    http_header_timeout: float = 30.0
    # TLS: seconds a handshake may take (implicit TLS at connect, STARTTLS/STLS after the command)
    tls_handshake_timeout: float = 30.0
    # Every protocol: seconds unsent output may wait for a peer that does not read (over 64 KiB of it: reading
    # is paused meanwhile) before the connection is aborted (Postfix's smtpd_timeout is 300 s as well)
    output_stall_timeout: float = 300.0
    # PROXY protocol: seconds a [listen_proxied] connection has to send its whole header
    proxy_header_timeout: float = 10.0
    # Authentication
    auth_max_failures_per_ip: int = 10
    auth_max_failures_per_account: int = 10
    auth_failure_window: float = 600.0
    auth_max_delay: float = 15.0
    # Aliases
    alias_max_depth: int = 10
    alias_max_targets: int = 1000


@dataclass(frozen=True)
class SmtpConfig:
    """``[smtp]``: behaviour of the SMTP listeners and local delivery."""

    trusted_networks: tuple[str, ...] = ()
    subaddress_separator: str = "+"
    #: Reply to an over-quota recipient: false = 452 4.2.2 (temporary), true = 552 5.2.2.
    over_quota_permanent: bool = False
    #: Name the authenticated user in the Received header of submitted mail.
    received_show_auth_user: bool = False
    banner: str = ""
    #: Where mail for postmaster@<protected domain> goes when that domain has no such account or alias
    #: (RFC 5321 4.5.1 requires every domain to accept "postmaster"); "" = only where one exists.
    postmaster: str = ""


@dataclass(frozen=True)
class AuthConfig:
    """``[auth]``: the one authenticator for every protocol."""

    #: libpass scheme for new hashes and rehashes.
    default_scheme: str = "argon2"
    #: Seconds a successful verification is remembered (keyed by an HMAC, never the password); 0 = off.
    cache_seconds: float = 60.0
    #: Allow plaintext mechanisms (PLAIN, LOGIN, USER/PASS) without TLS from non-loopback clients.
    allow_plaintext_without_tls: bool = False


@dataclass(frozen=True)
class SmarthostConfig:
    host: str = ""
    port: int = 587
    #: "starttls" or "implicit" (RFC 8314); TLS to a smarthost is always verified.
    tls: str = "starttls"
    username: str = ""
    password: str = ""
    #: CA certificates (PEM) that the smarthost's certificate must chain to; "" = the system's trust store.
    ca_file: str = ""


@dataclass(frozen=True)
class QueueConfig:
    """``[queue]``: outbound delivery."""

    #: Deliver queued outbound mail from this process (false: only accept and queue, e.g. on a receive-only node).
    run: bool = True
    retry_first: float = 300.0
    retry_max: float = 4 * 3600.0
    give_up_after: float = 5 * 86400.0
    delay_warning_after: float = 4 * 3600.0
    #: Seconds a claim on queued recipients lasts unless renewed (every lease/3 while the node works on them): how
    #: soon another node sharing the database takes over the work of one that died.
    lease: float = 300.0
    max_connections: int = 50
    max_connections_per_domain: int = 5
    max_recipients_per_transaction: int = 100
    smarthost: SmarthostConfig = field(default_factory=SmarthostConfig)
    dkim_selector: str = "mail"


@dataclass(frozen=True)
class SenderAuthConfig:
    """``[senderauth]``: SPF, DKIM, DMARC, ARC and iprev on mail the ``smtp`` listener receives from outside
    (``mailserver/inbound/``); authenticated submission and trusted networks are not checked."""

    enabled: bool = True
    #: Seconds each check (SPF for HELO, SPF for MAIL FROM, DKIM, DMARC, ARC, iprev) may take, DNS included; the
    #: message's checks run one after the other, so the reply after DATA waits at most about four times this.
    timeout: float = 10.0
    #: DNS queries one check may make (SPF also stops at 10 DNS mechanisms and 2 void lookups, RFC 7208 4.6.4).
    max_queries: int = 50
    #: DNS answers the checks remember (for their TTL, negative ones too); 0 = ask every time.
    dns_cache: int = 10000
    #: Signed messages larger than this are not verified (dkim=neutral): DKIM needs the whole message in memory.
    dkim_max_size: int = 25 * 1024 * 1024
    #: What a DMARC failure does: "policy" (the sender's p=reject is refused with 550 5.7.1 at the end of DATA,
    #: p=quarantine is held in the quarantine), "quarantine" (a reject is quarantined too), "none" (header only).
    dmarc_action: str = "policy"
    #: dmarc_action per recipient domain (the domain the envelope recipient is in).
    dmarc_action_by_domain: dict[str, str] = field(default_factory=dict)
    #: ARC sealers (their d= domains) whose passing chain and recorded dmarc=pass let a failing forward through.
    arc_trusted_sealers: tuple[str, ...] = ()


DMARC_ACTIONS = ("policy", "quarantine", "none")


@dataclass(frozen=True)
class SrsConfig:
    """``[srs]``: the Sender Rewriting Scheme for mail we forward to other domains (``delivery/srs.py``)."""

    enabled: bool = False
    #: Our domain in rewritten senders (``SRS0=…@domain``; bounces to it come back here); "" = the first local
    #: ``[[domain]]``.
    domain: str = ""
    #: Secrets: the first signs, all are accepted (rotation).  The secret generated once and kept in the database
    #: (shared by every node) is always accepted too, and signs when this list is empty.
    secrets: tuple[str, ...] = ()
    #: Days a rewritten sender stays valid for bounces.
    max_age_days: int = 21


@dataclass(frozen=True)
class ArcConfig:
    """``[arc]``: ARC sets (RFC 8617) added to mail we forward to other domains (``delivery/forward.py``)."""

    seal: bool = True
    #: The sealing domain (its RSA key in ``data_dir/dkim``); "" = the forwarding address's domain, else the SRS
    #: domain.  No key: forwarded unsealed.
    domain: str = ""
    #: Messages larger than this are forwarded unsealed (sealing reads the whole message into memory).
    max_size: int = 25 * 1024 * 1024


@dataclass(frozen=True)
class GatewayDomainConfig:
    """``[gateway.domain."relay.example"]``: how recipients of one relay domain are verified at RCPT."""

    #: "none" (accept any local part), "list" (only ``recipients``) or "callout" (ask ``relay_to``).
    verify: str = "none"
    #: Valid addresses (or ``@domain`` for all) when verify = "list"; case-insensitive.
    recipients: tuple[str, ...] = ()


@dataclass(frozen=True)
class GatewayConfig:
    """``[gateway]``: recipient verification for relay domains (``delivery/callout.py``)."""

    domain: dict[str, GatewayDomainConfig] = field(default_factory=dict)
    #: Seconds a callout may take (connect to QUIT); past it, or on a 4xx, RCPT gets 451 4.4.3.
    callout_timeout: float = 30.0
    #: Seconds an answer of the relay host is remembered (in the store, shared by every node).
    positive_ttl: float = 86400.0
    negative_ttl: float = 3600.0


GATEWAY_VERIFY = ("none", "list", "callout")


@dataclass(frozen=True)
class ProxyConfig:
    """``[proxy]``: the load balancers and reverse proxies we believe about the client's address."""

    #: Networks ("127.0.0.1/32", "10.0.0.0/8", "::1") allowed to connect to ``[listen_proxied]`` addresses and to
    #: name the client in a PROXY header, and whose X-Forwarded-For / Forwarded the webmail honours.
    trusted: tuple[str, ...] = ()


@dataclass(frozen=True)
class MetricsConfig:
    """``[metrics]``: what ``[listen] metrics`` serves (``mailserver/metrics.py``)."""

    #: Seconds between measurements of the event loop's lag (how late a timer fires).
    reactor_lag_interval: float = 1.0
    #: Seconds /healthz waits for the database before it answers 503.
    health_timeout: float = 5.0


@dataclass(frozen=True)
class SpamThresholds:
    """``[antispam.domain."example.org"]`` / ``[antispam.account."alice@example.org"]``: the thresholds of one
    domain or account.  A key not given takes the next level's value (account -> domain -> ``[antispam]``)."""

    tag: float = -1.0
    junk: float = -1.0
    quarantine: float = -1.0
    refuse: float = -1.0


#: A score weight: the one kind of number in the configuration that may be negative (a DNSWL listing lowers it).
Score = typing.NewType("Score", float)


@dataclass(frozen=True)
class DnsListConfig:
    """One ``[[antispam.dnsbl]]``, ``[[antispam.dnswl]]`` or ``[[antispam.rhsbl]]`` zone (RFC 5782,
    ``mailserver/inbound/dnsbl.py``)."""

    zone: str
    #: The symbol a listing adds to the score card; "" = made from the zone ("DNSBL_ZEN_EXAMPLE_ORG").
    name: str = ""
    #: What a listing weighs (a DNSWL's weight is 0 or negative).
    weight: Score = 1.0
    #: Return code -> weight ("127.0.0.4" = 3.0); when given, only these codes are listings (others are logged).
    returncodes: dict[str, Score] = field(default_factory=dict)


@dataclass(frozen=True)
class GreylistConfig:
    """``[antispam.greylist]``: greylisting (RFC 6647) of mail the ``smtp`` listener takes from outside
    (``mailserver/inbound/greylist.py``); never for authenticated clients, trusted networks or DNSWL-listed ones."""

    enabled: bool = False
    #: When a new triplet is deferred (451 4.7.1): "rcpt" (at RCPT TO) or "data" (the whole message after DATA).
    stage: str = "rcpt"
    #: Seconds a new triplet is deferred; a retry after them (within ``retry_window``) passes.
    delay: float = 300.0
    #: Seconds after the first attempt within which a retry passes; later, the triplet starts again.
    retry_window: float = 86400.0
    #: Seconds a passed triplet is remembered after its last use (RFC 6647 4.4: at least a month).
    pass_lifetime: float = 36 * 86400.0
    #: Passed triplets after which a client network is no longer greylisted at all (0 = never).
    auto_whitelist: int = 0
    #: The client networks a triplet is keyed by (RFC 6647 4.2: senders retry from other addresses).
    ipv4_prefix: int = 24
    ipv6_prefix: int = 64


@dataclass(frozen=True)
class AntispamConfig:
    """``[antispam]``: the spam score and what it leads to (``mailserver/inbound/policy.py``).

    The thresholds are scores at or above which an action is taken (0 = that action is off): tag (``X-Spam: yes``),
    junk (deliver to Junk with ``$Junk``), quarantine (held, ``[quarantine]``), refuse (550 5.7.1 at the
    end of DATA)."""

    #: rspamd's scanner worker, e.g. "http://127.0.0.1:11333"; "" = no rspamd.
    rspamd: str = ""
    #: Seconds one rspamd check may take.
    timeout: float = 20.0
    #: rspamd unreachable, too slow or answering nonsense: "accept" (tagged ``X-Spam-Status: unchecked``) or
    #: "tempfail" (451 4.7.0: the sending server retries).
    on_error: str = "accept"
    #: Messages larger than this are not sent to rspamd (accepted, tagged unchecked).
    max_size: int = 20 * 1024 * 1024
    tag: float = 5.0
    junk: float = 6.0
    quarantine: float = 0.0
    refuse: float = 15.0
    #: Add ``X-Spam-Symbols`` (the named reasons of the score) to scored messages.
    symbols_header: bool = True
    #: The built-in classifier (``mailserver/inbound/classifier.py``): per-account Bayesian token statistics,
    #: trained by moving mail into / out of Junk and by ``$Junk``/``$NotJunk``; on with or without rspamd.
    bayes: bool = True
    #: The weight of BAYES_SPAM at probability 1 (scaled down linearly to 0 at probability 0.5).
    bayes_spam_weight: float = 7.0
    #: How much BAYES_HAM lowers the score at probability 0 (scaled the same way).
    bayes_ham_weight: float = 3.0
    #: Messages an account must have trained as spam and as ham before its classifier votes.
    bayes_min_spam: int = 20
    bayes_min_ham: int = 20
    #: Most tokens kept per account (past it the least useful are pruned).
    bayes_max_tokens: int = 200_000
    #: How much BAYES_KNOWN_SENDER lowers the score: mail from an address the account sent mail to or replied to.
    known_sender_weight: float = 3.0
    #: Count a sender as known only when SPF, DKIM or DMARC passed for its domain (a From: is easy to forge).
    known_sender_needs_auth: bool = True
    domain: dict[str, SpamThresholds] = field(default_factory=dict)
    account: dict[str, SpamThresholds] = field(default_factory=dict)
    #: DNS block lists of the client address, allow lists (negative weights; exempt from greylisting) and block
    #: lists of the envelope sender's domain (RHSBL), all asked in parallel once per client.
    dnsbl: tuple[DnsListConfig, ...] = ()
    dnswl: tuple[DnsListConfig, ...] = ()
    rhsbl: tuple[DnsListConfig, ...] = ()
    #: Seconds the DNS list lookups of one client may take together; a zone that has not answered is skipped.
    dnsbl_timeout: float = 5.0
    greylist: GreylistConfig = field(default_factory=GreylistConfig)


@dataclass(frozen=True)
class AntivirusConfig:
    """``[antivirus]``: clamd scans every received message (``mailserver/inbound/clamd.py``)."""

    #: clamd's address: "127.0.0.1:3310", "[::1]:3310" or a Unix socket path ("/run/clamav/clamd.ctl"); "" = off.
    clamd: str = ""
    #: Seconds one scan may take.
    timeout: float = 60.0
    #: A virus found: "refuse" (554 5.7.1 at the end of DATA) or "quarantine" (held: ``[quarantine]``).
    action: str = "refuse"
    #: clamd unreachable, too slow or answering nonsense: "tempfail" (451 4.7.0) or "accept" (tagged
    #: ``X-Virus-Status: unchecked``).
    on_error: str = "tempfail"
    #: Messages larger than this are not scanned (accepted, tagged unchecked); keep it at most clamd's
    #: StreamMaxLength (25 MiB by default).
    max_size: int = 25 * 1024 * 1024
    #: Also scan what IMAP APPEND, drafts, Sent copies and imports place into a mailbox.
    scan_append: bool = False


@dataclass(frozen=True)
class QuarantineDomain:
    """``[quarantine.domain."example.org"]``: one domain's retention and digest (-1 / "" = ``[quarantine]``'s)."""

    retention_days: float = -1.0
    #: "on", "off" or "" (the server's ``digest``): the default of the domain's accounts (each may change its own).
    digest: str = ""
    #: Hour of the day (UTC, 0..23) of the domain's digests; -1 = the server's ``digest_hour``.
    digest_hour: int = -1


@dataclass(frozen=True)
class QuarantineConfig:
    """``[quarantine]``: held copies (``storage/quarantine.py``; checks return ``Verdict.quarantine``)."""

    #: Days a held copy is kept before the periodic collector removes it.
    retention_days: float = 30.0
    #: Most held copies per account (0 = no cap); past it a copy is delivered to Junk with ``$Junk`` instead.
    max_per_account: int = 1000
    #: A daily digest mail per account with new held copies (each account may turn its own off or on).
    digest: bool = True
    #: Hour of the day (UTC, 0..23) the digests are sent (each account may choose its own).
    digest_hour: int = 8
    #: Seconds between two looks for due digests (by the worker holding the maintenance lease).
    digest_check_interval: float = 300.0
    #: The webmail's public base URL for the digest's links, e.g. "https://mail.example.org"; "" = no links.
    base_url: str = ""
    domain: dict[str, QuarantineDomain] = field(default_factory=dict)

    def domain_entry(self, domain: str) -> QuarantineDomain | None:
        d = domain.lower()
        for name, entry in self.domain.items():
            if name.lower() == d:
                return entry
        return None

    def digest_for(self, domain: str) -> tuple[bool, int]:
        """(digests on, hour) for the accounts of ``domain`` that chose nothing themselves."""
        entry = self.domain_entry(domain)
        on = self.digest if entry is None or not entry.digest else entry.digest == "on"
        hour = self.digest_hour if entry is None or entry.digest_hour < 0 else entry.digest_hour
        return on, hour

    def retention_for(self, address: str) -> float:
        """Seconds a copy held for ``address`` is kept."""
        d = address.rpartition("@")[2].lower()
        for name, entry in self.domain.items():
            if name.lower() == d and entry.retention_days >= 0:
                return entry.retention_days * 86400.0
        return self.retention_days * 86400.0


@dataclass(frozen=True)
class WebmailConfig:
    """``[webmail]``."""

    session_idle: float = 3600.0
    session_absolute: float = 7 * 86400.0
    page_size: int = 50
    max_upload: int = 25 * 1024 * 1024


@dataclass(frozen=True)
class LogConfig:
    """``[log]``: one line per event on stderr."""

    format: str = "text"  # "text" or "json"
    level: str = "info"


@dataclass(frozen=True)
class StoreConfig:
    """``[store]``: where message bodies live and how the database is pooled."""

    #: "files" (data_dir/blobs, fsynced before the metadata commits) or "database".
    blobs: str = "files"
    db_threads: int = 4
    #: Most deliveries committed in one transaction (group commit).
    max_batch: int = 256
    #: Seconds between removals of message bodies nothing references any more (expunged, delivered from the queue).
    gc_interval: float = 3600.0
    #: A body unreferenced for less than this is kept (protects a concurrent delivery of the same content).  The
    #: orphan sweep (bodies no row names) keeps them at least 10 minutes whatever this says
    #: (``storage.store.ORPHAN_MIN_AGE``): a delivery's body is named by no row until its commit.
    gc_grace: float = 3600.0
    #: data_dir is the same directory on every node sharing a PostgreSQL database (a shared file system).  Without
    #: it, ``blobs = "files"`` with PostgreSQL is refused at start: another node could not read the bodies.
    shared_data_dir: bool = False
    #: "optimized": flag changes and expunges commit without waiting for the disk flush (atomic; safe against a
    #: kill -9; an OS crash may lose the last ones), as Dovecot's default ``mail_fsync = optimized``; "always":
    #: those are flushed too.  Deliveries, APPEND and COPY/MOVE are flushed either way.
    fsync: str = "optimized"


@dataclass(frozen=True)
class SieveConfig:
    """``[sieve]``: the recipients' filters (mailserver/sieve/, the delivery stage mailserver/delivery/sieve_stage.py).

    Every limit is a Sieve limit of ``mailserver.sieve.Limits``; a run that passes one keeps the message in INBOX.
    """

    enabled: bool = True
    max_script_size: int = 1 << 20
    max_scripts: int = 32
    max_storage: int = 8 << 20
    max_actions: int = 32
    max_redirects: int = 4
    max_steps: int = 200_000
    max_include_depth: int = 10
    regex_timeout: float = 1.0
    vacation_min_period: int = 86400
    vacation_max_period: int = 0
    vacation_default_period: int = 7 * 86400
    #: A message that already carries this many of our redirect trace fields is not redirected again (a loop).
    max_redirect_hops: int = 8
    #: Seconds a compiled script stays cached before its version is checked again in the store.
    cache_check_interval: float = 2.0


@dataclass(frozen=True)
class ServerConfig:
    """``[server]``: the processes of ``mailserver serve`` (mailserver/supervisor.py)."""

    #: Worker processes, each a reactor on the listening sockets a supervisor opened once; 0 = one per CPU core,
    #: 1 = everything in one process (no supervisor).
    workers: int = 0
    #: true: the supervisor binds one ``SO_REUSEPORT`` socket per listener for each worker (the kernel spreads new
    #: connections over them by a hash of the addresses) instead of one socket that every worker accepts on.
    #: Linux only; see docs/internals.md "Worker processes".
    reuse_port: bool = False
    #: After binding the listeners (ports below 1024 need root), the supervisor and its workers run as this user
    #: (and ``group``, by default the user's own); "" = stay who we are.
    user: str = ""
    group: str = ""
    #: Seconds the cluster-wide jobs' lease (queue runner, blob collector: one process of the cluster runs them)
    #: lasts unless renewed (every lease/3): how soon another worker takes over from one that died.
    lease: float = 15.0
    #: This node's name in ``mailserver node list`` ("" = the machine's host name).
    node_name: str = ""
    #: Seconds between two heartbeats of each server process (its ``cluster_nodes`` row); a process whose row was
    #: not renewed for 3 heartbeats is listed as dead.
    heartbeat: float = 10.0

    def worker_count(self) -> int:
        """How many workers ``serve`` starts (``workers``, or the number of CPU cores for 0)."""
        if self.workers:
            return self.workers
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except (AttributeError, OSError):
            return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class Config:
    hostname: str
    data_dir: str
    database_url: str = ""
    server: ServerConfig = field(default_factory=ServerConfig)
    listen: ListenConfig = field(default_factory=ListenConfig)
    listen_proxied: ProxiedListenConfig = field(default_factory=ProxiedListenConfig)
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    tls: TlsConfig = field(default_factory=TlsConfig)
    dns: DnsConfig = field(default_factory=DnsConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    queue: QueueConfig = field(default_factory=QueueConfig)
    senderauth: SenderAuthConfig = field(default_factory=SenderAuthConfig)
    srs: SrsConfig = field(default_factory=SrsConfig)
    arc: ArcConfig = field(default_factory=ArcConfig)
    gateway: GatewayConfig = field(default_factory=GatewayConfig)
    webmail: WebmailConfig = field(default_factory=WebmailConfig)
    antispam: AntispamConfig = field(default_factory=AntispamConfig)
    antivirus: AntivirusConfig = field(default_factory=AntivirusConfig)
    quarantine: QuarantineConfig = field(default_factory=QuarantineConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    sieve: SieveConfig = field(default_factory=SieveConfig)
    log: LogConfig = field(default_factory=LogConfig)
    domain: tuple[DomainConfig, ...] = ()
    #: Create a demo domain and account at first start (the development config sets it).
    demo: bool = False
    #: Where the file came from (not a key).
    source: str = field(default="", compare=False)

    @property
    def db_url(self) -> str:
        """The SQLAlchemy URL: ``database_url`` or SQLite in data_dir."""
        if self.database_url:
            return self.database_url
        return "sqlite:///" + str(Path(self.data_dir) / "mailserver.sqlite3")

    def replace(self, **changes) -> "Config":
        return dataclasses.replace(self, **changes)


# --------------------------------------------------------------------------------------------- loading


def parse_address(text: str, default_port: int | None = None) -> ListenAddress:
    """Parse "ADDRESS:PORT", "[v6]:PORT" (or a bare address when ``default_port`` is given)."""
    text = text.strip()
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\](?::(\d+))?", text)
    if m:
        host, port = m.group(1), m.group(2)
    elif text.count(":") == 1:
        host, port = text.split(":")
    elif text.count(":") > 1 and default_port is not None:
        host, port = text, None  # bare IPv6
    else:
        host, port = text, None
    if not host:
        raise ValueError("empty address")
    if port is None:
        if default_port is None:
            raise ValueError("expected ADDRESS:PORT")
        port_n = default_port
    else:
        port_n = int(port)
    if not 0 <= port_n <= 65535:
        raise ValueError(f"port {port_n} out of range")
    if ":" in host:
        ipaddress.IPv6Address(host)
    return ListenAddress(host, port_n)


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp))


def _convert(value, tp, key: str, source: str):
    """Check ``value`` against the annotation ``tp`` and convert it."""
    origin = typing.get_origin(tp)
    if tp is ListenAddress:
        if not isinstance(value, str):
            raise ConfigError(source, key, "expected a string \"ADDRESS:PORT\"")
        try:
            return parse_address(value, 53 if key.startswith("dns.") else None)
        except ValueError as e:
            raise ConfigError(source, key, f"bad address {value!r}: {e}") from None
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(source, key, f"expected a table, got {type(value).__name__}")
        return _build(tp, value, key, source)
    if origin is tuple:
        item_tp = typing.get_args(tp)[0]
        if not isinstance(value, list):
            raise ConfigError(source, key, f"expected a list, got {type(value).__name__}")
        return tuple(_convert(v, item_tp, f"{key}[{i}]", source) for i, v in enumerate(value))
    if origin is dict:
        _, val_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(source, key, f"expected a table, got {type(value).__name__}")
        return {str(k): _convert(v, val_tp, f"{key}.{k}", source) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(source, key, f"expected true or false, got {type(value).__name__}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(source, key, f"expected an integer, got {type(value).__name__}")
        if value < 0:
            raise ConfigError(source, key, "must not be negative")
        return value
    if tp is Score:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(source, key, f"expected a number, got {value!r}")
        return float(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(source, key, f"expected a number, got {type(value).__name__}")
        if value < 0:
            raise ConfigError(source, key, "must not be negative")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(source, key, f"expected a string, got {type(value).__name__}")
        return value
    raise ConfigError(source, key, f"unsupported type {_type_name(tp)}")  # pragma: no cover


def _build(cls, table: dict, prefix: str, source: str):
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "source"}
    for k in table:
        if k not in fields:
            where = f"{prefix}.{k}" if prefix else k
            known = ", ".join(sorted(fields))
            raise ConfigError(source, where, f"unknown key (known keys here: {known})")
    kwargs = {}
    for name, f in fields.items():
        key = f"{prefix}.{name}" if prefix else name
        if name in table:
            kwargs[name] = _convert(table[name], hints[name], key, source)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(source, key, "required key is missing")
    return cls(**kwargs)


def _validate(cfg: Config, source: str) -> None:
    def err(key, problem):
        raise ConfigError(source, key, problem)

    if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*",
                        cfg.hostname):
        err("hostname", f"not a valid host name: {cfg.hostname!r}")
    if not cfg.data_dir:
        err("data_dir", "must not be empty")
    if cfg.database_url and not re.match(r"^(sqlite|postgresql(\+psycopg)?)://", cfg.database_url):
        err("database_url", "expected sqlite:///PATH or postgresql+psycopg://…")
    if bool(cfg.tls.cert) != bool(cfg.tls.key):
        err("tls.cert" if not cfg.tls.cert else "tls.key", "cert and key must be given together")
    if cfg.tls.min_version not in ("1.2", "1.3"):
        err("tls.min_version", "expected \"1.2\" or \"1.3\"")
    listeners = ([(f"listen.{name}", a) for name, a in cfg.listen.items()]
                 + [(f"listen_proxied.{name}", a) for name, a in cfg.listen_proxied.items()])
    for key, a in listeners:
        try:
            ipaddress.ip_address(a.host)
        except ValueError:
            if a.host not in ("localhost",):
                err(key, f"{a.host!r} is not an IP address")
    seen: dict[tuple[str, int], str] = {}
    for key, a in listeners:
        if a.port and (a.host, a.port) in seen:
            err(key, f"{a} is also used by {seen[(a.host, a.port)]}")
        seen[(a.host, a.port)] = key
    for i, net in enumerate(cfg.proxy.trusted):
        try:
            ipaddress.ip_network(net, strict=False)
        except ValueError:
            err(f"proxy.trusted[{i}]", f"not a network: {net!r}")
    if cfg.listen_proxied.items() and not cfg.proxy.trusted:
        err("proxy.trusted", "listen_proxied needs the load balancers' addresses (nothing else may connect there)")
    if cfg.server.workers < 0 or cfg.server.workers > MAX_WORKERS:
        err("server.workers", f"expected 0 (one per CPU core) to {MAX_WORKERS}")
    if cfg.store.fsync not in ("optimized", "always"):
        err("store.fsync", 'expected "optimized" or "always"')
    if cfg.server.reuse_port and not hasattr(socket, "SO_REUSEPORT"):
        err("server.reuse_port", "this system has no SO_REUSEPORT")
    if cfg.server.lease < 3:
        err("server.lease", "must be at least 3 seconds (renewed every lease/3)")
    if cfg.server.heartbeat < 1:
        err("server.heartbeat", "must be at least 1 second")
    if len(cfg.server.node_name) > 255:
        err("server.node_name", "at most 255 characters")
    if cfg.server.group and not cfg.server.user:
        err("server.group", "needs server.user")
    if cfg.queue.lease < 3:
        err("queue.lease", "must be at least 3 seconds (renewed every lease/3)")
    if cfg.limits.proxy_header_timeout <= 0:
        err("limits.proxy_header_timeout", "must be positive")
    for key in ("reactor_lag_interval", "health_timeout"):
        if getattr(cfg.metrics, key) <= 0:
            err(f"metrics.{key}", "must be positive")
    for i, net in enumerate(cfg.smtp.trusted_networks):
        try:
            ipaddress.ip_network(net, strict=False)
        except ValueError:
            err(f"smtp.trusted_networks[{i}]", f"not a network: {net!r}")
    if cfg.smtp.postmaster and not re.fullmatch(r"[^@\s]+@[^@\s]+", cfg.smtp.postmaster):
        err("smtp.postmaster", f"not an address: {cfg.smtp.postmaster!r}")
    if len(cfg.smtp.subaddress_separator) > 1:
        err("smtp.subaddress_separator", "must be one character or empty")
    if cfg.limits.smtp_max_command_line < 512:
        err("limits.smtp_max_command_line", "RFC 5321 4.5.3.1.4 requires at least 512")
    if cfg.limits.smtp_max_text_line < 1000:
        err("limits.smtp_max_text_line", "RFC 5321 4.5.3.1.6 requires at least 1000")
    if cfg.limits.smtp_max_recipients < 100:
        err("limits.smtp_max_recipients", "RFC 5321 4.5.3.1.8 requires at least 100")
    if cfg.limits.output_stall_timeout <= 0:
        err("limits.output_stall_timeout", "must be more than 0 seconds")
    if cfg.limits.pop3_idle_timeout < 600:
        err("limits.pop3_idle_timeout", "RFC 1939 requires at least 600 seconds")
    names = set()
    for i, d in enumerate(cfg.domain):
        if d.mode not in ("local", "relay"):
            err(f"domain[{i}].mode", "expected \"local\" or \"relay\"")
        if d.mode == "relay" and not d.relay_to:
            err(f"domain[{i}].relay_to", "required when mode = \"relay\"")
        if d.relay_to:
            try:
                parse_address(d.relay_to, 25)
            except ValueError as e:
                err(f"domain[{i}].relay_to", str(e))
        if d.name.lower() in names:
            err(f"domain[{i}].name", f"{d.name} is declared twice")
        names.add(d.name.lower())
    if cfg.log.format not in ("text", "json"):
        err("log.format", "expected \"text\" or \"json\"")
    if cfg.log.level not in ("debug", "info", "warn", "error"):
        err("log.level", "expected debug, info, warn or error")
    if cfg.store.blobs not in ("files", "database"):
        err("store.blobs", "expected \"files\" or \"database\"")
    if cfg.store.db_threads < 1:
        err("store.db_threads", "must be at least 1")
    if cfg.queue.smarthost.tls not in ("starttls", "implicit"):
        err("queue.smarthost.tls", "expected \"starttls\" or \"implicit\"")
    sa = cfg.senderauth
    if sa.dmarc_action not in DMARC_ACTIONS:
        err("senderauth.dmarc_action", "expected \"policy\", \"quarantine\" or \"none\"")
    for domain, action in sa.dmarc_action_by_domain.items():
        if action not in DMARC_ACTIONS:
            err(f"senderauth.dmarc_action_by_domain.{domain}", "expected \"policy\", \"quarantine\" or \"none\"")
    if not 0 < sa.timeout <= 120:
        err("senderauth.timeout", "expected more than 0 and at most 120 seconds")
    if sa.max_queries < 1:
        err("senderauth.max_queries", "must be at least 1")
    for i, sealer in enumerate(sa.arc_trusted_sealers):
        if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)+",
                            sealer):
            err(f"senderauth.arc_trusted_sealers[{i}]", f"not a domain name: {sealer!r}")
    _domain_re = r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)+"
    if cfg.srs.domain and not re.fullmatch(_domain_re, cfg.srs.domain):
        err("srs.domain", f"not a domain name: {cfg.srs.domain!r}")
    if cfg.srs.enabled and not cfg.srs.domain and not any(d.mode == "local" for d in cfg.domain):
        err("srs.domain", "required when no local [[domain]] is declared")
    for i, secret in enumerate(cfg.srs.secrets):
        if len(secret) < 16:
            err(f"srs.secrets[{i}]", "use at least 16 characters")
    if not 1 <= cfg.srs.max_age_days < 1000:
        err("srs.max_age_days", "expected 1 to 999 days (the timestamp wraps after 1024)")
    if cfg.arc.domain and not re.fullmatch(_domain_re, cfg.arc.domain):
        err("arc.domain", f"not a domain name: {cfg.arc.domain!r}")
    for name, g in cfg.gateway.domain.items():
        if g.verify not in GATEWAY_VERIFY:
            err(f"gateway.domain.{name}.verify", "expected \"none\", \"list\" or \"callout\"")
        for i, r in enumerate(g.recipients):
            if not re.fullmatch(r"[^@\s]*@[^@\s]+", r):
                err(f"gateway.domain.{name}.recipients[{i}]", f"not an address: {r!r}")
        if g.verify == "list" and not g.recipients:
            err(f"gateway.domain.{name}.recipients", "required when verify = \"list\"")
    if not 0 < cfg.gateway.callout_timeout <= 300:
        err("gateway.callout_timeout", "expected more than 0 and at most 300 seconds")
    if cfg.antispam.rspamd and not re.fullmatch(r"https?://[^/\s]+(/[^\s]*)?", cfg.antispam.rspamd):
        err("antispam.rspamd", "expected a URL \"http://HOST:PORT\"")
    for key in ("bayes_min_spam", "bayes_min_ham"):
        if getattr(cfg.antispam, key) < 0:
            err(f"antispam.{key}", "expected 0 or more")
    if cfg.antispam.bayes_max_tokens < 1000:
        err("antispam.bayes_max_tokens", "expected at least 1000")
    if cfg.antispam.on_error not in ("accept", "tempfail"):
        err("antispam.on_error", "expected \"accept\" or \"tempfail\"")
    if cfg.antivirus.on_error not in ("accept", "tempfail"):
        err("antivirus.on_error", "expected \"accept\" or \"tempfail\"")
    if not cfg.quarantine.retention_days > 0:
        err("quarantine.retention_days", "expected a number of days above 0")
    if cfg.quarantine.max_per_account < 0:
        err("quarantine.max_per_account", "expected 0 (no cap) or more")
    if cfg.quarantine.digest_hour > 23:
        err("quarantine.digest_hour", "expected an hour 0 to 23")
    if not cfg.quarantine.digest_check_interval > 0:
        err("quarantine.digest_check_interval", "expected seconds above 0")
    if cfg.quarantine.base_url and not re.match(r"^https?://[^/?#\s]+/?$", cfg.quarantine.base_url):
        err("quarantine.base_url", "expected \"https://host\" (or http://host:port), no path")
    for name, entry in cfg.quarantine.domain.items():
        if entry.digest not in ("", "on", "off"):
            err(f"quarantine.domain.{name}.digest", "expected \"on\" or \"off\"")
        if entry.digest_hour > 23:
            err(f"quarantine.domain.{name}.digest_hour", "expected an hour 0 to 23")
    if cfg.antivirus.action not in ("refuse", "quarantine"):
        err("antivirus.action", "expected \"refuse\" or \"quarantine\"")
    if cfg.antivirus.clamd and not cfg.antivirus.clamd.startswith("/"):
        try:
            parse_address(cfg.antivirus.clamd)
        except ValueError as e:
            err("antivirus.clamd", f"expected \"HOST:PORT\" or a socket path: {e}")
    _validate_dns_lists(cfg.antispam, err)
    for key, value in (("antispam.timeout", cfg.antispam.timeout), ("antivirus.timeout", cfg.antivirus.timeout),
                       ("antispam.dnsbl_timeout", cfg.antispam.dnsbl_timeout)):
        if value <= 0:
            err(key, "must be positive")
    if cfg.auth.default_scheme not in ("argon2", "bcrypt", "sha512_crypt"):
        err("auth.default_scheme", "expected argon2, bcrypt or sha512_crypt")


_ZONE_RE = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9])?(\.[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9])?)+\.?")


def _validate_dns_lists(sp: AntispamConfig, err) -> None:
    for kind in ("dnsbl", "dnswl", "rhsbl"):
        for i, entry in enumerate(getattr(sp, kind)):
            key = f"antispam.{kind}[{i}]"
            if not _ZONE_RE.fullmatch(entry.zone) or len(entry.zone) > 200:
                err(f"{key}.zone", f"not a DNS zone name: {entry.zone!r}")
            if entry.name and not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", entry.name):
                err(f"{key}.name", "expected 1 to 64 letters, digits, '_', '.' or '-'")
            weights = [entry.weight, *entry.returncodes.values()]
            if kind == "dnswl" and any(w > 0 for w in weights):
                err(f"{key}.weight", "a DNSWL listing weighs 0 or less")
            for code in entry.returncodes:
                try:
                    ok = ipaddress.IPv4Address(code) in ipaddress.IPv4Network("127.0.0.0/8")
                except ValueError:
                    ok = False
                if not ok or code.startswith("127.255.255."):
                    err(f"{key}.returncodes.{code}", "expected a listing code 127.0.0.0 to 127.255.254.255")
    g = sp.greylist
    if g.stage not in ("rcpt", "data"):
        err("antispam.greylist.stage", "expected \"rcpt\" or \"data\"")
    if not 0 < g.delay < g.retry_window:
        err("antispam.greylist.delay", "expected more than 0 and less than retry_window")
    if g.pass_lifetime < g.retry_window:
        err("antispam.greylist.pass_lifetime", "expected at least retry_window")
    if not 8 <= g.ipv4_prefix <= 32:
        err("antispam.greylist.ipv4_prefix", "expected 8 to 32")
    if not 16 <= g.ipv6_prefix <= 128:
        err("antispam.greylist.ipv6_prefix", "expected 16 to 128")


def load_dict(table: dict, source: str = "", base_dir: Path | None = None) -> Config:
    """Build and validate a Config from an already-parsed TOML table."""
    cfg = _build(Config, table, "", source)
    if base_dir is not None and not os.path.isabs(cfg.data_dir):
        cfg = dataclasses.replace(cfg, data_dir=str((base_dir / cfg.data_dir).resolve()))
    cfg = dataclasses.replace(cfg, source=source)
    _validate(cfg, source)
    return cfg


def load(path: str | os.PathLike | None = None) -> Config:
    """Load the config named by ``path`` or ``$MAILSERVER_CONFIG``.

    A relative ``data_dir`` is taken relative to the config file's folder.
    """
    if path is None:
        path = os.environ.get(ENV_CONFIG)
    if not path:
        raise ConfigError("", "", f"no configuration file: pass --config PATH or set {ENV_CONFIG}")
    p = Path(path)
    source = str(p)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError(source, "", "file not found") from None
    except OSError as e:
        raise ConfigError(source, "", f"cannot read: {e.strerror}") from None
    try:
        table = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(source, "", "not UTF-8") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(source, "", f"TOML syntax error: {e}") from None
    return load_dict(table, source, base_dir=p.resolve().parent)


# Keep linters quiet about names used only in annotations.
_ = types
