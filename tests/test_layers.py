"""The package's layers are a contract the lint step checks (import-linter, pyproject.toml):
each folder imports only the folders below it, nothing below the HTTP layer imports the web
framework, only engine/ imports vLLM, only storage/ speaks to the database. These tests prove
the check bites: a copy of the package with one wrong import fails it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(package_root: Path) -> subprocess.CompletedProcess[str]:
    """lint-imports with this project's contracts, on the package found in `package_root`."""
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo", str(ROOT / "pyproject.toml")],
        cwd=package_root,
        env={**os.environ, "PYTHONPATH": str(package_root)},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def package_copy(tmp_path: Path) -> Path:
    shutil.copytree(
        ROOT / "server" / "lingshu_server",
        tmp_path / "lingshu_server",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    return tmp_path


def test_the_package_keeps_its_layers():
    result = lint_imports(ROOT / "server")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 kept, 0 broken" in result.stdout


def add_import(module: Path, line: str) -> None:
    text = module.read_text()
    marker = "from __future__ import annotations\n"
    module.write_text(text.replace(marker, marker + "\n" + line + "\n", 1))


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        # an input decoder that needs the web framework
        ("inputs/dicom.py", "import fastapi", "Below the HTTP layer, no web framework"),
        # a layer importing upward
        ("core/errors.py", "import lingshu_server.services.chat", "Layers"),
        ("services/chat.py", "import lingshu_server.http.routes", "Layers"),
        # siblings that must not know each other
        ("inputs/media.py", "import lingshu_server.engine.interface", "Layers"),
        # a route writing its own SQL
        ("http/routes.py", "import sqlalchemy", "Only storage/ speaks to the database"),
        # vLLM outside engine/
        ("services/runner.py", "import vllm", "Only engine/ imports vLLM"),
        # a service reaching past the Engine protocol
        (
            "services/runner.py",
            "import lingshu_server.engine.vllm_engine",
            "Services see the engine only through its interface",
        ),
    ],
)
def test_a_wrong_import_breaks_the_contract(package_copy, module, line, contract):
    add_import(package_copy / "lingshu_server" / module, line)
    result = lint_imports(package_copy)
    assert result.returncode != 0
    broken = [row for row in result.stdout.splitlines() if row.endswith("BROKEN")]
    assert any(row.startswith(contract) for row in broken), result.stdout


def test_every_error_class_lives_in_core_errors():
    """One place for the API's errors (and their statuses); modules raise, never define them."""
    import importlib
    import pkgutil

    import lingshu_server
    from lingshu_server.core.errors import APIError

    for module in pkgutil.walk_packages(lingshu_server.__path__, "lingshu_server."):
        importlib.import_module(module.name)
    pending, found = [APIError], []
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    assert len(found) > 10
    assert {cls.__module__ for cls in found} == {"lingshu_server.core.errors"}
