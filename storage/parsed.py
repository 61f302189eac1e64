"""The parsed-message schema, spelled once: what delivery keeps about a message from its one MIME parse.

Every message is parsed once when it is taken in (``mailserver.mime.parse_message``); these columns of the
``messages`` table hold what IMAP (ENVELOPE, BODYSTRUCTURE, SEARCH, SORT, THREAD) and the webmail (lists,
conversations, previews) need, so nothing re-parses a stored message to answer them.

:data:`PARSED_FIELDS` is the one list.  Derived from it: :data:`PARSED_COLUMNS`, the ORM columns of
``storage.models.Message`` and :func:`column_values` (what a delivery inserts).  Spelled out for readers and checked
against it by tests/test_store_schema.py: ``storage.records.MessageInfo``, ``mailserver.mime.ParsedMessage`` (which
holds ENVELOPE and BODYSTRUCTURE decoded and adds ``size``) and the migrated database.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping


@dataclass(frozen=True)
class ParsedField:
    name: str
    #: Python type of the stored value (str, int, float or bool); the SQL type follows from it.
    type: type
    doc: str

    @property
    def default(self) -> Any:
        return self.type()


PARSED_FIELDS: tuple[ParsedField, ...] = (
    ParsedField("envelope", str, "IMAP ENVELOPE (RFC 9051 7.5.2) as JSON"),
    ParsedField("bodystructure", str, "BODYSTRUCTURE tree with each part's byte offsets, as JSON"),
    ParsedField("header_size", int, "bytes of the top-level header including the blank line"),
    ParsedField("subject", str, "Subject, decoded (RFC 2047)"),
    ParsedField("from_addr", str, "first From mailbox as displayed"),
    ParsedField("to_addr", str, "To mailboxes as displayed, comma separated"),
    ParsedField("cc_addr", str, "Cc mailboxes as displayed, comma separated"),
    ParsedField("date_sent", float, "Date field as UNIX seconds; 0 when missing or unreadable"),
    ParsedField("message_id", str, "Message-ID (one msg-id, with angle brackets)"),
    ParsedField("in_reply_to", str, "In-Reply-To msg-ids, space separated"),
    ParsedField("references", str, "References msg-ids, space separated (RFC 5322 3.6.4)"),
    ParsedField("preview", str, "start of the first text part (RFC 8970 PREVIEW)"),
    ParsedField("has_attachment", bool, "a part is an attachment (webmail's paper clip)"),
)

#: Names of the parsed columns, in table order.
PARSED_COLUMNS: tuple[str, ...] = tuple(f.name for f in PARSED_FIELDS)

_STR = tuple(f.name for f in PARSED_FIELDS if f.type is str)
_CONVERT = tuple((f.name, f.type) for f in PARSED_FIELDS if f.type is not str)


def column_values(parsed: Mapping[str, Any]) -> dict[str, Any]:
    """The parsed columns' values for one ``messages`` row from ``ParsedMessage.to_json()`` (missing ones empty)."""
    values = {name: parsed.get(name, "") for name in _STR}
    for name, typ in _CONVERT:
        values[name] = typ(parsed.get(name) or 0)
    return values
