"""One more server for the engine knobs and LoRA: the guide's own command (a few typed flags,
--engine-args and a LoRA adapter made with PEFT), started once for these tests."""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lingshu_server.demo_model import ensure_demo_model
from tests.utils.docs import fenced_blocks, page
from tests.utils.lora import build_adapter
from tests.utils.server import RunningServer, start_demo_server

PAGE = "guides/lora-and-engine-knobs.md"
ADAPTER = "chest-xray-lora"


@dataclass
class KnobsServer:
    server: RunningServer
    workdir: Path  # the command's working directory, holding the adapter
    adapter_dir: Path


def examples(language: str) -> list[str]:
    return fenced_blocks(language, page(PAGE))


def guide_command() -> list[str]:
    """The guide's server command as arguments after `lingshu-server`."""
    command = examples("shell")[0]
    words = shlex.split(command.replace("\\\n", " "))
    assert words[0] == "lingshu-server"
    return words[1:]


@pytest.fixture(scope="package")
def adapter_workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding the guide's adapter, as a fine-tuning run would leave it."""
    workdir = tmp_path_factory.mktemp("knobs")
    build_adapter(ensure_demo_model(), workdir / ADAPTER, rank=8)
    return workdir


@pytest.fixture(scope="package")
def knobs(adapter_workdir: Path) -> Iterator[KnobsServer]:
    args = guide_command()
    assert args[0] == "demo"
    server = start_demo_server(adapter_workdir / "server.log", *args[1:], cwd=adapter_workdir)
    yield KnobsServer(server, adapter_workdir, adapter_workdir / ADAPTER)
    server.stop()
