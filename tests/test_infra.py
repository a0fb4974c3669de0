"""The KubeRay manifests and the worker Dockerfile: kinds, required fields, real entrypoints."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import yaml

from actstore.config import ExtractConfig, TrainConfig, load_config

INFRA = Path(__file__).parents[1] / "infra"
REPO = INFRA.parent


def _load(name: str) -> dict:
    return yaml.safe_load((INFRA / "kuberay" / name).read_text())


def _containers(group: dict) -> list[dict]:
    return group["template"]["spec"]["containers"]


def _check_cluster_spec(spec: dict) -> None:
    head = spec["headGroupSpec"]
    assert _containers(head)[0]["image"]
    workers = spec["workerGroupSpecs"]
    assert workers, "no worker group"
    for group in workers:
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        for container in _containers(group):
            limits = container["resources"]["limits"]
            assert int(limits["nvidia.com/gpu"]) >= 1  # a GPU worker group
            assert {"secretRef": {"name": "actstore-s3"}} in container["envFrom"]  # credentials from a Secret
            assert not any(e.get("name", "").startswith("AWS_SECRET") and "value" in e for e in container.get("env", []))


def test_rayjob_manifest() -> None:
    job = _load("rayjob.yaml")
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    spec = job["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    yaml.safe_load(spec["runtimeEnvYAML"])
    argv = shlex.split(spec["entrypoint"])
    assert argv[0] == "python" and (REPO / argv[1]).is_file(), f"entrypoint names no job file: {argv}"
    config = load_config(REPO / argv[2], ExtractConfig)  # the config it names is real and valid
    assert config.saes and config.model.id == "google/gemma-2-2b"
    _check_cluster_spec(spec["rayClusterSpec"])


def test_raycluster_manifest() -> None:
    cluster = _load("raycluster.yaml")
    assert cluster["apiVersion"] == "ray.io/v1" and cluster["kind"] == "RayCluster"
    _check_cluster_spec(cluster["spec"])


def test_dockerfile_installs_actstore_and_manifests_use_one_image() -> None:
    text = (INFRA / "Dockerfile").read_text()
    assert re.search(r"^FROM rayproject/ray:2\.\d+\.\d+-py311", text, re.M)
    assert "pip install" in text and "COPY" in text and "platform" in text
    images = {c["image"] for m in ("rayjob.yaml", "raycluster.yaml") for c in _all_containers(_load(m))}
    assert len(images) == 1


def _all_containers(manifest: dict) -> list[dict]:
    spec = manifest["spec"].get("rayClusterSpec", manifest["spec"])
    return [*_containers(spec["headGroupSpec"]), *(c for g in spec["workerGroupSpecs"] for c in _containers(g))]


def test_example_configs_are_valid() -> None:
    for path in sorted((REPO / "jobs" / "configs").glob("*.yaml")):
        load_config(path, TrainConfig if "out" in yaml.safe_load(path.read_text()) else ExtractConfig)
