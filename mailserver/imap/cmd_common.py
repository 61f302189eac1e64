"""What every IMAP command handler shares: the session states, the errors a handler raises, what it returns.

A handler is ``async def handler(session, command) -> Ok | REPLIED | None``; :data:`mailserver.imap.session.COMMANDS`
maps each command class to its handler and the states it is allowed in. A handler raises :class:`No` or
:class:`Bad` (with an optional response code); :func:`mailserver.imap.session._reply_for` turns those, store errors
and anything unexpected into the tagged reply.
"""

from __future__ import annotations

from dataclasses import dataclass

# -- states -------------------------------------------------------------------------------------------------
NOT_AUTHENTICATED = 1
AUTHENTICATED = 2
SELECTED = 4
LOGOUT = 8
ANY = NOT_AUTHENTICATED | AUTHENTICATED | SELECTED
AUTH = AUTHENTICATED | SELECTED


class No(Exception):
    """Answer the command ``NO [code] text``."""

    status = "NO"

    def __init__(self, text: str, code: str | None = None):
        super().__init__(text)
        self.text = text
        self.code = code


class Bad(No):
    """Answer the command ``BAD [code] text``."""

    status = "BAD"


@dataclass
class Ok:
    """What a handler returns for the tagged OK (None means plain ``OK <NAME> completed``)."""

    text: str = ""
    code: str | None = None


#: A handler that wrote its tagged reply itself (STARTTLS, COMPRESS, LOGOUT) returns this.
REPLIED = object()
