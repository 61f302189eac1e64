"""Parse a message once at delivery; render IMAP structures from the stored parse.

- :mod:`.parse`: :func:`parse_message` -> :class:`ParsedMessage` (envelope, body
  structure with byte offsets, summary fields, preview).
- :mod:`.imapformat`: ENVELOPE / BODY / BODYSTRUCTURE wire rendering, BODY[section]
  byte ranges, HEADER.FIELDS filtering.
- :mod:`.text`: RFC 2047 decoding, address lists, body text for search, base subject.

No module here does I/O or imports Twisted.
"""

from .imapformat import header_fields, render_bodystructure, render_envelope, section_range
from .parse import ParsedMessage, param_value, parse_message, part_filename
from .searchtext import extract_text
from .text import address_list, base_subject, decode_header_text, decoded_body, part_text

__all__ = [
    "ParsedMessage",
    "parse_message",
    "param_value",
    "part_filename",
    "render_envelope",
    "render_bodystructure",
    "section_range",
    "header_fields",
    "decode_header_text",
    "extract_text",
    "base_subject",
    "address_list",
    "decoded_body",
    "part_text",
]
