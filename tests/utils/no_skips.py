"""A pytest plugin: a skipped test fails unless its reason says this machine cannot have a thing.

Missing tools never skip (scripts/install-test.sh installs them all): a skip would let CI go green
while a check did not run. Only what no CPU machine can have, such as a GPU, may skip, and the
reason must say so with the words of ALLOWED.
"""

from __future__ import annotations

import pytest

ALLOWED = "this machine cannot"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if not report.skipped or hasattr(report, "wasxfail"):
        return
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    if ALLOWED not in reason:
        report.outcome = "failed"
        report.longrepr = (
            f"{item.nodeid} skipped ({reason}); tests may skip only for what "
            f"{ALLOWED!r} have (say so in the reason): install what is missing with "
            "scripts/install-test.sh instead"
        )
