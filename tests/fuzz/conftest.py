"""Hypothesis profiles for the fuzz tests, and a count of the examples each test ran.

Profiles (``FUZZ_PROFILE``, default ``ci``):

- ``ci``: :data:`CI_EXAMPLES` examples per test, derandomized (the same examples every run, so CI never fails on a
  new random draw; the long runs by hand explore).
- ``dev``: 2,000 random examples per test.
- ``long``: 20,000 random examples per test.

``FUZZ_EXAMPLES=N`` sets the number of examples (random, on top of ``long`` unless ``FUZZ_PROFILE`` names another
profile). By hand, in this process or in parallel::

    FUZZ_EXAMPLES=100000 TEST_WORKERS=0 scripts/test tests/fuzz     # one process (TEST_WORKERS=0 is -n 0)
    FUZZ_EXAMPLES=20000 TEST_WORKERS=2 scripts/test tests/fuzz      # the tests spread over two processes
    FUZZ_PROFILE=dev scripts/test tests/fuzz

Outside the ``ci`` profile the tests have no pytest-timeout. The counts of examples run (including those of
shrinking a failure) are printed at the end of the run.

No timing anywhere (``deadline=None``), and no example database: Hypothesis keeps nothing in the work tree (its
home directory is under the system temp dir).
"""

from __future__ import annotations

import os
import pathlib
import tempfile

import pytest
from hypothesis import HealthCheck, Phase, configuration, settings

from tests.fuzz import fuzzlib

CI_EXAMPLES = 150

configuration.set_hypothesis_home_dir(os.path.join(tempfile.gettempdir(), "mailserver-hypothesis"))

_COMMON = dict(
    deadline=None,
    database=None,
    print_blob=True,
    # No "explain" phase: it traces every line (slow before Python 3.12) and the failing input is what we need.
    phases=(Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
                           HealthCheck.large_base_example],
)
settings.register_profile("ci", max_examples=CI_EXAMPLES, derandomize=True, **_COMMON)
settings.register_profile("dev", max_examples=2000, **_COMMON)
settings.register_profile("long", max_examples=20000, **_COMMON)

_profile = os.environ.get("FUZZ_PROFILE", "")
_examples = os.environ.get("FUZZ_EXAMPLES", "")
if _examples:
    settings.register_profile("env", parent=settings.get_profile(_profile or "long"), max_examples=int(_examples))
    _profile = "env"
_profile = _profile or "ci"
settings.load_profile(_profile)
_HERE = pathlib.Path(__file__).parent


def pytest_collection_modifyitems(config, items):
    if _profile != "ci":
        # A long run by hand takes as long as it takes: no pytest-timeout (300 s by default) on it.
        for item in items:
            if item.path.is_relative_to(_HERE):
                item.add_marker(pytest.mark.timeout(0))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    fuzzlib.reset_count()
    yield
    item.user_properties.append(("fuzz_examples", fuzzlib.examples_run()))


def pytest_terminal_summary(terminalreporter):
    rows = []
    for status in ("passed", "failed"):
        for rep in terminalreporter.stats.get(status, []):
            props = dict(getattr(rep, "user_properties", ()))
            if getattr(rep, "when", "") == "call" and "fuzz_examples" in props:
                rows.append((rep.nodeid, props["fuzz_examples"], status))
    if not rows:
        return
    terminalreporter.section(f"fuzz examples run (profile {settings.get_current_profile_name()})")
    for nodeid, n, status in sorted(rows):
        terminalreporter.write_line(f"{n:>9}  {nodeid}{'' if status == 'passed' else '  FAILED'}")
    terminalreporter.write_line(f"{sum(n for _, n, _ in rows):>9}  in total")
