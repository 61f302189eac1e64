"""Sans-IO pieces of the webmail: sanitiser, message builder, threading headers, autoconfig documents."""

from __future__ import annotations

import email
import email.policy

import pytest

from webmail import autoconfig as ac
from webmail import compose as cm
from webmail.sanitize import clean_style, sanitize_html


def _clean(markup, remote=False):
    return sanitize_html(markup, cid_url=lambda c: "/cid/" + c if c == "ok@x" else None, allow_remote=remote)


@pytest.mark.parametrize("attack", [
    "<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "<a href='javascript:alert(1)'>x</a>",
    "<svg onload=alert(1)><script>alert(1)</script></svg>", "<math><mi xlink:href='javascript:alert(1)'>x</mi></math>",
    "<iframe src='https://evil.invalid'></iframe>", "<form action='https://evil.invalid'><input></form>",
    "<meta http-equiv=refresh content='0;url=https://evil.invalid'>", "<object data='https://evil.invalid'></object>",
    "<div style='background:url(https://evil.invalid/x)'>x</div>", "<p style='width:expression(alert(1))'>x</p>",
    "<style>@import 'https://evil.invalid/x.css';</style>", "<base href='https://evil.invalid/'>",
    "<link rel=stylesheet href='https://evil.invalid/x.css'>", "<p style='background:u\\72l(https://evil.invalid)'>",
    "<a href='data:text/html,<script>alert(1)</script>'>x</a>", "<img src='//evil.invalid/x.png'>",
])
def test_hostile_html_is_neutralised(attack):
    """Every script, event handler, remote load and form is removed."""
    out = _clean(attack + "<p>ok</p>").html.lower()
    for bad in ("<script", "onerror", "onload", "javascript:", "evil.invalid", "<iframe", "<form", "<meta",
                "<object", "<base", "<link", "expression(", "url(", "data:text"):
        assert bad not in out
    assert "<p>ok</p>" in out


def test_remote_images_blocked_until_asked_and_cid_rewritten():
    """Remote images are counted and dropped unless allowed; cid: points at our URL; unknown cid: is dropped."""
    src = "<img src='https://img.example/a.png'><img src='cid:ok@x'><img src='cid:other@x'>"
    blocked = _clean(src)
    assert blocked.blocked_images == 1 and "img.example" not in blocked.html
    assert 'src="/cid/ok@x"' in blocked.html and "other@x" not in blocked.html
    assert "https://img.example/a.png" in _clean(src, remote=True).html


def test_css_is_inlined_and_filtered():
    """<style> rules become style attributes; only safe declarations stay."""
    out = _clean("<style>p{color:red;position:fixed}</style><p>x</p>").html
    assert "color:red" in out.replace(" ", "") and "position" not in out
    assert clean_style("color: red; background: url(x)") == "color: red"


def test_build_encodes_headers_and_filenames():
    """Non-ASCII subject and names use RFC 2047, file names RFC 2231; CRLF line ends; Bcc only in the copy."""
    d = cm.Draft(from_addr="a@example.test", from_name="Jörg, Ü", to=cm.parse_recipients("Bob <b@example.org>"),
                 bcc=(("", "hidden@example.org"),), subject="Grüße", body="Hallo Wörld\n",
                 attachments=(cm.FileAttachment("Überweisung März.pdf", "application/pdf", b"%PDF\x00\xff"),))
    raw = cm.build(d, message_id="<m1@example.test>")
    assert b"\n" not in raw.replace(b"\r\n", b"") and raw.isascii()
    assert b"Subject: =?utf-8?" in raw and b"hidden@example.org" not in raw
    m = email.message_from_bytes(raw, policy=email.policy.default)
    assert m["Subject"] == "Grüße" and m["From"].addresses[0].display_name == "Jörg, Ü"
    att = next(m.iter_attachments())
    assert att.get_filename() == "Überweisung März.pdf" and att.get_payload(decode=True) == b"%PDF\x00\xff"
    assert b"filename*=utf-8''" in raw
    assert b"hidden@example.org" in cm.build(d, message_id="<m1@example.test>", include_bcc=True)


def test_forwarded_message_is_attached_byte_exact():
    """message/rfc822 attachments keep the original bytes (RFC 2046 5.2.1: no base64)."""
    inner = b"From: x@y.example\r\nSubject: inner\r\n\r\nbody \xc3\xa4\r\n"
    raw = cm.build(cm.Draft("a@example.test", to=(("", "b@example.org"),), subject="Fwd: inner", body="see",
                            attachments=(cm.MessageAttachment("inner.eml", inner),)), message_id="<f@x>")
    assert inner.rstrip(b"\r\n") in raw and b"Content-Transfer-Encoding: 8bit" in raw


@pytest.mark.parametrize("value", ["a\r\nBcc: x@y.example", "a\nb", "a\rb", "a\0b"])
def test_header_injection_raises(value):
    with pytest.raises(cm.ComposeError):
        cm.build(cm.Draft("a@example.test", subject=value), message_id="<x@y>")
    with pytest.raises(cm.ComposeError):
        cm.parse_recipients("b@example.org" + value[1:])


def test_threading_headers():
    """RFC 5322 3.6.4: References = parent's References (or single In-Reply-To) + parent's Message-ID."""
    assert cm.threading_headers("<c@x>", "<a@x> <b@x>") == ("<c@x>", "<a@x> <b@x> <c@x>")
    assert cm.threading_headers("<c@x>", "", "<b@x>") == ("<c@x>", "<b@x> <c@x>")
    assert cm.threading_headers("<c@x>", "", "<a@x> <b@x>") == ("<c@x>", "<c@x>")
    assert cm.reply_subject("Re: x") == "Re: x" and cm.forward_subject("x") == "Fwd: x"


def test_autoconfig_address_checks():
    with pytest.raises(ac.AutoconfigError):
        ac.split_address("no-at-sign")
    with pytest.raises(ac.AutoconfigError):
        ac.parse_autodiscover_request(b"<a>" + b"x" * ac.MAX_AUTODISCOVER_REQUEST + b"</a>")
    assert ac.entries("h", {"smtp": [25], "submission": [587]}) == [ac.ServerEntry("smtp", "h", 587, "STARTTLS")]
