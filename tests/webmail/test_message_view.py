"""What the reader sees of a message: bodies chosen and attachments listed (webmail/message_view.py, no sockets)."""

from __future__ import annotations

import pytest

from webmail import message_view as mv

HEAD = b"From: bob@example.test\r\nTo: alice@example.test\r\nSubject: s\r\nMIME-Version: 1.0\r\n"
PNG = b"iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="


def _multipart(subtype: str, boundary: str, *parts: bytes) -> bytes:
    """A multipart entity (its own header fields, then the parts), each part given with its header fields."""
    out = f"Content-Type: multipart/{subtype}; boundary={boundary}\r\n\r\n".encode()
    for p in parts:
        out += f"--{boundary}\r\n".encode() + p + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


TEXT = b"Content-Type: text/plain; charset=utf-8\r\n\r\nHello in text"
HTML = b"Content-Type: text/html; charset=utf-8\r\n\r\n<p>Hello in <b>HTML</b><img src=\"cid:logo@x\"></p>"
IMAGE = b"Content-Type: image/png\r\nContent-ID: <logo@x>\r\nContent-Transfer-Encoding: base64\r\n\r\n" + PNG
PDF = (b"Content-Type: application/pdf; name=report.pdf\r\nContent-Disposition: attachment; filename=report.pdf\r\n"
       b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK")


def _view(raw: bytes, prefer_text: bool = False) -> mv.MessageView:
    return mv.analyze(raw, mv.parse_structure(raw), prefer_text)


def _kinds(view: mv.MessageView) -> list[str]:
    return [b.kind for b in view.bodies]


@pytest.mark.parametrize("prefer_text", [False, True])
def test_alternative_lists_no_attachment(prefer_text):
    """multipart/alternative (text + HTML): one body shown, and the version not shown is no "part-1" attachment."""
    raw = HEAD + _multipart("alternative", "alt", TEXT, HTML)
    view = _view(raw, prefer_text)
    assert _kinds(view) == (["text"] if prefer_text else ["html"])
    assert view.attachments == []
    assert view.has_html and view.has_text


@pytest.mark.parametrize("prefer_text", [False, True])
def test_alternative_inside_mixed_lists_only_the_real_attachment(prefer_text):
    """mixed [alternative [text, HTML], PDF]: the PDF is the one attachment."""
    raw = HEAD + _multipart("mixed", "mix", _multipart("alternative", "alt", TEXT, HTML), PDF)
    view = _view(raw, prefer_text)
    assert _kinds(view) == (["text"] if prefer_text else ["html"])
    assert [(a.filename, a.content_type) for a in view.attachments] == [("report.pdf", "application/pdf")]


@pytest.mark.parametrize("prefer_text", [False, True])
def test_alternative_with_related_html_inside_mixed(prefer_text):
    """mixed [alternative [text, related [HTML, cid image]], PDF]: no fake text attachment; the cid image stays
    addressable (the view drops it from the list when an HTML body is shown); the PDF is listed."""
    related = _multipart("related", "rel", HTML, IMAGE)
    raw = HEAD + _multipart("mixed", "mix", _multipart("alternative", "alt", TEXT, related), PDF)
    view = _view(raw, prefer_text)
    names = [(a.filename, a.content_type) for a in view.attachments]
    assert "text/plain" not in [ct for _, ct in names] and "text/html" not in [ct for _, ct in names]
    assert ("report.pdf", "application/pdf") in names
    if prefer_text:
        # The image belongs to the HTML version not shown: not an attachment either.
        assert _kinds(view) == ["text"] and names == [("report.pdf", "application/pdf")]
    else:
        assert _kinds(view) == ["html"]
        assert [a.inline_cid for a in view.attachments if a.content_type == "image/png"] == ["logo@x"]
    assert "logo@x" in view.cids


def test_alternative_inside_related():
    """related [alternative [text, HTML], cid image]: the text version is no attachment."""
    raw = HEAD + _multipart("related", "rel", _multipart("alternative", "alt", TEXT, HTML), IMAGE)
    view = _view(raw)
    assert _kinds(view) == ["html"]
    assert [a.content_type for a in view.attachments] == ["image/png"]
    assert view.attachments[0].inline_cid == "logo@x"


def test_attachment_inside_alternative_is_still_listed():
    """A part marked Content-Disposition: attachment, or another kind of content (text/calendar), in a version not
    shown is still offered for download."""
    calendar = b"Content-Type: text/calendar; method=REQUEST\r\n\r\nBEGIN:VCALENDAR\r\nEND:VCALENDAR"
    raw = HEAD + _multipart("alternative", "alt", TEXT, _multipart("mixed", "mix", HTML, PDF), calendar)
    view = _view(raw, prefer_text=True)
    assert _kinds(view) == ["text"]
    assert sorted(a.content_type for a in view.attachments) == ["application/pdf", "text/calendar"]


def test_mixed_still_lists_every_attachment():
    """mixed [text, PDF, PNG]: text shown, both leaves listed (nothing else changed)."""
    png = b"Content-Type: image/png; name=a.png\r\nContent-Transfer-Encoding: base64\r\n\r\n" + PNG
    raw = HEAD + _multipart("mixed", "mix", TEXT, PDF, png)
    view = _view(raw)
    assert _kinds(view) == ["text"] and view.bodies[0].text.startswith("Hello in text")
    assert [(a.filename, a.content_type) for a in view.attachments] == [("report.pdf", "application/pdf"),
                                                                       ("a.png", "image/png")]
