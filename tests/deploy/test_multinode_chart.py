"""Multi-node mode as the LeaderWorkerSet controller and the kubelet will treat it: the names and
DNS the group needs to form, the leader's bounded wait, the workers' probes, SIGTERM to scripts
that run as PID 1, and RDMA only when asked."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import textwrap
import time
from pathlib import Path
from typing import Any

import helm_python
import jsonschema
import pytest

from tests.deploy.files import (
    NAMESPACE,
    chart_values,
    config_env,
    lws_templates,
    manifests,
    multinode_values,
    of_kind,
    one,
    render,
    rendered_case,
    values_schema,
)
from tests.utils.tools import require_tool

# LeaderWorkerSet controller facts (sigs.k8s.io/lws): the set's own name labels its pods, and
# reconcileHeadlessServices creates a headless Service of that name only if none exists
# (pkg/utils/controller CreateHeadlessServiceIfNotExists); LWS_LEADER_ADDRESS is
# <lws>-<group>.<subdomain>.<namespace> with subdomain = the set's name (pkg/utils/pod).
LWS_NAME_LABEL = "leaderworkerset.sigs.k8s.io/name"


def controller_services(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The Services the cluster ends up with: the chart's, plus the LWS controller's headless one
    when the chart left its name free."""
    services = list(of_kind(docs, "Service"))
    for lws in of_kind(docs, "LeaderWorkerSet"):
        name = lws["metadata"]["name"]
        if not any(s["metadata"]["name"] == name for s in services):
            services.append(
                {
                    "metadata": {"name": name, "labels": {LWS_NAME_LABEL: name}},
                    "spec": {
                        "clusterIP": "None",
                        "selector": {LWS_NAME_LABEL: name},
                        "publishNotReadyAddresses": True,
                    },
                }
            )
    return services


def leader_pod_labels(lws: dict[str, Any], group: int) -> dict[str, str]:
    """Labels of group `group`'s leader pod: the template's plus the controller's."""
    leader, _ = lws_templates(lws)
    return {**leader["metadata"]["labels"], LWS_NAME_LABEL: lws["metadata"]["name"]}


def resolves(address: str, services: list[dict[str, Any]], lws: dict[str, Any]) -> bool:
    """Whether a pod DNS name <hostname>.<subdomain>.<namespace> has a record: a headless
    Service named <subdomain> in the namespace selects a pod with that hostname."""
    hostname, subdomain, namespace = address.split(".")
    name = lws["metadata"]["name"]
    if namespace != NAMESPACE or not hostname.startswith(f"{name}-"):
        return False
    group = int(hostname.removeprefix(f"{name}-"))
    labels = leader_pod_labels(lws, group)
    return any(
        s["metadata"]["name"] == subdomain
        and s["spec"].get("clusterIP") == "None"
        and s["spec"].get("publishNotReadyAddresses")  # workers join before the leader is ready
        and s["spec"]["selector"].items() <= labels.items()
        for s in services
    )


def test_leader_address_resolves_through_the_controllers_headless_service() -> None:
    docs = manifests(rendered_case("multinode"))
    lws = one(docs, "LeaderWorkerSet")
    name = lws["metadata"]["name"]
    assert name not in {s["metadata"]["name"] for s in of_kind(docs, "Service")}, (
        "a chart Service named like the LeaderWorkerSet stops the controller from creating the "
        "headless Service that LWS_LEADER_ADDRESS needs"
    )
    services = controller_services(docs)
    for group in range(3):
        assert resolves(f"{name}-{group}.{name}.{NAMESPACE}", services, lws)


def test_clients_reach_the_leaders_through_the_leader_service() -> None:
    docs = manifests(render(multinode_values(ingress={"enabled": True}, keda={"enabled": True})))
    lws = one(docs, "LeaderWorkerSet")
    (client,) = of_kind(docs, "Service")
    assert client["metadata"]["name"] == f"{lws['metadata']['name']}-leader"
    assert client["spec"].get("clusterIP") != "None"
    leader, worker = lws_templates(lws)
    selector = client["spec"]["selector"]
    assert selector.items() <= leader["metadata"]["labels"].items()
    assert not selector.items() <= worker["metadata"]["labels"].items()
    backends = {
        path["backend"]["service"]["name"]
        for rule in one(docs, "Ingress")["spec"]["rules"]
        for path in rule["http"]["paths"]
    }
    assert backends == {client["metadata"]["name"]}
    for trigger in one(docs, "ScaledObject")["spec"]["triggers"]:
        assert f'service="{client["metadata"]["name"]}"' in trigger["metadata"]["query"]
    (test_pod,) = of_kind(docs, "Pod")
    url = next(e["value"] for e in test_pod["spec"]["containers"][0]["env"] if "URL" in e["name"])
    assert url.startswith(f"http://{client['metadata']['name']}:")


def test_old_layout_would_not_resolve() -> None:
    """The check above is not vacuous: a client Service named like the set breaks the DNS."""
    docs = manifests(rendered_case("multinode"))
    lws = one(docs, "LeaderWorkerSet")
    name = lws["metadata"]["name"]
    (client,) = of_kind(docs, "Service")
    client["metadata"]["name"] = name
    assert not resolves(f"{name}-0.{name}.{NAMESPACE}", controller_services(docs), lws)


@pytest.mark.parametrize(
    ("fullname", "replicas", "fits"),
    [
        ("l" * 49, 10, True),  # worker StatefulSet "<49>-9" is 51 characters
        ("l" * 50, 10, True),  # 52: the longest StatefulSet name whose revision label fits
        ("l" * 50, 11, False),  # group 10: "<50>-10" is 53
        ("l" * 52, 1, False),
        ("1lingshu", 1, False),  # a Service name must start with a letter (DNS-1035)
    ],
)
def test_lws_name_fits_dns_and_statefulset_limits(fullname: str, replicas: int, fits: bool) -> None:
    values = multinode_values(fullnameOverride=fullname, replicaCount=replicas)
    if fits:
        lws = one(manifests(render(values)), "LeaderWorkerSet")
        worker_set = f"{lws['metadata']['name']}-{replicas - 1}"
        assert len(worker_set) + len("-") + 10 <= 63  # controller-revision-hash label value
        assert len(f"{worker_set}-{values['multiNode']['nodes'] - 1}") <= 63  # pod hostname
    else:
        with pytest.raises(helm_python.HelmError, match="LeaderWorkerSet name"):
            render(values)


def leader_and_worker(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    leader, worker = lws_templates(one(manifests(render(values)), "LeaderWorkerSet"))
    return leader["spec"]["containers"][0], worker["spec"]["containers"][0]


def test_leader_waits_for_the_group_within_the_startup_budget() -> None:
    values = chart_values(multinode_values())
    leader, worker = leader_and_worker(multinode_values())
    timeout = values["multiNode"]["groupFormationTimeoutSeconds"]
    startup = leader["startupProbe"]
    assert timeout < startup["periodSeconds"] * startup["failureThreshold"]
    script = leader["command"][-1]
    assert f"deadline=$((SECONDS + {timeout}))" in script
    assert "exit 1" in script.split("exec lingshu-server serve")[0]
    with pytest.raises(helm_python.HelmError, match="groupFormationTimeoutSeconds"):
        render(multinode_values(multiNode={"groupFormationTimeoutSeconds": 2400}))


def test_workers_probe_the_ray_head() -> None:
    values = chart_values(multinode_values())
    _, worker = leader_and_worker(multinode_values())
    port = values["multiNode"]["rayPort"]
    for probe in ("startupProbe", "livenessProbe"):
        command = worker[probe]["exec"]["command"]
        assert command[:2] == ["bash", "-c"], probe
        assert f'ray health-check --address "${{LWS_LEADER_ADDRESS}}:{port}"' in command[2]
    startup = worker["startupProbe"]
    timeout = values["multiNode"]["groupFormationTimeoutSeconds"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= timeout
    assert "readinessProbe" not in worker  # workers are in no Service


def test_lws_rollout_surges_a_group() -> None:
    lws = one(manifests(rendered_case("multinode")), "LeaderWorkerSet")
    rollout = lws["spec"]["rolloutStrategy"]
    assert rollout["type"] == "RollingUpdate"
    assert rollout["rollingUpdateConfiguration"] == {"maxSurge": 1, "maxUnavailable": 0}
    both_zero = chart_values(
        multinode_values(multiNode={"rolloutStrategy": {"maxSurge": 0, "maxUnavailable": 0}})
    )
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(values_schema()).validate(both_zero)


def test_network_is_tcp_unless_rdma_is_asked_for() -> None:
    for container in leader_and_worker(multinode_values()):
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["NCCL_IB_DISABLE"] == "1" and env["NCCL_SOCKET_IFNAME"] == "eth0"
        assert env["GLOO_SOCKET_IFNAME"] == "eth0"
        assert "add" not in container["securityContext"]["capabilities"]
    rdma = {"network": {"rdma": {"enabled": True, "resources": {"rdma/ib": 1}}}}
    for container in leader_and_worker(multinode_values(multiNode=rdma)):
        assert "NCCL_IB_DISABLE" not in {e["name"] for e in container["env"]}
        capabilities = container["securityContext"]["capabilities"]
        assert capabilities == {"drop": ["ALL"], "add": ["IPC_LOCK"]}
        assert container["resources"]["requests"]["rdma/ib"] == "1"
        assert container["resources"]["limits"]["rdma/ib"] == "1"
    with pytest.raises(helm_python.HelmError, match="rdma.resources"):
        render(multinode_values(multiNode={"network": {"rdma": {"enabled": True}}}))


# ---------- the scripts as PID 1 ----------


def fake_bin(root: Path, programs: dict[str, str]) -> Path:
    """Executables standing in for ray / python3 where the test needs no real Ray."""
    bin_dir = root / "bin"
    bin_dir.mkdir()
    for name, body in programs.items():
        path = bin_dir / name
        path.write_text("#!/bin/bash\n" + textwrap.dedent(body))
        path.chmod(0o755)
    return bin_dir


def run_as_pid_1(script: str, env: dict[str, str], log: Path) -> subprocess.Popen:
    """bash -c SCRIPT as PID 1 of a new PID namespace, as a container's command runs."""
    return subprocess.Popen(
        [require_tool("unshare", "util-linux"), "--pid", "--fork", "bash", "-c", script],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def namespace_init(outer: subprocess.Popen) -> int:
    """Host PID of the namespace's PID 1 (unshare's forked child)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        children = Path(f"/proc/{outer.pid}/task/{outer.pid}/children").read_text().split()
        if children:
            return int(children[0])
        time.sleep(0.1)
    raise AssertionError("unshare started no child")


def wait_for_text(path: Path, text: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while text not in path.read_text(errors="replace"):
        assert process.poll() is None, path.read_text(errors="replace")
        assert time.monotonic() < deadline, path.read_text(errors="replace")
        time.sleep(0.2)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def test_worker_stops_ray_and_exits_on_sigterm_as_pid_1(tmp_path: Path) -> None:
    _, worker = leader_and_worker(multinode_values())
    # A Ray head stand-in: the worker's wait only needs its port to accept connections.
    head = socket.create_server(("127.0.0.1", 0))
    port = head.getsockname()[1]
    script = worker["command"][-1].replace(":6379", f":{port}").replace(", 6379)", f", {port})")
    stopped = tmp_path / "ray-stopped"
    bin_dir = fake_bin(
        tmp_path,
        {  # `ray start --block` stand-in: blocks until SIGTERM, then records it
            "ray": f"""
            trap 'echo "$*" > {stopped}; exit 0' TERM
            echo "ray $* (blocking)"
            sleep 600 & wait $!
            """
        },
    )
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "LWS_LEADER_ADDRESS": "127.0.0.1",
        "POD_IP": "127.0.0.1",
    }
    log = tmp_path / "worker.log"
    outer = run_as_pid_1(script, env, log)
    try:
        wait_for_text(log, "(blocking)", outer)
        os.kill(namespace_init(outer), signal.SIGTERM)
        assert outer.wait(60) == 0, log.read_text()
        assert "--block" in stopped.read_text()
        assert "SIGTERM: stopping the Ray worker" in log.read_text()
    finally:
        stop(outer)
        head.close()


def test_leader_exits_on_sigterm_while_the_group_forms(tmp_path: Path) -> None:
    leader, _ = leader_and_worker(multinode_values())
    bin_dir = fake_bin(
        tmp_path,
        {
            "ray": 'echo "ray $*"\n',  # `ray start --head` returns at once
            "python3": "echo '1 of 2 Ray nodes of the group alive'; exit 1\n",  # never formed
        },
    )
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "POD_IP": "127.0.0.1", "LWS_GROUP_SIZE": "2"}
    log = tmp_path / "leader.log"
    outer = run_as_pid_1(leader["command"][-1], env, log)
    try:
        wait_for_text(log, "1 of 2 Ray nodes", outer)
        os.kill(namespace_init(outer), signal.SIGTERM)
        assert outer.wait(60) == 143, log.read_text()
        assert "SIGTERM before the server started" in log.read_text()
    finally:
        stop(outer)


def test_configmap_runs_pipeline_parallel_over_ray() -> None:
    env = config_env(manifests(rendered_case("multinode")))
    nodes = chart_values(multinode_values())["multiNode"]["nodes"]
    assert env["LINGSHU_DISTRIBUTED_EXECUTOR_BACKEND"] == "ray"
    assert env["LINGSHU_PIPELINE_PARALLEL_SIZE"] == str(nodes)
