"""mkdocs hook: the settings reference, rendered from the `Settings` class at build time.

A page holding `<!-- settings-reference -->` gets a table of every field of the pydantic-settings
class, with the flag as the CLI builds it (`lingshu_server.cli.build_parser`), the `LINGSHU_*`
variable, the type, the default and the field's description; `<!-- demo-defaults -->` gets what
`lingshu-server demo` changes. Nothing is written by hand, so the page cannot drift from the code.
"""

from __future__ import annotations

import argparse
import sys
import types
import typing
from pathlib import Path
from typing import Any

SERVER = Path(__file__).resolve().parents[2] / "server"
PLACEHOLDER = "<!-- settings-reference -->"
DEMO_PLACEHOLDER = "<!-- demo-defaults -->"


def settings_class() -> type:
    if str(SERVER) not in sys.path:  # document this checkout, whatever else is installed
        sys.path.insert(0, str(SERVER))
    from lingshu_server.core.settings import Settings

    return Settings


def cli_flags() -> dict[str, argparse.Action]:
    """Each setting's argparse action, as `lingshu-server` itself builds it."""
    settings_class()
    from lingshu_server.cli import build_parser

    return {action.dest: action for action in build_parser()._actions}


def type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        names = [type_name(a) for a in args if a is not type(None)]
        return " or ".join(names) + (" (optional)" if type(None) in args else "")
    if origin is typing.Literal:
        return "one of " + ", ".join(f"`{a}`" for a in args)
    if origin is list:
        return f"list of {type_name(args[0])}" if args else "list"
    if origin is dict:
        return "JSON object"
    if annotation is Path:
        return "path"
    if annotation is Any:
        return "any"
    return getattr(annotation, "__name__", str(annotation))


def value_text(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, list | tuple) and not value:
        return "none"
    if isinstance(value, list | tuple):
        return ", ".join(f"`{v}`" for v in value)
    if isinstance(value, dict):
        return "`{}`" if not value else f"`{value}`"
    if isinstance(value, str) and not value:
        return '`""`'
    return f"`{value}`"


def cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def flag_text(action: argparse.Action) -> str:
    metavar = f" {action.metavar}" if action.metavar and action.nargs is None else ""
    if action.nargs == "+":
        metavar = f" {action.metavar or 'VALUE'}..."
    if action.choices and not isinstance(action, argparse.BooleanOptionalAction):
        metavar = ""  # the type column lists them
    return " / ".join(f"`{option}{metavar}`" for option in action.option_strings)


def render_settings() -> str:
    settings = settings_class()
    prefix = settings.model_config.get("env_prefix", "")
    flags = cli_flags()
    rows = [
        "| flag | environment variable | type | default | meaning |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, field in settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        rows.append(
            f"| {flag_text(flags[name])} | `{prefix}{name.upper()}` "
            f"| {cell(type_name(field.annotation))} | {cell(value_text(default))} "
            f"| {cell(field.description or '')} |"
        )
    return "\n".join(rows) + "\n"


def render_demo_defaults() -> str:
    settings_class()
    from lingshu_server.cli import DEMO_DEFAULTS

    flags = cli_flags()
    rows = ["| flag | with `demo` |", "| --- | --- |"]
    for name, value in DEMO_DEFAULTS.items():
        rows.append(f"| `{flags[name].option_strings[0]}` | {value_text(value)} |")
    return "\n".join(rows) + "\n"


def on_page_markdown(markdown: str, **_: Any) -> str:
    if PLACEHOLDER in markdown:
        markdown = markdown.replace(PLACEHOLDER, render_settings())
    if DEMO_PLACEHOLDER in markdown:
        markdown = markdown.replace(DEMO_PLACEHOLDER, render_demo_defaults())
    return markdown
