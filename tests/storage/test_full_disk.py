"""A full disk under the database: a request that would store is refused (507, or 503 with
Retry-After; never a 500 and never an answer that says it was stored), what was kept stays
readable, requests that store nothing are served, and storing works again once there is room,
all without a restart.

The disk is real: the server runs in a mount namespace of its own (as `unshare -rm`) with a
small tmpfs on its state folder, and the test fills it through /proc/PID/root.
"""

from __future__ import annotations

import errno
import io
import secrets
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.utils.errors import assert_openai_error
from tests.utils.fake_process import Launcher, Tmpfs
from tests.utils.images import data_url, image_data_url
from tests.utils.stored_responses import (
    FINISHED,
    RESPONSES,
    ResponseStream,
    retry_after_s,
    turn_body,
    user_turn,
)

pytestmark = [pytest.mark.e2e, pytest.mark.beside_engine]

DISK_BYTES = 4 * 1024 * 1024


def noise_png(side: int) -> str:
    """A PNG data URL that no encoder shrinks (random pixels): about 3 * side**2 bytes."""
    pixels = np.random.default_rng(secrets.randbits(32)).integers(0, 256, (side, side, 3))
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8), "RGB").save(buffer, format="PNG")
    return data_url(buffer.getvalue())


def fill(folder: Path) -> Path:
    """Write a file into `folder` until its disk has no byte left."""
    filler = folder / "filler"
    with filler.open("wb", buffering=0) as out:
        for chunk in (1 << 20, 1 << 16, 1 << 12, 1):
            try:
                while True:
                    out.write(b"\0" * chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    return filler


def refused_for_space(response: httpx.Response) -> None:
    assert response.status_code in (507, 503), response.text
    assert_openai_error(response, response.status_code)
    if response.status_code == 503:
        assert retry_after_s(response) >= 1


def test_a_full_disk_refuses_to_store_and_serves_on(
    launcher: Launcher, tmp_path_factory: pytest.TempPathFactory
) -> None:
    folder = tmp_path_factory.mktemp("full-disk")
    state_dir = folder / "state"
    server = launcher.start(
        folder / "server.log",
        "--store-responses",
        "--state-dir",
        str(state_dir),
        tmpfs=Tmpfs(state_dir, DISK_BYTES),
    )
    disk = Path(f"/proc/{server.process.pid}/root") / state_dir.relative_to("/")
    assert (disk / "lingshu.db").exists() and not (state_dir / "lingshu.db").exists()
    big = noise_png(300)  # about 270 kB, more than the database has written so far
    try:
        with httpx.Client(base_url=server.base_url, timeout=60) as client:
            kept = client.post(
                RESPONSES, json=turn_body(user_turn("Before", image_data_url(56, 56)))
            )
            assert kept.status_code == 200, kept.text

            filler = fill(disk)
            refused_for_space(client.post(RESPONSES, json=turn_body(user_turn("Full", big))))
            stream = ResponseStream(server.base_url, turn_body(user_turn("Full, streamed", big)))
            stream.join()
            assert stream.kinds[-2:] == ["error", "response.failed"], stream.kinds
            assert not set(FINISHED) & set(stream.kinds)
            assert stream.events[-2]["code"] in ("storage_full", "storage_unavailable")

            # What was kept is readable; what stores nothing is served.
            assert client.get(f"{RESPONSES}/{kept.json()['id']}").json() == kept.json()
            plain = client.post(
                RESPONSES, json={**turn_body(user_turn("No store", big)), "store": False}
            )
            assert plain.status_code == 200, plain.text
            assert client.get("/health").status_code == 200

            filler.unlink()
            again = client.post(RESPONSES, json=turn_body(user_turn("Room again", big)))
            assert again.status_code == 200, again.text
            stored = client.get(f"{RESPONSES}/{again.json()['id']}/input_items")
            assert stored.json()["data"][0]["content"][1]["image_url"] == big
        assert "Traceback" not in server.log_text()
    finally:
        server.process.kill()
