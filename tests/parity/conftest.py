"""Parity with the model card's recipe: two demo checkpoints, each served and each loaded by
transformers as the reference. Both run in float32 so greedy tokens can be compared exactly.

- the demo checkpoint (older `min_pixels`/`max_pixels` form, Qwen2.5-VL's 4..16384 tokens),
  served by the session server;
- the same weights with current transformers' `size` form and a small `longest_edge` (512
  tokens), served here, so images beyond it take the processor's second resize.
`small_server` is tiered: for an e2e test (test_model_card_parity) a server process of its own
on that checkpoint, for any other test (the preview, which never calls the engine) the same
command in process on the fake engine.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lingshu_server.demo_model import derive_demo_model, ensure_demo_model
from tests.utils.in_process import InProcessServer, start_fake_checkpoint_server
from tests.utils.reference import ModelCardReference
from tests.utils.server import RunningServer, start_checkpoint_server
from tests.utils.tiers import pick

SMALL_MAX_PIXELS = 512 * 28 * 28  # 401408, as in the issue that found the double resize


@pytest.fixture(scope="package")
def small_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("size-form-checkpoint")
    return derive_demo_model(target, min_pixels=4 * 28 * 28, max_pixels=SMALL_MAX_PIXELS)


@pytest.fixture(scope="package")
def _real_small_server(
    tmp_path_factory: pytest.TempPathFactory, small_checkpoint: Path
) -> Iterator[RunningServer]:
    log_path = tmp_path_factory.mktemp("small-server") / "server.log"
    running = start_checkpoint_server(log_path, small_checkpoint, "--dtype", "float32")
    yield running
    running.stop()


@pytest.fixture(scope="package")
def _fake_small_server(
    tmp_path_factory: pytest.TempPathFactory, small_checkpoint: Path
) -> Iterator[InProcessServer]:
    log_path = tmp_path_factory.mktemp("small-server-fake") / "server.log"
    running = start_fake_checkpoint_server(log_path, small_checkpoint, "--dtype", "float32")
    yield running
    running.stop()


@pytest.fixture
def small_server(request: pytest.FixtureRequest) -> RunningServer | InProcessServer:
    return pick(request, "_real_small_server", "_fake_small_server")


@pytest.fixture(scope="package")
def demo_reference() -> ModelCardReference:
    return ModelCardReference(ensure_demo_model())


@pytest.fixture(scope="package")
def small_reference(small_checkpoint: Path) -> ModelCardReference:
    return ModelCardReference(small_checkpoint)
