"""Differential tests against Pigeonhole: for every case in tests/sieve/cases/ (a script, a message, an envelope),
our evaluator reports the same actions as Debian's sieve-test (normalised: store/redirect/reject/discard/vacation
with their arguments, the implicit keep, compile and runtime errors).  sieve-test runs with a configuration the
test writes (no system dovecot); ours runs in process, and a few cases also through ``mailserver sieve test``."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mailserver.cli.sieve import dir_loader, run_test
from mailserver.sieve import SieveCompileError, describe
from tests.sieve import pigeonhole as ph

CASES = ph.case_files()


def test_the_corpus_has_at_least_150_cases():
    assert len(CASES) >= 150


@pytest.fixture(scope="module")
def conf(tmp_path_factory):
    return ph.write_config(tmp_path_factory.mktemp("pigeonhole"))


def _ours(path, meta) -> list[str]:
    msg = ph.CASES / "messages" / meta["message"]
    try:
        result = run_test(path.read_text(), msg.read_bytes(), envelope_from=meta["from"], envelope_to=meta["to"],
                          loader=dir_loader(str(ph.CASES / "include"), str(ph.CASES / "global")))
    except SieveCompileError:
        return ["error: compile"]
    return describe(result)


def test_every_case_gives_the_actions_pigeonhole_gives(conf):
    mismatches = []
    for path in CASES:
        meta = ph.case_meta(path)
        theirs = ph.run(conf, path, ph.CASES / "messages" / meta["message"], meta["from"], meta["to"])
        ours = _ours(path, meta)
        if ours != theirs:
            mismatches.append(f"{path.name}: ours {ours} pigeonhole {theirs}")
    assert mismatches == []


@pytest.mark.parametrize("name", ["001.sieve", "068.sieve", "096.sieve", "131.sieve", "166.sieve", "213.sieve"])
def test_the_real_cli_prints_the_same(conf, name):
    path = ph.CASES / name
    meta = ph.case_meta(path)
    msg = ph.CASES / "messages" / meta["message"]
    proc = subprocess.run([sys.executable, "-m", "mailserver", "sieve", "test", "--brief", "--envelope-from",
                           meta["from"], "--envelope-to", meta["to"], "--include-dir", str(ph.CASES / "include"),
                           "--global-dir", str(ph.CASES / "global"), str(path), str(msg)],
                          capture_output=True, text=True, timeout=60)
    assert proc.stdout.splitlines() == ph.run(conf, path, msg, meta["from"], meta["to"]), proc.stderr
