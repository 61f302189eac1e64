"""The check that an authenticated sender writes only addresses it owns into ``From:`` and ``Sender:``.

The envelope sender of authenticated submission is checked at MAIL FROM (``Router.sender_allowed``); without this
check the header could still say ``From: Bob <bob@...>`` (and ``Sender: bob``) with alice's envelope, which is what
a reader sees. RFC 6409 8.1 lets a submission server refuse such a message. Every address of every ``From:`` and
``Sender:`` field must be one the account may send as (its address, its aliases, a subaddress of either; send-as
grants of shared mailboxes come in a later issue, through ``Router.sender_allowed``); otherwise the message is
refused at the end of DATA with ``550 5.7.1`` (for every recipient: the verdict is the message's).
"""

from __future__ import annotations

import email.parser
import email.policy
import email.utils

from mailserver.delivery.stages import MessageInfo, Target, Verdict

#: The most of a message's start read to find its header (a header longer than this is cut off).
HEADER_READ_MAX = 256 * 1024


def header_addresses(head: bytes) -> list[str]:
    """The addresses of every From and Sender field of a message's header (lower-cased); a field that does not
    parse yields what getaddresses makes of it (an address that cannot be owned if it is garbage)."""
    end = head.find(b"\r\n\r\n")
    head = head if end < 0 else head[: end + 4]
    msg = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(head)
    values = [str(v) for name in ("From", "Sender") for v in (msg.get_all(name) or [])]
    return [addr.lower() for _name, addr in email.utils.getaddresses(values) if addr]


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
        addresses = header_addresses(head)
        verdict = None
        for addr in addresses:
            if not await self.runner.read(self.router.sender_allowed, client.account_id, addr):
                verdict = Verdict.refuse("5.7.1", f"not authorized to send as <{addr}> (From:/Sender: header)")
                break
        self._last = (message.queue_id, verdict)
        return verdict
