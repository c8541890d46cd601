"""System tools the tests run as real components: found, or the test fails saying how to install.

A missing tool never skips a test: `scripts/install-test.sh` installs all of them.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

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


def require_node(folder: Path, package: str) -> str:
    """The path of Node 20 or newer, with `package` installed in `folder`'s node_modules (from
    its package-lock.json), else fail saying how to install them."""
    found = require_tool("node", "nodejs")
    version = subprocess.run([found, "--version"], capture_output=True, text=True).stdout
    if int(version.lstrip("v").split(".")[0]) < 20:
        pytest.fail(f"node {version.strip()} is older than 20: {INSTALL_HINT}", pytrace=False)
    if not (folder / "node_modules" / package / "package.json").is_file():
        where = folder.relative_to(Path(__file__).resolve().parents[2])
        pytest.fail(
            f"{where}/node_modules has no {package} package (npm ci --prefix {where}): "
            f"{INSTALL_HINT}",
            pytrace=False,
        )
    return found
