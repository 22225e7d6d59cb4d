"""Sluice's own Kubernetes cluster (deploy/k8s/cluster.sh) for the tests under tests/k8s.

The session fixture brings the cluster up when it is not already running and stops
it at the end of the session, only if it started it. A cluster that cannot start
fails the tests that need it: they never skip. ``make test`` builds the binaries and
images beforehand (``cluster.sh build``), so bringing it up here takes about a minute;
on a machine where nothing is built yet the first test waits for the build.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.cluster import Cluster, own_cluster

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "k8s" / "cluster.sh"
DAGS = Path(__file__).parent / "dags"
UP_TIMEOUT_S = 3600.0
LABEL = "app=sluice-k8s-e2e"  # every pod the test DAGs (and the execution mode's template) make


@dataclass(frozen=True)
class Kube:
    """The running cluster: the kubeconfig (a path; it holds the admin token) and its images."""

    kubeconfig: Path
    host_address: str = "10.244.0.1"  # this machine, as the pods reach it
    python_image: str = "sluice-k8s/python:bookworm"
    busybox_image: str = "sluice-k8s/busybox:1.35"

    def core_v1(self):
        """A synchronous CoreV1Api client of the cluster (kubernetes, as the provider uses it)."""
        from kubernetes import client, config

        api = config.new_client_from_config(config_file=str(self.kubeconfig))
        return client.CoreV1Api(api)


def _script(*args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ})


def _cluster_env() -> dict[str, str]:
    """What ``cluster.sh env`` exports: KUBECONFIG, SLUICE_K8S_HOST_ADDRESS ..."""
    out = _script("env", timeout=30)
    found = dict(line.removeprefix("export ").split("=", 1) for line in out.stdout.splitlines()
                 if line.startswith("export "))
    if "KUBECONFIG" not in found or "SLUICE_K8S_HOST_ADDRESS" not in found:
        raise AssertionError(f"cluster.sh env is incomplete: {out.stdout!r} {out.stderr!r}")
    return found


@pytest.fixture(scope="session")
def kube() -> Kube:
    was_up = _script("status", timeout=60).returncode == 0
    if not was_up:
        up = _script("up", timeout=UP_TIMEOUT_S)
        if up.returncode != 0:
            _script("down", timeout=300)  # whatever part of it did start
            pytest.fail(f"Sluice's Kubernetes cluster did not start (deploy/k8s/cluster.sh up, "
                        f"exit {up.returncode}):\n{up.stderr[-4000:]}", pytrace=False)
    try:
        env = _cluster_env()
        yield Kube(kubeconfig=Path(env["KUBECONFIG"]), host_address=env["SLUICE_K8S_HOST_ADDRESS"])
    finally:
        if not was_up:
            down = _script("down", timeout=300)
            assert down.returncode == 0, down.stderr[-4000:]


def delete_test_pods(kube: Kube) -> None:
    kube.core_v1().delete_collection_namespaced_pod("default", label_selector=LABEL,
                                                    grace_period_seconds=0)


@asynccontextmanager
async def sluice_on_the_cluster(kube: Kube, services, template_db: str,
                                root: Path) -> AsyncIterator[Cluster]:
    """Sluice over ``dags/`` on a database of its own (its daemons not started: the module
    starts them), with ``kubernetes_default`` naming the cluster's kubeconfig -- the
    connection is the only way to the cluster (``KUBECONFIG`` is dropped), so task
    processes hold no cluster credentials of their own. The test pods are deleted before
    and after."""
    async with own_cluster(services, template_db, root, name="k8s", dags=DAGS) as cluster:
        cluster.env.pop("KUBECONFIG", None)
        extra = json.dumps({"kube_config_path": str(kube.kubeconfig), "namespace": "default"})
        out = cluster.cli("connections", "add", "kubernetes_default", "--conn-type",
                          "kubernetes", "--conn-extra", extra)
        assert out.returncode == 0, out.stderr
        delete_test_pods(kube)
        try:
            yield cluster
        finally:
            cluster.stop_all()
            delete_test_pods(kube)
