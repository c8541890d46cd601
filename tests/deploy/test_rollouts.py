"""Upgrades and node drains without an outage: rollout deadlines longer than a load, the
disruption budget over every pod of a group, and a shutdown that fits the grace period."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import helm_python
import pytest
import uvicorn

from lingshu_server.core.lifecycle import Lifecycle, Stage
from lingshu_server.serve import MIN_CONNECTION_CLOSE_S, DrainingServer
from tests.deploy.files import (
    CASES,
    ENGINE_EXIT_S,
    chart_values,
    config_env,
    manifests,
    multinode_values,
    of_kind,
    one,
    pod_specs,
    render,
    rendered_case,
    values_for,
)

# How long `hf download` may run before the server's startup probe starts counting.
DOWNLOAD_ALLOWANCE_S = 3600


def startup_budget(values: dict[str, Any]) -> int:
    startup = values["probes"]["startup"]
    return startup["periodSeconds"] * startup["failureThreshold"]


@pytest.mark.parametrize("case", CASES)
def test_rollout_deadline_outlasts_a_load(case: str) -> None:
    values = chart_values(values_for(case))
    for deployment in of_kind(manifests(rendered_case(case)), "Deployment"):
        deadline = deployment["spec"]["progressDeadlineSeconds"]
        needed = startup_budget(values)
        if values["model"]["download"]["enabled"]:
            needed += DOWNLOAD_ALLOWANCE_S
        assert deadline > needed, (case, deadline, needed)
        assert deadline > 600, "Kubernetes' default is shorter than a 32B load"


def test_rollout_deadline_can_be_set() -> None:
    (deployment,) = of_kind(manifests(render({"progressDeadlineSeconds": 7200})), "Deployment")
    assert deployment["spec"]["progressDeadlineSeconds"] == 7200


@pytest.mark.parametrize("case", ["lingshu-7b", "everything", "per-replica-cache"])
def test_disruption_budget_covers_every_pod_and_two_replicas(case: str) -> None:
    docs = manifests(rendered_case(case))
    budget = one(docs, "PodDisruptionBudget")
    selector = budget["spec"]["selector"]["matchLabels"]
    workloads = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")]
    for workload in workloads:
        assert selector.items() <= workload["spec"]["template"]["metadata"]["labels"].items()
    (test_pod,) = of_kind(docs, "Pod")
    assert not selector.items() <= test_pod["metadata"]["labels"].items()
    values = chart_values(values_for(case))
    minimum = (
        values["autoscaling"]["minReplicas"]
        if values["autoscaling"]["enabled"]
        else values["keda"]["minReplicaCount"]
        if values["keda"]["enabled"]
        else values["replicaCount"]
    )
    assert minimum >= 2, "with one replica a budget of 1 lets a drain take it"


def test_multinode_budget_covers_the_workers() -> None:
    """Evicting a worker ends its group: the budget must see workers, and counts in groups
    through the leader's readiness."""
    docs = manifests(
        render(multinode_values(replicaCount=2, podDisruptionBudget={"enabled": True}))
    )
    selector = one(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"]
    lwt = one(docs, "LeaderWorkerSet")["spec"]["leaderWorkerTemplate"]
    for role in ("leaderTemplate", "workerTemplate"):
        assert selector.items() <= lwt[role]["metadata"]["labels"].items(), role
    assert "readinessProbe" in lwt["leaderTemplate"]["spec"]["containers"][0]


def test_budget_with_one_replica_is_refused_unless_it_blocks_evictions() -> None:
    with pytest.raises(helm_python.HelmError, match="protects nothing"):
        render({"podDisruptionBudget": {"enabled": True}})
    blocking = {"podDisruptionBudget": {"enabled": True, "maxUnavailable": 0}}
    assert one(manifests(render(blocking)), "PodDisruptionBudget")["spec"]["maxUnavailable"] == 0
    autoscaled = {
        "model": {"existingClaimAccessMode": "ReadOnlyMany"},
        "autoscaling": {"enabled": True, "minReplicas": 1},
        "podDisruptionBudget": {"enabled": True},
    }
    with pytest.raises(helm_python.HelmError, match="protects nothing"):
        render(autoscaled)


# ---------- grace period ----------


@pytest.mark.parametrize("case", CASES)
def test_grace_period_covers_pre_stop_one_drain_and_the_exit(case: str) -> None:
    """The kubelet kills at the grace period; the server needs preStop + one drain budget +
    the connections' last second + the engine's exit."""
    docs = manifests(rendered_case(case))
    drain = math.ceil(float(config_env(docs)["LINGSHU_DRAIN_TIMEOUT"]))
    for where, spec in pod_specs(docs):
        pre_stop = 0
        for container in spec["containers"]:
            command = container.get("lifecycle", {}).get("preStop", {}).get("exec", {})
            if command.get("command", [""])[0] == "sleep":
                pre_stop = int(command["command"][1])
        needed = pre_stop + drain + MIN_CONNECTION_CLOSE_S + ENGINE_EXIT_S
        assert spec["terminationGracePeriodSeconds"] >= needed, (case, where)


def draining_server(drain_timeout: float) -> tuple[DrainingServer, Lifecycle]:
    lifecycle = Lifecycle()
    lifecycle.enter(Stage.READY)
    config = uvicorn.Config(app=None, timeout_graceful_shutdown=int(drain_timeout))
    return DrainingServer(config, lifecycle, drain_timeout), lifecycle


def test_a_drain_that_times_out_leaves_uvicorn_one_second_not_another_drain() -> None:
    """Requests still in flight at the drain timeout: uvicorn's own wait for connections gets
    what is left of the same budget (its floor), not a second drain timeout."""
    server, lifecycle = draining_server(drain_timeout=0.5)
    lifecycle.request_started()  # never finishes
    asyncio.run(server._drain())
    assert server.should_exit
    assert server.config.timeout_graceful_shutdown == MIN_CONNECTION_CLOSE_S


def test_a_quick_drain_keeps_the_rest_of_the_budget_for_connections() -> None:
    server, _ = draining_server(drain_timeout=30)
    asyncio.run(server._drain())  # nothing in flight: drained at once
    assert server.should_exit
    assert 29 <= server.config.timeout_graceful_shutdown <= 30
