"""System tools the tests run as real components: found, or the test fails saying how to install.

A missing tool never skips a test: `scripts/install-test.sh` installs all of them.
"""

from __future__ import annotations

import shutil

import pytest

INSTALL_HINT = "run scripts/install-test.sh, which installs it"


def require_tool(command: str, debian_package: str) -> str:
    """The path of `command` (also looked up in /usr/sbin), else fail naming its Debian package."""
    path = shutil.which(command) or shutil.which(command, path="/usr/sbin")
    if path is None:
        pytest.fail(
            f"{command} is not installed (Debian package {debian_package}): {INSTALL_HINT}",
            pytrace=False,
        )
    return path
