"""What a reader sees of a message, worked out from the stored body structure (no Twisted, no I/O).

Parts are named by their position in :func:`mailserver.mime.parse.iter_parts` order (``part`` numbers in URLs), which
is stable for a stored message.  The body shown is chosen the way mail clients do it: in ``multipart/alternative`` the
richest part we can show (HTML unless the reader prefers text), in ``multipart/related`` the root, in
``multipart/mixed`` every inline text part in order.  The versions of an alternative not shown are no attachments;
every other leaf is one, except images an HTML body refers to by ``cid:``.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field

from mailserver.mime.parse import iter_parts, param_value, parse_structure, part_filename  # noqa: F401 (re-exported)
from mailserver.mime.text import decode_charset, decode_header_text, decode_transfer

#: Largest text part decoded for display.
MAX_TEXT = 2 * 1024 * 1024
#: Image types served inline for cid: references (never SVG: it can carry script).
INLINE_IMAGE_TYPES = {"image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp"}


@dataclass(frozen=True)
class Body:
    kind: str  # "text" | "html"
    part: int
    text: str = ""  # decoded text for "text" parts


@dataclass(frozen=True)
class Attachment:
    part: int
    filename: str
    content_type: str
    size: int  # encoded size in the message
    inline_cid: str = ""


@dataclass
class MessageView:
    bodies: list[Body] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    cids: dict[str, int] = field(default_factory=dict)  # Content-ID (without <>) -> part number
    has_html: bool = False
    has_text: bool = False


def numbered(bs: dict) -> list[dict]:
    return list(iter_parts(bs))


def ctype(node: dict) -> str:
    return f"{node.get('type', 'text')}/{node.get('subtype', 'plain')}".lower()


def _disposition(node: dict) -> str:
    d = node.get("disposition")
    return d[0].lower() if d else ""


def _cid(node: dict) -> str:
    cid = (node.get("id") or "").strip()
    if cid.startswith("<") and cid.endswith(">"):
        cid = cid[1:-1]
    return cid


def decode_part_text(raw: bytes, node: dict) -> str:
    start, end = node["body_start"], min(node["body_end"], node["body_start"] + MAX_TEXT)
    data = decode_transfer(raw[start:end], node.get("encoding"))
    return decode_charset(data, param_value(node.get("params"), "charset")).replace("\r\n", "\n")


def part_bytes(raw: bytes, node: dict) -> bytes:
    return decode_transfer(raw[node["body_start"]:node["body_end"]], node.get("encoding"))


def analyze(raw: bytes, bs: dict, prefer_text: bool = False) -> MessageView:
    """Choose bodies and attachments; text bodies are decoded, HTML ones are left for the frame to fetch."""
    nodes = numbered(bs)
    index = {id(n): i for i, n in enumerate(nodes)}
    view = MessageView()
    shown: set[int] = set()
    alternatives: set[int] = set()  # versions of an alternative that are not shown

    def not_chosen(node: dict, in_related: bool) -> None:
        # RFC 2046 5.1.4: the parts of multipart/alternative are versions of the same content, so the ones not
        # shown are not attachments: their text and HTML, and the resources of an HTML version (multipart/related).
        # A part explicitly marked as an attachment, or another kind of content (text/calendar), is still listed.
        if "children" in node:
            for k in node["children"]:
                not_chosen(k, in_related or node.get("subtype", "").lower() == "related")
        elif _disposition(node) != "attachment" and "body" not in node and (
                in_related or ctype(node) in ("text/plain", "text/html")):
            alternatives.add(index[id(node)])

    def pick(node: dict) -> None:
        t = ctype(node)
        if "children" in node:
            kids = node["children"]
            sub = node.get("subtype", "").lower()
            if sub == "alternative":
                texts = [k for k in kids if ctype(k) == "text/plain" and "children" not in k]
                htmls = [k for k in kids if ctype(k) == "text/html" and "children" not in k]
                complex_ = [k for k in kids if "children" in k]
                choice = None
                if prefer_text and texts:
                    choice = texts[-1]
                elif complex_ and not prefer_text:
                    choice = complex_[-1]
                elif htmls:
                    choice = htmls[-1]
                elif texts:
                    choice = texts[-1]
                elif kids:
                    choice = kids[-1]
                view.has_html = view.has_html or bool(htmls) or bool(complex_)
                view.has_text = view.has_text or bool(texts)
                if choice is not None:
                    pick(choice)
                for k in kids:
                    if k is not choice:
                        not_chosen(k, in_related=False)
                return
            if sub == "related":
                if kids:
                    pick(kids[0])
                return
            for k in kids:
                if _disposition(k) == "attachment" or "body" in k:
                    continue
                if ctype(k) in ("text/plain", "text/html") or "children" in k:
                    pick(k)
            return
        if "body" in node:
            return
        if t == "text/html":
            shown.add(index[id(node)])
            view.bodies.append(Body("html", index[id(node)]))
            view.has_html = True
        elif t == "text/plain" or node.get("type", "").lower() == "text" and t != "text/html":
            shown.add(index[id(node)])
            view.bodies.append(Body("text", index[id(node)], decode_part_text(raw, node)))
            view.has_text = True

    if _disposition(bs) != "attachment":
        pick(bs)
    for i, node in enumerate(nodes):
        if "children" in node or i in shown:
            continue
        cid = _cid(node)
        if cid:
            view.cids[cid] = i
        if i in alternatives:
            continue
        if "body" in node:  # an attached message: downloadable as .eml
            view.attachments.append(Attachment(i, attachment_name(node, i), "message/rfc822",
                                               node["body_end"] - node["body_start"]))
            continue
        if _inside_attached_message(nodes, node):
            continue
        if i == 0 and not shown and ctype(node).startswith("text/") and _disposition(node) != "attachment":
            continue
        view.attachments.append(Attachment(i, attachment_name(node, i), ctype(node),
                                           node["body_end"] - node["body_start"], cid))
    return view


def attachment_name(node: dict, index: int) -> str:
    """The name a part is listed and downloaded under (display_filename applied): its file name; for an attached
    message, else its subject, with ".eml"; else ``part-N``."""
    if "body" in node:
        name = display_filename(part_filename(node) or decode_header_text((node.get("envelope") or [None, None])[1]
                                                                          or ""))
        return (name or "message") + ("" if name.endswith(".eml") else ".eml")
    return display_filename(part_filename(node) or "") or f"part-{index}"


def display_filename(name: str) -> str:
    """A file name as it may be shown or offered for download: without control and format characters.

    Bidirectional controls (U+202E RIGHT-TO-LEFT OVERRIDE makes ``invoice\u202efdp.exe`` show as ``invoiceexe.pdf``),
    isolates, zero-width characters and C0/C1 controls are all Unicode categories Cc/Cf; removed, the real
    extension shows."""
    return "".join(ch for ch in name if unicodedata.category(ch) not in ("Cc", "Cf"))


def _inside_attached_message(nodes: list[dict], target: dict) -> bool:
    for n in nodes:
        if "body" in n:
            for inner in iter_parts(n["body"]):
                if inner is target:
                    return True
    return False
