"""The engine knobs and LoRA guide's examples, run as written: the server command is the one the
`knobs` server runs (conftest), then its curl and SDK examples against it."""

from __future__ import annotations

import json
import sys

import pytest

from tests.engine_knobs.conftest import ADAPTER, KnobsServer, examples, guide_command
from tests.utils.docs import on_server, run_bash, run_example
from tests.utils.images import encode, gradient_image, tokens_for


def test_the_page_has_a_command_a_curl_and_an_sdk_example():
    shell, py = examples("shell"), examples("py")
    assert len(shell) == 2 and len(py) == 1
    assert f"--lora-modules {ADAPTER}=./{ADAPTER}" in shell[0]
    assert "--engine-args" in shell[0]
    assert f'"model": "{ADAPTER}"' in shell[1]
    assert guide_command()[0] == "demo"


@pytest.mark.e2e  # the README's examples against the `knobs` server (LoRA, knobs)
def test_curl_asks_the_adapter_about_an_image(knobs: KnobsServer):
    (knobs.workdir / "chest_xray.png").write_bytes(
        encode(gradient_image(512, 448, mode="L"), "PNG")
    )
    script = on_server(examples("shell")[1], knobs.server.port)
    answer = json.loads(run_bash(script, knobs.workdir))
    assert answer["object"] == "chat.completion"
    assert answer["model"] == ADAPTER
    assert answer["usage"]["prompt_tokens"] > tokens_for(512, 448)


@pytest.mark.e2e  # the README's examples against the `knobs` server (LoRA, knobs)
def test_sdk_lists_models_and_answers_with_both(knobs: KnobsServer):
    code = on_server(examples("py")[0], knobs.server.port)
    lines = run_example([sys.executable, "-c", code], knobs.workdir).splitlines()
    assert lines[:2] == ["lingshu-demo None", f"{ADAPTER} lingshu-demo"]
    base, adapted = lines[2:4]
    assert base.startswith("lingshu-demo ") and adapted.startswith(f"{ADAPTER} ")
    assert base.split(" ", 1)[1] != adapted.split(" ", 1)[1]  # the adapter answers otherwise
