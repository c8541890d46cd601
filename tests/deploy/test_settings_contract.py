"""Every setting and flag the deploy files use (chart, Compose) is a real server setting."""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys

import pytest

from lingshu_server.core.settings import Settings
from tests.deploy.files import (
    CASES,
    SETTINGS_FIELDS,
    compose,
    config_env,
    final_stage_env,
    final_stage_value,
    manifests,
    pod_specs,
    rendered_case,
    values_for,
)


def lingshu_env_names() -> dict[str, set[str]]:
    """Every LINGSHU_* variable name the chart renders or a deploy file sets -> where."""
    names: dict[str, set[str]] = {}
    for case in CASES:
        docs = manifests(rendered_case(case))
        for name in config_env(docs):
            names.setdefault(name, set()).add(f"{case} ConfigMap")
        for where, spec in pod_specs(docs):
            for container in spec["containers"] + spec.get("initContainers", []):
                for variable in container.get("env", []):
                    names.setdefault(variable["name"], set()).add(f"{case} {where}")
    for service, definition in compose()["services"].items():
        for name in definition.get("environment", {}):
            names.setdefault(name, set()).add(f"compose {service}")
    for name in final_stage_env():
        names.setdefault(name, set()).add("Dockerfile")
    return {name: where for name, where in names.items() if name.startswith("LINGSHU_")}


def test_every_lingshu_variable_is_a_server_setting() -> None:
    names = lingshu_env_names()
    unknown = {
        name: sorted(where)
        for name, where in names.items()
        if name.removeprefix("LINGSHU_").lower() not in SETTINGS_FIELDS
    }
    assert not unknown, f"LINGSHU_* variables that are no Settings field: {unknown}"
    assert {"LINGSHU_MODEL", "LINGSHU_HOST", "LINGSHU_API_KEY_FILE"} <= set(names)


@pytest.mark.parametrize("case", CASES)
def test_configmap_is_a_valid_server_configuration(
    case: str, monkeypatch: pytest.MonkeyPatch
) -> None:

    for name in list(os.environ):
        if name.startswith("LINGSHU_"):
            monkeypatch.delenv(name)
    env = config_env(manifests(rendered_case(case)))
    for name, value in env.items():
        if name.startswith("LINGSHU_"):
            monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.host == "0.0.0.0" and settings.port == 8000
    assert str(settings.model).startswith("/models/")
    assert settings.served_model_name == values_for(case).get("model", {}).get(
        "servedModelName", ["Lingshu-7B"]
    )


def test_compose_environment_is_a_valid_server_configuration(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in list(os.environ):
        if name.startswith("LINGSHU_"):
            monkeypatch.delenv(name)
    # The container's environment: the image's ENV, then Compose's (with nothing set in the
    # shell, each ${NAME:-default} is its default).
    environment = {**final_stage_env(), **compose()["services"]["lingshu-server"]["environment"]}
    for name, value in environment.items():
        if name.startswith("LINGSHU_"):
            monkeypatch.setenv(name, re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(value)))
    settings = Settings()
    assert settings.model == "/models/Lingshu-7B"
    assert settings.served_model_name == ["Lingshu-7B"]
    assert settings.host == "0.0.0.0" and settings.port == 8000


@functools.cache
def help_text() -> str:
    result = subprocess.run(
        [sys.executable, "-m", "lingshu_server", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return result.stdout


def lingshu_invocations() -> list[tuple[str, list[str]]]:
    """(where, arguments) of every `lingshu-server ...` command in the deploy files."""
    found = []
    texts = [
        (
            "Dockerfile",
            " ".join(
                json.loads(final_stage_value("ENTRYPOINT")) + json.loads(final_stage_value("CMD"))
            ),
        )
    ]
    for case in CASES:
        for where, spec in pod_specs(manifests(rendered_case(case))):
            for container in spec["containers"] + spec.get("initContainers", []):
                command = container.get("command", []) + container.get("args", [])
                texts.append((f"{case} {where}", " ".join(command)))
    for service, definition in compose()["services"].items():
        command = definition.get("command", [])
        texts.append(
            (f"compose {service}", " ".join(command) if isinstance(command, list) else command)
        )
    for where, text in texts:
        for match in re.finditer(r"(?:^|[\s;&|])lingshu-server((?:\s+[^\s;&|]+)*)", text):
            found.append((where, match.group(1).split()))
    return found


def test_every_command_line_flag_is_in_lingshu_server_help() -> None:
    help_flags = set(re.findall(r"--[a-z][a-z0-9-]*", help_text()))
    invocations = lingshu_invocations()
    assert invocations, "no deploy file runs lingshu-server"
    for where, arguments in invocations:
        for argument in arguments:
            if argument.startswith("--"):
                assert argument.split("=")[0] in help_flags, (where, argument)
            elif argument in ("serve", "demo"):
                assert "{serve,demo}" in help_text()
