"""RFC 5703 5 and 6: replace and enclose.  Pigeonhole has neither (sieve-test refuses `require "replace"`), so these
are table tests of our reading (mailserver/sieve/mimeedit.py) plus one delivery over SMTP checked over IMAP."""

from __future__ import annotations

import email
import email.policy
import imaplib
import smtplib

import pytest

from mailserver.sieve import MessageFacts, SieveCompileError, compile_script, describe, evaluate
from tests import harness
from tests.harness import running_server
from tests.sieve import pigeonhole as ph

MIME = (ph.CASES / "messages" / "mime.eml").read_bytes()
PLAIN = (ph.CASES / "messages" / "plain.eml").read_bytes()


def _run(script: str, raw: bytes = MIME):
    result = evaluate(compile_script(script), MessageFacts.from_bytes(raw))
    assert not result.error, result.error
    return result


def _parsed(raw: bytes):
    return email.message_from_bytes(raw, policy=email.policy.default)


def test_replace_outside_foreverypart_replaces_the_whole_message_keeping_other_fields():
    r = _run('require "replace"; replace :subject "Ersetzt: \u00fcber" :from "Filter <filter@example.net>" '
             '"The message was replaced.";')
    m = _parsed(r.message)
    assert m.get_content_type() == "text/plain" and m.get_content().strip() == "The message was replaced."
    assert str(m["Subject"]) == "Ersetzt: \u00fcber"
    assert str(m["Original-Subject"]) == "Gr\u00fc\u00dfe aus K\u00f6ln"  # RFC 5703 5: kept as Original-Subject
    assert str(m["From"]) == "Filter <filter@example.net>"
    assert "juergen@example.de" in str(m["Original-From"])
    assert m["Message-ID"] == "<gruss@example.de>" and m["To"] == "bob@example.net"
    assert len(m.get_all("Content-Type")) == 1 and m["Content-Disposition"] is None
    assert describe(r) == ["implicit-keep"]  # the actions are unchanged: only the stored copy is


def test_replace_inside_foreverypart_replaces_only_that_part():
    r = _run('require ["replace", "foreverypart", "mime"]; foreverypart { if header :mime :subtype "content-type" '
             '"pdf" { replace "The attachment invoice.pdf was removed."; } }')
    m = _parsed(r.message)
    parts = [p for p in m.walk()][1:]
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html", "text/plain"]
    assert parts[2].get_content().strip() == "The attachment invoice.pdf was removed."
    assert parts[2]["Content-Disposition"] is None  # the part's old Content-* fields went with it
    assert "viele Gr\u00fc\u00dfe" in parts[0].get_content()
    assert b"JVBERi0" not in r.message


def test_replace_mime_gives_the_entity_and_a_running_loop_skips_the_old_children():
    script = '''require ["replace", "foreverypart", "mime", "variables", "fileinto"];
set "n" "";
foreverypart {
  set "n" "${n}x";
  if header :mime :type "content-type" "multipart" {
    replace :mime text:
Content-Type: text/plain; charset=us-ascii

all gone
.
;
  }
}
fileinto "parts-${n}";
if header :mime :type "content-type" "text" { fileinto "now-text"; }
'''
    r = _run(script)
    assert describe(r) == ["store parts-x", "store now-text"]  # the children were not visited; later tests see it
    m = _parsed(r.message)
    assert m.get_content_type() == "text/plain" and m.get_content().strip() == "all gone"
    assert r.message.count(b"Content-Type:") == 1


def test_enclose_wraps_the_message_and_the_last_enclose_counts():
    r = _run('require "enclose"; enclose :subject "first" "not this"; '
             'enclose :subject "[spam?] Gr\u00fc\u00dfe" :headers ["X-Note: checked", "To: quarantine@example.net"] '
             '"This may be spam; the original is attached.";')
    m = _parsed(r.message)
    assert m.get_content_type() == "multipart/mixed"
    text, inner = m.get_payload()
    assert text.get_content().strip() == "This may be spam; the original is attached."
    assert inner.get_content_type() == "message/rfc822"
    original = inner.get_payload()[0]
    assert original["Message-ID"] == "<gruss@example.de>" and original.get_content_type() == "multipart/mixed"
    assert str(m["Subject"]) == "[spam?] Gr\u00fc\u00dfe" and m["X-Note"] == "checked"
    assert m["To"] == "quarantine@example.net" and len(m.get_all("To")) == 1  # :headers replace fields by name
    assert m["From"] == original["From"] and m["Date"] == original["Date"]
    assert len(m.get_all("Content-Type")) == 1


def test_enclose_after_replace_encloses_the_replaced_message():
    r = _run('require ["enclose", "replace"]; replace "short"; enclose "see attached";', PLAIN)
    inner = _parsed(r.message).get_payload()[1].get_payload()[0]
    assert inner.get_content().strip() == "short"
    assert inner["Subject"] == "Meeting tomorrow at 10"


def test_editheader_and_replace_both_reach_the_copy():
    r = _run('require ["editheader", "replace"]; addheader "X-Filtered" "yes"; replace "x";', PLAIN)
    m = _parsed(r.message)
    assert m["X-Filtered"] == "yes" and m.get_content().strip() == "x"


def test_a_message_not_rebuilt_has_no_new_form():
    assert _run('require ["foreverypart", "mime"]; foreverypart { if true { stop; } }').message is None


@pytest.mark.parametrize("script", [
    'replace "x";',  # no require
    'require "replace"; replace :mime;',
    'require "replace"; replace :headers ["X: y"] "x";',
    'require "enclose"; enclose :headers ["no colon here"] "x";',
    'require "enclose"; enclose :headers ["Content-Type: text/html"] "x";',  # the new message's own field
    'require "enclose"; enclose :subject "a";',
])
def test_bad_uses_are_compile_errors(script):
    with pytest.raises(SieveCompileError):
        compile_script(script)


def test_a_bad_runtime_argument_keeps_the_message():
    """A :mime entity without its empty line, or a :headers entry made bad by a variable: a runtime error,
    so the run keeps the message unchanged in INBOX (mail is never lost to a script)."""
    for script in ['require "replace"; replace :mime "Content-Type: text/plain";',
                   'require ["enclose", "variables"]; set "h" "bad"; enclose :headers ["${h}"] "x";']:
        result = evaluate(compile_script(script), MessageFacts.from_bytes(MIME))
        assert result.error and describe(result) == ["error: runtime", "implicit-keep"]
        assert result.message is None


def test_replace_and_enclose_are_advertised():
    from mailserver.sieve import EXTENSIONS

    assert "replace" in EXTENSIONS and "enclose" in EXTENSIONS


def test_pigeonhole_has_neither_extension(tmp_path):
    """Why these cases are not in tests/sieve/cases/: sieve-test refuses to compile them."""
    conf = ph.write_config(tmp_path)
    script = tmp_path / "s.sieve"
    script.write_text('require "enclose"; enclose "x";\n')
    msg = ph.CASES / "messages" / "plain.eml"
    assert ph.run(conf, script, msg, "a@example.org", "b@example.net") == ["error: compile"]


# ------------------------------------------------------------------ delivery

PW = "correct horse battery"
SCRIPT = '''require ["replace", "enclose", "foreverypart", "mime", "fileinto", "copy"];
if header :contains "subject" "invoice" {
  redirect :copy "carol@example.test";
  foreverypart { if header :mime :subtype "content-type" "pdf" { replace "The PDF was removed by your filter."; } }
  fileinto "Work";
}
if header :contains "subject" "wrap" { enclose :subject "Wrapped" "The original is attached."; }
'''


def test_smtp_delivery_stores_the_replaced_and_the_enclosed_message(tmp_path):
    with running_server(tmp_path, listeners=("smtp", "imap")) as srv:
        acct = srv.add_user("bob@example.test", PW)
        carol = srv.add_user("carol@example.test", PW)
        srv.store.create_mailbox(acct.id, "Work")
        srv.store.put_sieve_script(acct.id, "main", SCRIPT)
        srv.store.activate_sieve_script(acct.id, "main")
        harness.call(srv.services.pipeline.filter.invalidate)
        invoice = MIME.replace(b"Subject: =?UTF-8?B?R3LDvMOfZSBhdXMgS8O2bG4=?=", b"Subject: your invoice")
        wrap = PLAIN.replace(b"Subject: Meeting tomorrow at 10", b"Subject: please wrap")
        with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as c:
            c.ehlo("mx.remote.test")
            c.sendmail("a@remote.test", ["bob@example.test"], invoice)
            c.sendmail("a@remote.test", ["bob@example.test"], wrap)
        im = imaplib.IMAP4("127.0.0.1", srv.port("imap"))
        try:
            im.login("bob@example.test", PW)
            assert im.select("Work", readonly=True)[1] == [b"1"]
            _, data = im.fetch("1", "(BODY.PEEK[])")
            stored = _parsed(data[0][1])
            assert [p.get_content_type() for p in stored.walk()][1:] == ["text/plain", "text/html", "text/plain"]
            assert b"JVBERi0" not in data[0][1] and b"The PDF was removed" in data[0][1]
            assert stored["Return-Path"] == "<a@remote.test>" and stored["Received"]  # trace fields kept
            assert im.select("INBOX", readonly=True)[1] == [b"1"]
            _, data = im.fetch("1", "(BODY.PEEK[])")
            stored = _parsed(data[0][1])
            assert str(stored["Subject"]) == "Wrapped" and stored.get_content_type() == "multipart/mixed"
            _, data = im.fetch("1", "(BODYSTRUCTURE)")
            assert b'"MESSAGE" "RFC822"' in data[0].upper()  # the store parsed the new form
        finally:
            im.logout()
        # RFC 5703 5: the redirect sent the message as it came, attachment and all.
        box = srv.store.get_mailbox(carol.id, "INBOX")
        srv.wait_for(lambda: srv.store.get_mailbox(carol.id, "INBOX").message_count == 1)
        (meta,) = srv.store.list_messages(box.id)
        (msg,) = srv.store.get_messages(box.id, [meta.uid])
        redirected = srv.store.read_blob(msg.blob_id)
        assert b"JVBERi0" in redirected and b"The PDF was removed" not in redirected
