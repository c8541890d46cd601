"""`lingshu-server` command line: flags are generated from the Settings fields."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import types
import typing
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import ValidationError
from pydantic.fields import FieldInfo

from lingshu_server import __version__
from lingshu_server.core.settings import Settings
from lingshu_server.engine.model_check import UnsupportedModelError

# Settings the CPU demo needs (see README): small context, eager mode, little "GPU" memory.
DEMO_DEFAULTS: dict[str, Any] = {
    "max_model_len": 8192,
    "gpu_memory_utilization": 0.2,
    "enforce_eager": True,
    "dtype": "bfloat16",
}

SUBCOMMANDS = ("serve", "demo")


def _unwrap_optional(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _add_field(parser: argparse.ArgumentParser, name: str, field: FieldInfo) -> None:
    flag = "--" + name.replace("_", "-")
    env = "LINGSHU_" + name.upper()
    default = field.get_default(call_default_factory=True)
    help_text = f"{field.description} [env {env}; default: {default}]"
    annotation = _unwrap_optional(field.annotation)
    kwargs: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS, "help": help_text}
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    origin = typing.get_origin(annotation)
    if "metavar" in extra:
        kwargs["metavar"] = extra["metavar"]
    if annotation is bool:
        kwargs["action"] = argparse.BooleanOptionalAction
    elif origin is list:
        kwargs["nargs"] = "+"
        kwargs.setdefault("metavar", "NAME")
    elif origin is Literal:
        kwargs["choices"] = [str(c) for c in typing.get_args(annotation)]
    elif annotation in (int, float):
        kwargs["type"] = annotation
    parser.add_argument(flag, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lingshu-server",
        description="OpenAI-compatible server for the Lingshu medical multimodal models on vLLM. "
        "`lingshu-server [serve] --model DIR` serves a checkpoint; `lingshu-server demo` builds "
        "and serves a tiny random-weight model on the CPU (its answers are noise). Every flag "
        "can also be set with the LINGSHU_* environment variable shown.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "command",
        nargs="?",
        choices=SUBCOMMANDS,
        default="serve",
        help="serve: serve --model; demo: build (once, cached) and serve the CPU demo model",
    )
    parser.add_argument("--version", action="version", version=f"lingshu-server {__version__}")
    parser.add_argument(
        "--demo-build-only",
        action="store_true",
        help="With `demo`: build the demo checkpoint, print its directory and exit.",
    )
    parser.add_argument(
        "--light",
        action="store_true",
        help="With `demo`: the demo checkpoint with a light vision tower (no full-attention "
        "block): the engine's share of the CPU shrinks as a GPU's would, for benchmarks.",
    )
    for name, field in Settings.model_fields.items():
        _add_field(parser, name, field)
    return parser


def _demo_model(light: bool) -> str:
    from lingshu_server.demo_model import ensure_demo_model, ensure_light_demo_model

    return str(ensure_light_demo_model() if light else ensure_demo_model())


def demo_settings(cli_values: dict[str, Any], light: bool = False) -> dict[str, Any]:
    values = {k: v for k, v in DEMO_DEFAULTS.items() if f"LINGSHU_{k.upper()}" not in os.environ}
    values.update(cli_values)
    values["model"] = _demo_model(light)
    values.setdefault("served_model_name", ["lingshu-demo"])
    # vLLM's CPU backend reserves this many GiB for the KV cache; the demo model needs little.
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    return values


def parse_command(argv: Sequence[str] | None) -> tuple[str, dict[str, Any], bool, bool]:
    """`lingshu-server ARGV`: the command, the settings' values, `--demo-build-only`, `--light`."""
    args = vars(build_parser().parse_args(argv))
    command, build_only, light = args.pop("command"), args.pop("demo_build_only"), args.pop("light")
    return command, args, build_only, light


def command_settings(argv: Sequence[str]) -> Settings:
    """The settings `lingshu-server ARGV` serves with (the demo's defaults for `demo`)."""
    command, args, _, light = parse_command(argv)
    return Settings(**(demo_settings(args, light) if command == "demo" else args))


def main(argv: Sequence[str] | None = None) -> int:
    command, args, build_only, light = parse_command(argv)
    logging.basicConfig(
        level=args.get("log_level", "info").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        if command == "demo":
            if build_only:
                sys.stdout.write(f"{_demo_model(light)}\n")
                return 0
            args = demo_settings(args, light)
        settings = Settings(**args)
    except ValidationError as exc:
        sys.stderr.write(f"lingshu-server: invalid settings:\n{exc}\n")
        return 2
    if not settings.model:
        sys.stderr.write(
            "lingshu-server: --model (or LINGSHU_MODEL) is required; "
            "try `lingshu-server demo` for the CPU demo model\n"
        )
        return 2

    from lingshu_server.core.logs import configure_logging
    from lingshu_server.engine.engine_args import EngineArgsError
    from lingshu_server.engine.lora import LoraModuleError
    from lingshu_server.inputs.pacs_auth import PacsCredentialsError
    from lingshu_server.serve import StartupRefused, serve

    configure_logging(settings.log_level, settings.log_format)
    try:
        return serve(settings)
    except (
        UnsupportedModelError,
        StartupRefused,
        PacsCredentialsError,
        EngineArgsError,
        LoraModuleError,
    ) as exc:
        sys.stderr.write(f"lingshu-server: {exc}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
