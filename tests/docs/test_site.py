"""The documentation site's shape: every page in the navigation exists, the README stays short,
and the references generated from the code cover all of it. (The lint step builds the site with
`mkdocs build --strict`, which checks links and anchors.)"""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path
from types import ModuleType

import yaml

from tests.utils.docs import DOCS, README, ROOT, page

README_MOST_LINES = 200


def nav_pages(entries: list) -> list[str]:
    found: list[str] = []
    for entry in entries:
        values = entry.values() if isinstance(entry, dict) else [entry]
        for value in values:
            found += nav_pages(value) if isinstance(value, list) else [value]
    return found


def mkdocs_config() -> dict:
    # mkdocs.yml uses no custom tags, so the safe loader reads it
    return yaml.safe_load((ROOT / "mkdocs.yml").read_text())


def hook(name: str) -> ModuleType:
    """A hook module of mkdocs.yml, loaded by its path as mkdocs loads it."""
    path = ROOT / "docs" / "hooks" / f"{name}.py"
    assert str(path.relative_to(ROOT)) in mkdocs_config()["hooks"]
    spec = importlib.util.spec_from_file_location(f"docs_hook_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_page_in_the_navigation_exists_and_every_page_is_in_it():
    listed = nav_pages(mkdocs_config()["nav"])
    assert len(listed) == len(set(listed))
    for name in listed:
        assert (DOCS / name).is_file(), name
    written = {str(path.relative_to(DOCS)) for path in DOCS.rglob("*.md")}
    assert written == set(listed)


def test_the_readme_stays_short():
    lines = README.read_text().count("\n")
    assert lines < README_MOST_LINES, f"README.md has {lines} lines: move the detail to docs/"


def test_the_settings_reference_has_every_setting_with_its_flag_and_variable():
    settings_reference = hook("settings_reference")
    table = settings_reference.render_settings()
    settings = settings_reference.settings_class()
    rows = table.splitlines()[2:]
    assert len(rows) == len(settings.model_fields)
    for name, row in zip(settings.model_fields, rows, strict=True):
        flag = "--" + name.replace("_", "-")
        assert row.startswith(f"| `{flag}"), row
        assert f"`LINGSHU_{name.upper()}`" in row
    assert "`--no-playground`" in table  # booleans show both forms, as the CLI takes them
    assert settings_reference.PLACEHOLDER in page("operations/settings.md")


def test_the_error_classes_table_has_every_error_class():
    error_codes = hook("error_codes")
    table = error_codes.render_error_classes()
    classes = error_codes.error_classes()
    assert len(classes) >= 10
    for cls in classes:
        assert f"`{cls.__name__}`" in table
    assert "| 429 Too Many Requests | `rate_limit_error` | `rate_limit_exceeded` | yes |" in table
    assert error_codes.PLACEHOLDER in page("reference/errors.md")


def string_literals(package: Path) -> set[str]:
    found: set[str] = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                found.add(node.value)
    return found


def test_every_code_on_the_error_page_is_one_the_server_uses():
    written = re.findall(r"^\| `([a-z_]+)` \|", page("reference/errors.md"), flags=re.MULTILINE)
    assert len(written) >= 20
    literals = string_literals(ROOT / "server" / "lingshu_server")
    assert [code for code in written if code not in literals] == []


def test_the_route_table_lists_every_route_of_the_openapi_document():
    routes = hook("routes")
    document = routes.openapi_document()
    table = routes.render_routes()
    for path, operations in document["paths"].items():
        for method in operations:
            assert f"| `{method.upper()} {path}` |" in table
    assert "| `POST /v1/chat/completions` |" in table
    assert routes.PLACEHOLDER in page("reference/openapi.md")
