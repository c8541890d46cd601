"""The chart's multi-node path for real, on one machine: the leader and worker commands of the
rendered LeaderWorkerSet as two process groups, a real Ray cluster on loopback addresses, and
vLLM's Ray executor with pipeline parallel 2 on the demo model.

Where the engine's platform supports Ray (CUDA), the group answers a chat request with an image
through the leader. vLLM's CPU platform does not (`CpuPlatform.ray_device_key` is empty and
`initialize_ray_cluster` raises "current platform cpu does not support ray."): there the test
checks that the server got as far as vLLM's Ray executor on the formed cluster and stopped with
exactly that error, then that a worker leaves when its leader is gone."""

from __future__ import annotations

import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.multinode.group import LEADER_IP, Group, Pod, render_group
from tests.utils.images import image_data_url, image_part

# A real Ray group and vLLM's Ray executor: end to end by nature.
# e2e (real processes, minutes), but no engine of the suite's: beside the engine tests
pytestmark = [pytest.mark.e2e, pytest.mark.beside_engine]

CPU_RAY_ERROR = "ValueError: current platform cpu does not support ray."
SHORT_FORMATION_S = 30  # the least the chart's values schema allows


@pytest.fixture
def group_factory():
    groups: list[Group] = []

    def make(formation_timeout: int) -> Group:
        group, _ = render_group(formation_timeout)
        groups.append(group)
        return group

    yield make
    for group in groups:
        group.close()


def platform_ray_device_key() -> str:
    """vLLM's device key for Ray on this machine's platform ("" where it has none)."""
    code = "from vllm.platforms import current_platform as p; print('key=' + p.ray_device_key)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    )
    return result.stdout.strip().splitlines()[-1].removeprefix("key=")


def test_leader_gives_up_when_the_group_does_not_form(group_factory) -> None:
    group = group_factory(formation_timeout=SHORT_FORMATION_S)
    leader = group.start("leader")  # no worker ever joins
    leader.wait_for_line("1 of 2 Ray nodes of the group alive", timeout=120)
    assert leader.process.wait(180) == 1, leader.text()
    assert (
        f"the group did not form: not all 2 Ray nodes joined within {SHORT_FORMATION_S} s"
        in leader.text()
    )
    assert "starting the server" not in leader.text()


def test_group_forms_runs_the_ray_executor_and_workers_leave_with_their_leader(
    group_factory,
) -> None:
    group = group_factory(formation_timeout=240)
    leader = group.start("leader")
    leader.wait_for_line("1 of 2 Ray nodes of the group alive", timeout=120)  # it waits
    worker = group.start("worker")
    leader.wait_for_line("all 2 Ray nodes of the group joined: starting the server", timeout=180)
    assert group.probe(group.worker_container["livenessProbe"]) == 0, worker.text()

    served = serve_or_stop(group, leader)
    if served:
        answer_an_image_through_the_leader(group)
    else:
        text = leader.text()
        assert CPU_RAY_ERROR in text, text[-4000:]
        assert leader.process.returncode == 1, "the server exits non-zero when its engine fails"
        assert "initialize_ray_cluster" in text and "ray_executor" in text  # vLLM's Ray executor
        assert worker.process.poll() is None, "the worker stays while its leader's Ray head runs"

    group.kill(leader)  # the leader's container is gone, Ray head and all
    with ThreadPoolExecutor() as pool:  # while the worker notices (RAY_HEAD_LOST_S, group.py)
        liveness = pool.submit(group.probe, group.worker_container["livenessProbe"])
        ray_key = None if served else pool.submit(platform_ray_device_key)
        assert worker.process.wait(180) != 0, worker.text()
        assert "the Ray worker stopped" in worker.text()
        assert liveness.result() != 0, "the worker's liveness probe passes without a leader"
        if ray_key is not None:
            assert ray_key.result() == "", "the platform supports Ray, yet the engine refused it"


def serve_or_stop(group: Group, leader: Pod, timeout: float = 420) -> bool:
    """True once the leader's server is healthy; False if its process ended first."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=5) as http:
        while time.monotonic() < deadline:
            try:
                if http.get(f"http://{LEADER_IP}:{group.port}/health").status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            try:
                leader.process.wait(1)
                return False
            except subprocess.TimeoutExpired:
                continue
    raise AssertionError(f"the leader neither served nor stopped:\n{leader.text()[-4000:]}")


def answer_an_image_through_the_leader(group: Group) -> None:
    body = {
        "model": "lingshu-demo",
        "messages": [
            {
                "role": "user",
                "content": [
                    image_part(image_data_url(224, 224)),
                    {"type": "text", "text": "Findings?"},
                ],
            }
        ],
        "max_tokens": 8,
    }
    response = httpx.post(
        f"http://{LEADER_IP}:{group.port}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {group.key}"},
        timeout=300,
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["choices"][0]["message"]["content"]
    assert answer["usage"]["prompt_tokens"] > 64  # the image's tokens reached the engine
