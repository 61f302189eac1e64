"""Pigeonhole's sieve-test (Debian's dovecot-sieve) with a private configuration, and its output normalised to
the lines ``mailserver.sieve.describe`` prints, so the two can be compared."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
from pathlib import Path

CASES = Path(__file__).parent / "cases"
EXTENSIONS = ("+vacation-seconds +editheader +mime +foreverypart +extracttext +spamtest +spamtestplus +virustest "
              "+regex +duplicate")


def sieve_test_binary() -> str:
    path = shutil.which("sieve-test")
    if path is None:
        raise AssertionError("sieve-test is missing: apt-get install dovecot-sieve (.ci/run installs it)")
    return path


def write_config(tmp: Path) -> Path:
    """A dovecot.conf of our own (no system dovecot): mail under ``tmp``, includes from the case directories."""
    user = "nobody" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
    group = "nogroup" if os.geteuid() == 0 else None
    for d in ("run", "mail"):
        (tmp / d).mkdir(exist_ok=True)
    os.chmod(tmp, 0o777)
    for d in ("run", "mail"):
        os.chmod(tmp / d, 0o777)
    conf = tmp / "dovecot.conf"
    conf.write_text(f"""
base_dir = {tmp}/run
log_path = /dev/stderr
mail_location = maildir:{tmp}/mail
mail_uid = {user}
{f'mail_gid = {group}' if group else ''}
plugin {{
  sieve_extensions = {EXTENSIONS}
  sieve_spamtest_status_type = score
  sieve_spamtest_status_header = X-Spam-Score
  sieve_spamtest_max_value = 10
  sieve_dir = {CASES / 'include'}
  sieve_global = {CASES / 'global'}
}}
""")
    os.chmod(conf, 0o644)
    return conf


def run(conf: Path, script: Path, message: Path, sender: str, recipient: str) -> list[str]:
    proc = subprocess.run([sieve_test_binary(), "-c", str(conf), "-f", sender, "-r", recipient, str(script),
                           str(message)], capture_output=True, text=True, timeout=60,
                          env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "TZ": "UTC"})
    return normalise(proc.returncode, proc.stdout, proc.stderr)


def normalise(rc: int, out: str, err: str) -> list[str]:
    if "failed to compile" in err or rc == 89:
        return ["error: compile"]
    if "final result: failed" in err:
        return ["error: runtime", "implicit-keep"]
    lines = out.splitlines()
    result: list[str] = []
    section = None
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("Performed actions:"):
            section = "performed"
        elif line.startswith("Implicit keep:"):
            section = "implicit"
        elif line.startswith(" * store message in folder: "):
            box = line.split(": ", 1)[1]
            result.append(("implicit-keep" if section == "implicit" else f"store {box}"))
        elif line.startswith("        + add IMAP flags: "):
            flags = sorted(f.lower() for f in line.split(": ", 1)[1].split())
            result[-1] += " flags=" + " ".join(flags)
        elif line.startswith(" * redirect message to: "):
            result.append("redirect " + line.split(": ", 1)[1].strip("<>"))
        elif line.startswith(" * reject message with reason: "):
            reason = [line.split(": ", 1)[1]]
            while i + 1 < len(lines) and lines[i + 1] and not lines[i + 1].startswith(" * "):
                i += 1
                reason.append(lines[i])
            # sieve-test shows the reason's CR LF as "??": they are line ends, spaces once normalised
            result.append("reject " + " ".join(" ".join(reason).replace("??", " ").split()))
        elif line.startswith(" * discard"):
            result.append("discard")
        elif line.startswith(" * send vacation message:"):
            seconds = subject = ""
            body: list[str] = []
            i += 1
            while i < len(lines) and not lines[i].startswith("END MESSAGE"):
                m = re.match(r"\s+=> (\w+)\s*: (.*)", lines[i])
                if m and m.group(1) == "seconds":
                    seconds = m.group(2)
                elif m and m.group(1) == "subject":
                    subject = m.group(2)
                elif lines[i].startswith("START MESSAGE"):
                    i += 1
                    while i < len(lines) and not lines[i].startswith("END MESSAGE"):
                        body.append(lines[i])
                        i += 1
                    continue
                i += 1
            result.append(f"vacation seconds={seconds} subject={subject} reason={' '.join(' '.join(body).split())}")
        i += 1
    return result


def case_files() -> list[Path]:
    return sorted(CASES.glob("[0-9]*.sieve"))


def case_meta(path: Path) -> dict:
    meta = {}
    for line in path.read_text().splitlines()[:3]:
        k, _, v = line.lstrip("# ").partition(": ")
        meta[k] = v
    return meta
