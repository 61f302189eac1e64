"""Table-driven tests of the sans-IO evaluator, per extension (the RFCs' own examples among them), its error
positions, its limits and hostile scripts: a clear error or an implicit keep, never a crash or a hang."""

from __future__ import annotations

import pytest

from mailserver.sieve import Env, Limits, MessageFacts, SieveCompileError, compile_script, describe, evaluate
from mailserver.sieve.grammar import MAX_NESTING
from mailserver.sieve.interp import DEFAULT_LIMITS

MSG = (b"Return-Path: <ken@example.com>\r\nFrom: Ken <ken+sieve@example.com>\r\nTo: coyote@desert.example.org\r\n"
       b"Cc: boss@example.com\r\nSubject: Your vacation\r\nDate: Mon, 24 Nov 2008 13:00:00 -0800\r\n"
       b"Message-ID: <vac-1@example.com>\r\nX-Spam-Score: 3\r\nList-Id: <sieve.ietf.org>\r\n"
       b"X-Caffeine: 2 cups\r\n\r\nI'll be back on Monday.\r\n")


def run(script: str, raw: bytes = MSG, *, limits: Limits = DEFAULT_LIMITS, env: Env | None = None, loader=None,
        frm="ken@example.com", to="coyote+work@desert.example.org"):
    s = compile_script(script, loader=loader, limits=limits)
    facts = MessageFacts.from_bytes(raw, envelope_from=frm, envelope_to=to)
    return evaluate(s, facts, env or Env(now=1_228_000_000, zone_offset=0), limits)


CASES = [
    # (extension, script, expected normalised actions)
    ("core", "keep;", ["store INBOX"]),
    ("core", "discard;", ["discard"]),
    ("core", "", ["implicit-keep"]),
    ("core", 'if header :contains "subject" "vacation" { discard; stop; } keep;', ["discard"]),
    # RFC 5228 2.7.1: "i;ascii-casemap" is the default comparator
    ("core", 'if header :is "subject" "YOUR VACATION" { discard; }', ["discard"]),
    ("core", 'if header :is :comparator "i;octet" "subject" "YOUR VACATION" { discard; }', ["implicit-keep"]),
    ("core", 'if exists ["From", "Date"] { discard; }', ["discard"]),
    ("core", 'if size :over 100K { discard; }', ["implicit-keep"]),
    ("core", 'redirect "x@example.net"; redirect "X@example.net";', ["redirect x@example.net"]),
    # RFC 5228 5.1: address parts
    ("core", 'if address :domain :is "from" "example.com" { discard; }', ["discard"]),
    ("core", 'if address :all :is "from" "ken+sieve@example.com" { discard; }', ["discard"]),
    ("fileinto", 'require "fileinto"; fileinto "Work"; fileinto "Work";', ["store Work"]),
    ("fileinto", 'require "fileinto"; fileinto "INBOX"; keep;', ["store INBOX"]),
    ("copy", 'require ["copy", "fileinto"]; fileinto :copy "A"; redirect :copy "b@x.org";',
     ["store A", "redirect b@x.org", "implicit-keep"]),
    ("reject", 'require "reject"; reject "go away";', ["reject go away"]),
    ("reject", 'require "ereject"; ereject "go away";', ["ereject go away"]),
    ("reject", 'require ["reject", "fileinto"]; fileinto "x"; reject "no";', ["error: runtime", "implicit-keep"]),
    ("envelope", 'require "envelope"; if envelope :is "from" "ken@example.com" { discard; }', ["discard"]),
    ("envelope", 'require ["envelope", "subaddress"]; if envelope :detail "to" "work" { discard; }', ["discard"]),
    # RFC 5233 4: no separator -> :detail matches nothing, :user is the whole local part
    ("subaddress", 'require "subaddress"; if address :detail :matches "to" "*" { discard; }', ["implicit-keep"]),
    ("subaddress", 'require "subaddress"; if address :user :is "to" "coyote" { discard; }', ["discard"]),
    ("subaddress", 'require "subaddress"; if address :detail :is "from" "sieve" { discard; }', ["discard"]),
    ("body", 'require "body"; if body :contains "monday" { discard; }', ["discard"]),
    ("body", 'require "body"; if body :raw :contains "Monday" { discard; }', ["discard"]),
    # RFC 5229 3.2's example: ${1} is the first wildcard
    ("variables", 'require ["variables", "fileinto"]; if header :matches "List-ID" "*<*@*" {'
     ' fileinto "INBOX.lists.${2}"; stop; } if header :matches "List-ID" "*<*>*" { fileinto "l-${2}"; }',
     ["store l-sieve.ietf.org"]),
    ("variables", 'require ["variables", "fileinto"]; set "a" "x"; set :upper "b" "${a}y"; fileinto "${b}";',
     ["store XY"]),
    ("variables", 'require ["variables", "fileinto"]; set :length "n" "abcd"; fileinto "n${n}";', ["store n4"]),
    ("variables", 'require "variables"; if string :is "${nope}" "" { discard; }', ["discard"]),
    ("vacation", 'require "vacation"; vacation :days 3 :subject "away" "I am away";',
     ["vacation seconds=259200 subject=away reason=I am away", "implicit-keep"]),
    # RFC 5230 4.1: fewer than the minimum period is the minimum (a day here)
    ("vacation", 'require ["vacation", "vacation-seconds"]; vacation :seconds 5 "x";',
     ["vacation seconds=86400 subject= reason=x", "implicit-keep"]),
    ("vacation", 'require "vacation"; vacation "a"; vacation "b";', ["error: runtime", "implicit-keep"]),
    ("relational", 'require ["relational", "comparator-i;ascii-numeric"]; if header :value "gt" '
     ':comparator "i;ascii-numeric" "x-spam-score" "2" { discard; }', ["discard"]),
    # RFC 5231 6's example: counting addresses
    ("relational", 'require ["relational", "comparator-i;ascii-numeric"]; if address :count "ge" '
     ':comparator "i;ascii-numeric" ["to", "cc"] "3" { discard; }', ["implicit-keep"]),
    ("relational", 'require ["relational", "comparator-i;ascii-numeric"]; if address :count "eq" '
     ':comparator "i;ascii-numeric" ["to", "cc"] "2" { discard; }', ["discard"]),
    # RFC 5231: i;ascii-numeric, a value without digits is larger than every number
    ("relational", 'require ["relational", "comparator-i;ascii-numeric"]; if header :value "gt" '
     ':comparator "i;ascii-numeric" "subject" "99999" { discard; }', ["discard"]),
    ("imap4flags", 'require "imap4flags"; addflag "\\\\Seen"; addflag "$Work"; removeflag "\\\\seen";',
     ["implicit-keep flags=$work"]),
    ("imap4flags", 'require ["imap4flags", "fileinto"]; fileinto :flags "\\\\Flagged" "A"; keep;',
     ["store A flags=\\flagged", "store INBOX"]),
    ("imap4flags", 'require "imap4flags"; setflag "a b"; if hasflag :is "b" { discard; }', ["discard"]),
    ("mailbox", 'require ["mailbox", "fileinto"]; if mailboxexists "Work" { fileinto "Work"; }',
     ["implicit-keep"]),
    ("mailbox", 'require ["mailbox", "fileinto"]; fileinto :create "New";', ["store New"]),
    # RFC 5260 4's example: mail sent outside business hours
    ("date", 'require ["date", "relational", "fileinto"]; if allof(date :value "ge" :originalzone "date" "hour"'
     ' "09", date :value "lt" :originalzone "date" "hour" "17") { fileinto "business"; }', ["store business"]),
    ("date", 'require "date"; if date :zone "+0000" "date" "hour" "21" { discard; }', ["discard"]),
    ("date", 'require ["date", "relational"]; if currentdate :value "ge" "date" "2008-01-01" { discard; }', ["discard"]),
    ("index", 'require ["index", "date"]; if date :index 1 :originalzone "date" "year" "2008" { discard; }', ["discard"]),
    ("regex", 'require ["regex", "variables", "fileinto"]; if header :regex "subject" "^Your (.*)$" '
     '{ fileinto "${1}"; }', ["store vacation"]),
    ("editheader", 'require "editheader"; addheader "X-A" "1"; if exists "x-a" { discard; }', ["discard"]),
    ("editheader", 'require "editheader"; deleteheader "x-caffeine"; if exists "x-caffeine" { discard; }',
     ["implicit-keep"]),
    # RFC 5293 4.1: Received and Auto-Submitted cannot be removed
    ("editheader", 'require "editheader"; addheader "Received" "x"; if header :is "received" "x" { discard; }',
     ["implicit-keep"]),
    ("duplicate", 'require "duplicate"; if duplicate { discard; }', ["implicit-keep"]),
    ("spamtest", 'require ["spamtest", "relational", "comparator-i;ascii-numeric"]; if spamtest :value "ge" '
     ':comparator "i;ascii-numeric" "3" { discard; }', ["discard"]),
    ("environment", 'require "environment"; if environment :is "location" "MDA" { discard; }', ["discard"]),
    ("encoded-character", 'require ["encoded-character", "fileinto"]; fileinto "${hex:4a 4B}${unicode:263A}";',
     ["store JK\u263a"]),
    ("include", 'require "include"; include "sub"; include :optional "none";', ["store FromSub"]),
    ("include", 'require ["include", "variables", "fileinto"]; global "g"; set "g" "G"; include "usesg";',
     ["store G"]),
    # The outermost foreverypart visits the message itself too, a single-part message included (as Pigeonhole:
    # tests/sieve/cases/257.sieve).
    ("mime", 'require ["mime", "foreverypart"]; foreverypart { discard; }', ["discard"]),
    ("spamtestplus", 'require ["spamtestplus", "relational", "comparator-i;ascii-numeric"]; if spamtest :percent '
     ':value "ge" :comparator "i;ascii-numeric" "30" { discard; }', ["discard"]),
]

SCRIPTS = {("personal", "sub"): 'require "fileinto"; fileinto "FromSub";',
           ("personal", "usesg"): 'require ["include", "variables", "fileinto"]; global "g"; fileinto "${g}";',
           ("personal", "self"): 'require "include"; include "self";'}


def loader(location, name):
    return SCRIPTS.get((location, name))


def _env_with(**kw):
    base = dict(now=1_228_000_000, zone_offset=0, environment={"location": "MDA"},
                spam_score=lambda facts: "3", spam_percent=lambda facts: "30")
    base.update(kw)
    return Env(**base)


@pytest.mark.parametrize("ext,script,expected", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_extension_table(ext, script, expected):
    assert describe(run(script, env=_env_with(), loader=loader)) == expected


def test_fileinto_twice_with_flags_gives_two_stores_with_their_flags():
    r = run('require ["fileinto", "imap4flags"]; addflag "x"; fileinto "A"; setflag "y"; fileinto "B";')
    assert r.stores == [("A", ("x",), False), ("B", ("y",), False)]


def test_editheader_result_has_the_edited_header():
    r = run('require "editheader"; addheader :last "X-Z" "z"; deleteheader "x-caffeine";')
    names = [k.lower() for k, _ in r.header_fields]
    assert names[-1] == "x-z" and "x-caffeine" not in names


@pytest.mark.parametrize("script,line,col,what", [
    ("keep", 1, 5, "expected ';'"),
    ('if true {\n  keep;\n  fileinto "x";\n}', 3, 3, 'require "fileinto"'),
    ('require "fileinto";\n\nfileinto :copy "x";', 3, 10, ":copy needs"),
    ('if header :is\n   :contains "a" "b" {}', 2, 4, "conflicts"),
    ('keep;\n"abc', 2, 1, "unterminated string"),
    ("/* open", 1, 1, "unterminated comment"),
    ('require "nope";', 1, 1, "unknown extension"),
    ("if size :over 5000000000 { keep; }", 1, 15, "too large"),
])
def test_errors_name_line_and_column(script, line, col, what):
    with pytest.raises(SieveCompileError) as e:
        compile_script(script)
    assert (e.value.line, e.value.col) == (line, col) and what in e.value.message


# ---------------------------------------------------------------------------------------------- hostile input

def test_ten_thousand_nested_ifs_are_a_clear_error():
    script = "if true {" * 10_000 + "keep;" + "}" * 10_000
    with pytest.raises(SieveCompileError) as e:
        compile_script(script)
    assert "nested deeper than" in str(e.value)


def test_nesting_at_the_limit_compiles_and_one_more_does_not():
    ok = "if true {" * MAX_NESTING + "discard;" + "}" * MAX_NESTING
    assert describe(run(ok)) == ["discard"]
    with pytest.raises(SieveCompileError):
        compile_script("if true {" * (MAX_NESTING + 1) + "}" * (MAX_NESTING + 1))


def test_ten_thousand_nested_nots_are_a_clear_error():
    with pytest.raises(SieveCompileError):
        compile_script("if " + "not " * 10_000 + "true { keep; }")


def test_a_one_megabyte_string_within_the_size_limit_runs_and_one_byte_more_is_refused():
    limits = Limits()
    frame = 'if header :contains "subject" "" { keep; }'
    big = 'require "variables"; set "a" "' + "x" * (1 << 20) + '"; ' + frame
    with pytest.raises(SieveCompileError) as e:
        compile_script(big, limits=limits)
    assert "more than the limit" in str(e.value)
    at_limit = 'require "variables"; set "a" "'
    at_limit += "x" * (limits.max_script_size - len(at_limit) - len('";')) + '";'
    assert len(at_limit.encode()) == limits.max_script_size
    r = run(at_limit, limits=limits)
    assert r.error == "" and describe(r) == ["implicit-keep"]
    with pytest.raises(SieveCompileError):
        compile_script(at_limit + " ", limits=limits)


def test_variables_are_capped_at_their_size():
    script = 'require "variables"; set "a" "xxxxxxxxxxxxxxxx";' + ' set "a" "${a}${a}";' * 40 + \
        ' set :length "n" "${a}"; if string :is "${n}" "4096" { discard; }'
    assert describe(run(script)) == ["discard"]


def test_include_loops_are_a_compile_error():
    with pytest.raises(SieveCompileError) as e:
        compile_script('require "include"; include "self";', loader=loader)
    assert "include loop" in str(e.value)


def test_include_depth_limit():
    chain = {("personal", f"s{i}"): f'require "include"; include "s{i + 1}";' for i in range(20)}
    with pytest.raises(SieveCompileError) as e:
        compile_script('require "include"; include "s0";', loader=lambda loc, n: chain.get((loc, n), "keep;"),
                       limits=Limits(max_include_depth=5))
    assert "nested deeper" in str(e.value)


def test_a_catastrophic_regex_is_stopped_by_its_time_limit_and_the_message_kept():
    raw = b"Subject: " + b"a" * 5000 + b"!\r\n\r\nbody\r\n"
    r = run('require "regex"; if header :regex "subject" "^(a|aa)+$" { discard; }', raw,
            limits=Limits(regex_timeout=0.2))
    assert "ran past" in r.error and describe(r) == ["error: runtime", "implicit-keep"]


def test_an_invalid_regex_at_run_time_keeps_the_message():
    r = run('require ["regex", "variables"]; set "p" "(("; if header :regex "subject" "${p}" { discard; }')
    assert r.error and r.implicit_keep and r.actions == []


def test_the_step_limit_ends_a_long_run_with_implicit_keep():
    script = 'if header :contains "subject" ["' + '", "'.join(f"k{i}" for i in range(1000)) + '"] { discard; }'
    r = run(script * 50, limits=Limits(max_steps=10_000))
    assert "steps" in r.error and describe(r) == ["error: runtime", "implicit-keep"]


def test_too_many_actions_and_redirects_keep_the_message():
    r = run('require "fileinto";' + "".join(f'fileinto "f{i}";' for i in range(40)))
    assert "actions" in r.error and r.implicit_keep
    r = run("".join(f'redirect "r{i}@x.org";' for i in range(5)))
    assert "redirects" in r.error and r.implicit_keep
    r = run("".join(f'redirect "r{i}@x.org";' for i in range(4)))
    assert not r.error and len(r.actions) == 4


def test_foreverypart_over_many_parts_is_bounded():
    parts = b"".join(b"--B\r\nContent-Type: text/plain\r\n\r\nx\r\n" for _ in range(300))
    raw = b"Content-Type: multipart/mixed; boundary=B\r\nSubject: s\r\n\r\n" + parts + b"--B--\r\n"
    keys = '", "'.join(f"k{i}" for i in range(100))
    script = f'require ["foreverypart", "mime"]; foreverypart {{ if header :mime :contains "content-type" ["{keys}"] {{ keep; }} }}'
    r = run(script, raw, limits=Limits(max_steps=10_000))
    assert "steps" in r.error and r.implicit_keep


@pytest.mark.parametrize("html,text", [
    ("<html><body><p>Hallo <b>Bob</b></p></body></html>", "Hallo Bob "),
    ("<p>a</p><p>b</p>", "a b "),
    ("a<br>b", "a b"),
    ("a &amp; b &lt;c&gt; &eacute; &#233;", "a & b <c> \u00e9 \u00e9"),
    ("<head><title>T</title><style>p{}</style></head><body>z</body>", "T z "),
    ("<script>var x;</script>q", "q"),
    ("one   two\nthree", "one   two\nthree"),
    ("<!-- c -->d", "d"),
])
def test_extracttext_of_html_is_its_text_as_pigeonhole_gives_it(html, text):
    """What sieve-test 2.3 extracts from these HTML parts (measured with a script that files into "[${t}]")."""
    from mailserver.sieve.interp import html_text

    assert html_text(html) == text


@pytest.mark.parametrize("header,score,percent", [
    ("12.5", "10", "100"), ("3.75", "4", "37"), ("9.999", "10", "99"), ("0", "1", "0"), ("-0.1", "1", "0"),
    ("abc", "0", "0"), (None, "0", "0"),
])
def test_spamtest_and_percent_from_the_score_header(header, score, percent):
    """RFC 5235: spamtest 1..10 (0 untested), spamtestplus :percent 0..100, as Pigeonhole maps a score header with
    a maximum of 10 (tests/sieve/pigeonhole.py's configuration)."""
    from mailserver.delivery.sieve_stage import header_spam_percent, header_spam_score

    raw = b"Subject: x\r\n" + (f"X-Spam-Score: {header}\r\n".encode() if header is not None else b"") + b"\r\nx\r\n"
    facts = MessageFacts.from_bytes(raw)
    assert (header_spam_score(facts), header_spam_percent(facts)) == (score, percent)


def test_extracttext_of_hostile_html_is_linear_and_bounded():
    """Unclosed scripts, comments and tags by the hundred thousand: one pass, the rest dropped, no quadratic scan;
    the output stops at the limit asked for."""
    from mailserver.sieve.interp import html_text

    assert html_text("a<script>" * 200_000) == "a "
    assert html_text("a<!--" * 200_000) == "a "
    assert html_text("a <b" * 200_000) == "a "
    assert len(html_text("word<i>" * 500_000, limit=4096)) <= 4096 + 8
