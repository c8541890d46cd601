"""Run the chart's LeaderWorkerSet pods as local process groups: the leader's and the worker's
commands from the rendered manifest, each in its own session, with the environment the kubelet and
the LWS controller would give them (ConfigMap, fieldRefs, LWS_* variables) on loopback addresses.

Each "pod" has its own IP (127.0.0.2 the leader, 127.0.0.3 the worker: Ray keeps 127.0.0.1 for
itself), a shared Ray temp dir under a short run directory (Ray's socket paths are limited to 107
bytes), and PATH shims for the programs the image provides (python3, ray, lingshu-server)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from lingshu_server.demo_model import ensure_demo_model
from tests.deploy.files import config_env, lws_templates, manifests, multinode_values, one, render

LEADER_IP, WORKER_IP = "127.0.0.2", "127.0.0.3"
NAMESPACE_SUFFIX = "svc.cluster.local"
RAY_HEAD_LOST_S = 15
# The CPU engine's settings (as `lingshu-server demo` sets them) over the chart's GPU values.
CPU_SETTINGS = {
    "LINGSHU_MAX_MODEL_LEN": "8192",
    "LINGSHU_GPU_MEMORY_UTILIZATION": "0.2",
    "LINGSHU_ENFORCE_EAGER": "true",
    "LINGSHU_DTYPE": "bfloat16",
    "LINGSHU_SERVED_MODEL_NAME": '["lingshu-demo"]',
    "VLLM_CPU_KVCACHE_SPACE": "1",
}


def ray_binary() -> str:
    path = Path(sys.executable).with_name("ray")
    if not path.exists():
        pytest.fail(f"Ray is not installed beside {sys.executable}: pip install 'ray==2.60.0'")
    return str(path)


def free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@dataclass
class Pod:
    """One pod's main process: a session of its own, its log, and what it left behind."""

    name: str
    process: subprocess.Popen
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for_line(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.text():
            if self.process.poll() is not None:
                raise AssertionError(
                    f"{self.name} exited {self.process.returncode}:\n{self.text()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: no {text!r} within {timeout} s:\n{self.text()}")
            time.sleep(0.5)


@dataclass
class Group:
    """A rendered LeaderWorkerSet group, run here."""

    run_dir: Path
    rendered: dict[str, Any]
    env: dict[str, str]
    key: str
    port: int
    ray_port: int
    pods: list[Pod] = field(default_factory=list)
    # the Secrets the pods read, by (name, key): the example's database URL Secret holds a
    # SQLite file of this group's (one group, so one server opens it)
    secrets: dict[tuple[str, str], str] = field(default_factory=dict)

    @property
    def leader_container(self) -> dict[str, Any]:
        leader, _ = lws_templates(self.rendered["lws"])
        return leader["spec"]["containers"][0]

    @property
    def worker_container(self) -> dict[str, Any]:
        _, worker = lws_templates(self.rendered["lws"])
        return worker["spec"]["containers"][0]

    def pod_env(self, container: dict[str, Any], pod_ip: str, worker_index: int) -> dict[str, str]:
        env = dict(self.env)
        for variable in container["env"]:  # references resolved as the kubelet would
            source = variable.get("valueFrom", {})
            if "value" in variable:
                env[variable["name"]] = variable["value"]
            elif "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                env[variable["name"]] = self.secrets[(ref["name"], ref["key"])]
            elif source["fieldRef"]["fieldPath"] == "status.podIP":
                env[variable["name"]] = pod_ip
        env |= {
            "LWS_LEADER_ADDRESS": LEADER_IP,
            "LWS_GROUP_SIZE": str(self.rendered["size"]),
            "LWS_WORKER_INDEX": str(worker_index),
        }
        return env

    def start(self, role: str) -> Pod:
        container = self.leader_container if role == "leader" else self.worker_container
        pod_ip, index = (LEADER_IP, 0) if role == "leader" else (WORKER_IP, 1)
        env = self.pod_env(container, pod_ip, index)
        if role == "leader":
            env["LINGSHU_HOST"] = pod_ip  # the ConfigMap's 0.0.0.0, narrowed on a shared machine
        log = self.run_dir / f"{role}.log"
        process = subprocess.Popen(
            container["command"],
            cwd=self.run_dir,
            env=env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        pod = Pod(role, process, log)
        self.pods.append(pod)
        return pod

    def probe(self, probe: dict[str, Any], timeout: float | None = None) -> int | None:
        """An exec probe in the worker's environment: its exit status, None when it timed out
        (the kubelet counts both non-zero and a timeout as a failure)."""
        env = self.pod_env(self.worker_container, WORKER_IP, 1)
        try:
            return subprocess.run(
                probe["exec"]["command"],
                cwd=self.run_dir,
                env=env,
                capture_output=True,
                timeout=timeout or probe["timeoutSeconds"],
            ).returncode
        except subprocess.TimeoutExpired:
            return None

    def kill(self, pod: Pod) -> None:
        """The pod's container is gone: every process of its session dies at once."""
        kill_session(pod.process.pid)
        pod.process.wait()

    def close(self) -> None:
        for pod in self.pods:
            kill_session(pod.process.pid)
            if pod.process.poll() is None:
                pod.process.wait()
        kill_processes_in(self.run_dir)  # Ray daemons re-parented outside the sessions
        keep = os.environ.get("LINGSHU_TEST_KEEP_LOGS")  # a directory for the pods' logs
        if keep:
            Path(keep).mkdir(parents=True, exist_ok=True)
            for pod in self.pods:
                shutil.copy(pod.log, Path(keep) / f"{self.run_dir.name}-{pod.name}.log")
        shutil.rmtree(self.run_dir, ignore_errors=True)


def session_members(sid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getsid(int(entry.name)) == sid:
                    members.append(int(entry.name))
            except (ProcessLookupError, PermissionError):
                continue
    return members


def kill_session(sid: int) -> None:
    for pid in session_members(sid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def kill_processes_in(run_dir: Path) -> None:
    """Processes of ours whose working directory is the run directory (Ray's agents)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if Path(os.readlink(entry / "cwd")).is_relative_to(run_dir):
                os.kill(int(entry.name), signal.SIGKILL)
        except (FileNotFoundError, ProcessLookupError, PermissionError, OSError):
            continue


def shims(bin_dir: Path) -> None:
    """What the image has on PATH: python3, ray and the lingshu-server console script (here the
    worktree's package through PYTHONPATH)."""
    bin_dir.mkdir()
    # Wrappers, not links: a virtual environment's python finds its packages from the path it
    # was started by.
    programs = {
        "python3": f'exec {sys.executable} "$@"',
        "ray": f'exec {ray_binary()} "$@"',
        "lingshu-server": f'exec {sys.executable} -m lingshu_server "$@"',
    }
    for name, command in programs.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{command}\n")
        (bin_dir / name).chmod(0o755)


def render_group(formation_timeout: int) -> tuple[Group, str]:
    run_dir = Path(tempfile.mkdtemp(prefix="lsray-", dir="/tmp"))
    ray_port = free_port(LEADER_IP)
    values = multinode_values(
        parallelism={"tensorParallelSize": 1},
        multiNode={"rayPort": ray_port, "groupFormationTimeoutSeconds": formation_timeout},
    )
    docs = manifests(render(values))
    lws = one(docs, "LeaderWorkerSet")
    key = "lsk-multinode-test-" + run_dir.name
    key_file = run_dir / "api-keys"
    key_file.write_text(key + "\n")
    shims(run_dir / "bin")
    port = free_port(LEADER_IP)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("LINGSHU_", "RAY_"))},
        **config_env(docs),
        **CPU_SETTINGS,
        "LINGSHU_MODEL": str(ensure_demo_model()),
        "LINGSHU_PORT": str(port),
        "LINGSHU_API_KEY_FILE": str(key_file),
        "PATH": f"{run_dir / 'bin'}:{os.environ['PATH']}",
        "RAY_TMPDIR": str(run_dir / "ray-tmp"),  # not "ray": python3 -c imports from the cwd
        "RAY_USAGE_STATS_ENABLED": "0",
        # How long a worker's raylet keeps trying to reach a Ray head that is gone before it
        # exits (Ray's default, 60 s, is what the chart's pods get): the same way out, sooner.
        "RAY_gcs_rpc_server_reconnect_timeout_s": str(RAY_HEAD_LOST_S),
    }
    rendered = {"lws": lws, "size": lws["spec"]["leaderWorkerTemplate"]["size"]}
    secrets = {("lingshu-database", "database-url"): f"sqlite:///{run_dir / 'state.db'}"}
    group = Group(run_dir, rendered, env, key, port, ray_port, secrets=secrets)
    return group, lws["metadata"]["name"]
