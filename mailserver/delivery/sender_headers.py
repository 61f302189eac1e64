"""The check that an authenticated sender writes only addresses it owns into ``From:`` and ``Sender:``.

The envelope sender of authenticated submission is checked at MAIL FROM (``Router.sender_allowed``); without this
check the header could still say ``From: Bob <bob@...>`` (and ``Sender: bob``) with alice's envelope, which is what
a reader sees. RFC 6409 8.1 lets a submission server refuse such a message. The rights come from
``Router.right_among`` over ``Store.send_identities`` (the same data MAIL FROM is checked against):

* every ``Sender:`` address must be one the account may send as: its address, its aliases (a subaddress of either),
  or one it holds a ``send-as`` grant on (``storage/sendgrants.py``);
* every ``From:`` address must be one of those, or one it holds a ``send-on-behalf`` grant on. Such a message names
  its real sender (RFC 5322 3.6.2): its ``Sender:`` must be the account's own address or alias, and when it has
  none the check adds ``Sender: <the account's address>`` to every copy.

Anything else is refused at the end of DATA with ``550 5.7.1`` (for every recipient: the verdict is the message's).
"""

from __future__ import annotations

import email.utils
import re

from mailserver.delivery.stages import MessageInfo, Target, Verdict
from mailserver.mime.text import parse_addresses
from storage.sendgrants import OWN, SEND_AS, SEND_ON_BEHALF

#: The most of a message's start read to find its header. A header that does not end within it is refused: a
#: ``From:`` past it would go unchecked (and readers that take the whole header would show it).
HEADER_READ_MAX = 256 * 1024

#: A From or Sender field: the name, optional white space (RFC 5322 4.5.3 obs-optional, which readers accept and
#: mailserver.mime.parse reads as the field too), the colon.
_FIELD = re.compile(rb"(?:from|sender)[ \t]*:", re.I)
_HEADER_END = re.compile(rb"\r?\n\r?\n")


def header_end(head: bytes) -> int | None:
    """Where the header's fields end in ``head`` (before the line break ahead of the empty line, RFC 5322 2.1),
    or None when the empty line is not in ``head``."""
    if head.startswith((b"\r\n", b"\n")):
        return 0
    m = _HEADER_END.search(head)
    return m.start() if m else None


def header_senders(head: bytes) -> tuple[list[str], list[str]]:
    """The addresses of every From field and of every Sender field of a message's header (lower-cased, each list
    without repeats), read the ways readers read them: what ``email.utils.getaddresses`` makes of a field and what
    our own parser (the ENVELOPE and the webmail's From column) makes of it; a field that does not parse yields
    its garbage as an "address", which no account owns."""
    end = header_end(head)
    block = head if end is None else head[:end]
    froms: list[str] = []
    senders: list[str] = []
    for field in re.split(rb"\r?\n(?![ \t])", block):  # RFC 5322 2.2.3: a line starting with WSP continues
        m = _FIELD.match(field)
        if m is None:
            continue
        value = re.sub(rb"\r?\n", b"", field[m.end():]).decode("utf-8", "replace")
        found = [addr for _name, addr in email.utils.getaddresses([value]) if addr]
        found += [f"{mailbox}@{host}" if host else mailbox
                  for _name, _adl, mailbox, host in parse_addresses(value) if host is not None and mailbox]
        (senders if field[:1] in b"sS" else froms).extend(a.lower() for a in found)
    return list(dict.fromkeys(froms)), list(dict.fromkeys(senders))


def header_addresses(head: bytes) -> list[str]:
    """The addresses of every From and Sender field of a message's header (lower-cased), as :func:`header_senders`."""
    froms, senders = header_senders(head)
    return list(dict.fromkeys(froms + senders))


def sender_verdict(froms: list[str], senders: list[str], right, account: str) -> Verdict | None:
    """The verdict on a message whose From and Sender fields name ``froms`` and ``senders``, where ``right(address)``
    is the account's right on an address (``OWN``, ``SEND_AS``, ``SEND_ON_BEHALF`` or None) and ``account`` its
    own address: None to accept as it is, a tag adding ``Sender:``, or a refusal."""
    for addr in senders:
        if right(addr) not in (OWN, SEND_AS):
            return Verdict.refuse("5.7.1", f"not authorized to send as <{addr}> (Sender: header)")
    on_behalf = False
    for addr in froms:
        kind = right(addr)
        if kind is None:
            return Verdict.refuse("5.7.1", f"not authorized to send as <{addr}> (From: header)")
        on_behalf = on_behalf or kind == SEND_ON_BEHALF
    if not on_behalf:
        return None
    # RFC 5322 3.6.2: the Sender names the agent responsible for the transmission: the real account.
    for addr in senders:
        if right(addr) != OWN:
            return Verdict.refuse("5.7.1", f"sending on behalf of another address: Sender: must be your own "
                                           f"address, not <{addr}>")
    if senders:
        return None
    return Verdict.tag(add_headers=(("Sender", account),))


class SenderHeaderCheck:
    """A check stage (``delivery/stages.py``): refuse what an authenticated client sends under another's name."""

    name = "sender-headers"
    exact_mailbox = False

    def __init__(self, runner, router):
        self.runner = runner
        self.router = router
        self._last: tuple[str, Verdict | None] | None = None  # the message's verdict, for its other recipients

    @staticmethod
    def applies(message: MessageInfo) -> bool:
        """Only to what an authenticated client submitted."""
        client = message.client
        return client is not None and client.submission and client.account_id is not None

    async def check(self, message: MessageInfo, target: Target):
        client = message.client
        if self._last is not None and self._last[0] == message.queue_id:
            return self._last[1]
        head = await message.read(0, HEADER_READ_MAX)
        verdict = None
        if len(head) >= HEADER_READ_MAX and header_end(head) is None:
            verdict = Verdict.refuse("5.7.1", f"header longer than {HEADER_READ_MAX} octets: From:/Sender: not checked")
            self._last = (message.queue_id, verdict)
            return verdict
        identities = await self.runner.read(self.router.store.send_identities, client.account_id)
        froms, senders = header_senders(head)
        account = identities[0][0] if identities else client.authenticated
        verdict = sender_verdict(froms, senders, lambda a: self.router.right_among(identities, a), account)
        self._last = (message.queue_id, verdict)
        return verdict
