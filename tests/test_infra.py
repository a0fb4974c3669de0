"""The KubeRay manifests and the worker Dockerfile, checked as KubeRay and the image will read them.

No package registry ships KubeRay's CRDs, so the rules below are written down from KubeRay's own
API types (the source its CRDs are generated from), `ray-project/kuberay`:
`ray-operator/apis/ray/v1/rayjob_types.go` at commit f6ef3f7b and
`ray-operator/apis/ray/v1/raycluster_types.go` at commit 3275ee09 (the ray.io/v1 API): the field
names and JSON types of RayJobSpec, RayClusterSpec, HeadGroupSpec, WorkerGroupSpec and
AutoscalerOptions, which of them are required (no `omitempty`), and that unknown fields are
refused (structural schemas prune them, so a misspelt field silently does nothing).

The RayJob that is applied is written by `infra/kuberay/rayjob.py` from the template; the tests
run it as a user does and check its jobId against `actstore run-id` of its entrypoint.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from actstore.cli import run_id_of
from actstore.config import ExtractConfig, TrainConfig, load_config
from actstore.errors import ConfigError
from actstore.explain.config import ExplainConfig

INFRA = Path(__file__).parents[1] / "infra"
REPO = INFRA.parent

# field: (JSON type, required)  — from the Go structs named above
_INT, _STR, _BOOL, _MAP, _OBJ, _LIST = int, str, bool, "map[string]string", dict, list
RAYJOB_SPEC = {
    "activeDeadlineSeconds": (_INT, False), "backoffLimit": (_INT, False), "rayClusterSpec": (_OBJ, False),
    "submitterPodTemplate": (_OBJ, False), "metadata": (_MAP, False), "clusterSelector": (_MAP, False),
    "submitterConfig": (_OBJ, False), "managedBy": (_STR, False), "deletionPolicy": (_STR, False),
    "entrypoint": (_STR, False), "runtimeEnvYAML": (_STR, False), "jobId": (_STR, False),
    "submissionMode": (_STR, False), "entrypointResources": (_STR, False), "entrypointNumCpus": (float, False),
    "entrypointNumGpus": (float, False), "ttlSecondsAfterFinished": (_INT, False),
    "shutdownAfterJobFinishes": (_BOOL, False), "suspend": (_BOOL, False),
}
RAYCLUSTER_SPEC = {
    "suspend": (_BOOL, False), "managedBy": (_STR, False), "autoscalerOptions": (_OBJ, False),
    "headServiceAnnotations": (_MAP, False), "enableInTreeAutoscaling": (_BOOL, False),
    "gcsFaultToleranceOptions": (_OBJ, False), "headGroupSpec": (_OBJ, True), "rayVersion": (_STR, False),
    "workerGroupSpecs": (_LIST, False),
}
HEAD_GROUP = {"template": (_OBJ, True), "headService": (_OBJ, False), "enableIngress": (_BOOL, False),
              "rayStartParams": (_MAP, True), "serviceType": (_STR, False)}
AUTOSCALER_OPTIONS = {
    "resources": (_OBJ, False), "image": (_STR, False), "imagePullPolicy": (_STR, False), "securityContext": (_OBJ, False),
    "idleTimeoutSeconds": (_INT, False), "upscalingMode": (_STR, False), "env": (_LIST, False), "envFrom": (_LIST, False),
    "volumeMounts": (_LIST, False),
}
UPSCALING_MODES = {"Default", "Aggressive", "Conservative"}  # the kubebuilder enum of UpscalingMode
WORKER_GROUP = {
    "suspend": (_BOOL, False), "groupName": (_STR, True), "replicas": (_INT, False), "minReplicas": (_INT, True),
    "maxReplicas": (_INT, True), "idleTimeoutSeconds": (_INT, False), "rayStartParams": (_MAP, True),
    "template": (_OBJ, True), "scaleStrategy": (_OBJ, False), "numOfHosts": (_INT, False),
}


def _check_fields(obj: dict[str, Any], rules: dict[str, tuple[Any, bool]], where: str) -> None:
    unknown = set(obj) - set(rules)
    assert not unknown, f"{where}: fields KubeRay does not know: {sorted(unknown)}"
    for name, (kind, required) in rules.items():
        if name not in obj:
            assert not required, f"{where}.{name} is required"
            continue
        value = obj[name]
        if kind == _MAP:
            assert isinstance(value, dict) and all(isinstance(v, str) for v in value.values()), \
                f"{where}.{name}: map of strings (quote numbers)"
        elif kind is float:
            assert isinstance(value, (int, float)) and not isinstance(value, bool), f"{where}.{name}: number"
        else:
            assert isinstance(value, kind) and not (kind is int and isinstance(value, bool)), \
                f"{where}.{name}: {kind.__name__}"


def _load(name: str) -> dict:
    return yaml.safe_load((INFRA / "kuberay" / name).read_text())


def _cluster_spec(manifest: dict) -> dict:
    return manifest["spec"].get("rayClusterSpec", manifest["spec"])


def _pods(spec: dict) -> list[dict]:
    return [spec["headGroupSpec"]["template"]["spec"], *(g["template"]["spec"] for g in spec["workerGroupSpecs"])]


def _check_cluster_spec(spec: dict, where: str) -> None:
    _check_fields(spec, RAYCLUSTER_SPEC, where)
    _check_fields(spec["headGroupSpec"], HEAD_GROUP, f"{where}.headGroupSpec")
    assert spec["workerGroupSpecs"], "no worker group"
    # autoscaling: extractions ask for workers the cluster cannot hold yet, and the autoscaler adds pods
    assert spec["enableInTreeAutoscaling"] is True
    _check_fields(spec["autoscalerOptions"], AUTOSCALER_OPTIONS, f"{where}.autoscalerOptions")
    assert spec["autoscalerOptions"].get("upscalingMode", "Default") in UPSCALING_MODES
    for group in spec["workerGroupSpecs"]:
        _check_fields(group, WORKER_GROUP, f"{where}.workerGroupSpecs[{group['groupName']}]")
        assert 0 <= group["minReplicas"] <= group.get("replicas", 0) <= group["maxReplicas"]
        assert group["minReplicas"] < group["maxReplicas"], "min = max: the autoscaler has nothing to do"
        for container in group["template"]["spec"]["containers"]:
            assert int(container["resources"]["limits"]["nvidia.com/gpu"]) >= 1  # a GPU worker group
    hf_home = _dockerfile_env()["HF_HOME"]
    for pod in _pods(spec):
        volumes = {v["name"] for v in pod.get("volumes", [])}
        for container in pod["containers"]:
            secrets = [s["secretRef"]["name"] for s in container["envFrom"]]
            assert secrets == ["actstore-s3", "actstore-hf"], f"{container['name']}: S3 and HF_TOKEN from Secrets"
            assert not any("value" in e and "SECRET" in e.get("name", "") for e in container.get("env", []))
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            assert mounts.get(hf_home) in volumes, f"{container['name']}: HF_HOME {hf_home} not mounted"


def _dockerfile() -> str:
    return (INFRA / "Dockerfile").read_text()


def _dockerfile_env() -> dict[str, str]:
    [line] = re.findall(r"^ENV (.+)$", _dockerfile(), re.M)
    return dict(item.split("=", 1) for item in line.split())


def _image_path(path: str) -> Path:
    """A path inside the image, back to the repository file the Dockerfile copied there."""
    [workdir] = re.findall(r"^WORKDIR (\S+)$", _dockerfile(), re.M)
    copied = {Path(dst).name or src: src for src, dst in re.findall(r"^COPY \S+ (\S+) (\S+)$", _dockerfile(), re.M)}
    relative = Path(path).relative_to(workdir)
    assert relative.parts[0] in copied, f"{path}: the Dockerfile does not copy {relative.parts[0]}"
    return REPO / relative


def _entrypoint(job: dict) -> list[str]:
    """The entrypoint's arguments after the job file, with the config as a repository path."""
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[0] == "python" and _image_path(argv[1]).is_file(), f"entrypoint names no job file: {argv}"
    return [str(_image_path(argv[2])), *argv[3:]]


def _max_workers(job: dict) -> int:
    """The entrypoint's --max-workers: one worker per GPU of the worker group's maxReplicas pods."""
    args = _entrypoint(job)
    [group] = job["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    assert int(args[args.index("--max-workers") + 1]) == group["maxReplicas"] * int(group["rayStartParams"]["num-gpus"])
    return group["maxReplicas"]


def test_rayjob_template() -> None:
    job = _load("rayjob.yaml")
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    spec = job["spec"]
    _check_fields(spec, RAYJOB_SPEC, "RayJob.spec")
    assert spec["shutdownAfterJobFinishes"] is True
    yaml.safe_load(spec["runtimeEnvYAML"])
    args = _entrypoint(job)
    config = load_config(args[0], ExtractConfig)  # the config it names is real and valid
    assert config.saes and config.model.id == "google/gemma-2-2b" and config.workers.num_gpus == 1
    assert "--store" in args and "--corpus" in args  # pointed at a bucket without rebuilding the image
    _max_workers(job)
    _check_cluster_spec(spec["rayClusterSpec"], "RayJob.spec.rayClusterSpec")
    # as shipped, it points at the example bucket: refused before any work (and no run id is made for it)
    with pytest.raises(ConfigError, match="names the placeholder bucket 'my-bucket' of an example config"):
        run_id_of(args)


def test_rayjob_written_for_a_bucket_has_the_run_id_of_its_entrypoint() -> None:
    """infra/kuberay/rayjob.py, run as docs/kubernetes.md says: a valid RayJob whose jobId is
    `actstore run-id` of its own entrypoint's arguments; placeholders are refused."""
    script = [sys.executable, str(INFRA / "kuberay" / "rayjob.py")]
    corpus = "s3://research-data/corpora/pile/*.jsonl.zst"
    done = subprocess.run([*script, "--store", "s3://research-data/actstore/run1", "--corpus", corpus, "--max-replicas", "6"],
                          capture_output=True, text=True, timeout=120, cwd="/")
    assert done.returncode == 0, done.stderr
    job = yaml.safe_load(done.stdout)
    _check_fields(job["spec"], RAYJOB_SPEC, "RayJob.spec")
    _check_cluster_spec(job["spec"]["rayClusterSpec"], "RayJob.spec.rayClusterSpec")
    assert _entrypoint(job)[1:] == ["--store", "s3://research-data/actstore/run1", "--corpus", corpus, "--max-workers", "6"]
    assert _max_workers(job) == 6
    assert job["spec"]["jobId"] == run_id_of(_entrypoint(job)) != _load("rayjob.yaml")["spec"]["jobId"]
    assert done.stdout.count("\n#") == (INFRA / "kuberay" / "rayjob.yaml").read_text().count("\n#")  # comments kept
    refused = subprocess.run([*script, "--store", "s3://my-bucket/run", "--corpus", corpus], capture_output=True, text=True,
                             timeout=120)
    assert refused.returncode == 2 and not refused.stdout
    assert refused.stderr.strip() == ("rayjob.py: error: store.url 's3://my-bucket/run' names the placeholder bucket "
                                      "'my-bucket' of an example config; point it at your own (--store URL, or store.url "
                                      "in the config)")


def test_raycluster_manifest() -> None:
    cluster = _load("raycluster.yaml")
    assert cluster["apiVersion"] == "ray.io/v1" and cluster["kind"] == "RayCluster"
    _check_cluster_spec(cluster["spec"], "RayCluster.spec")


def test_secret_example_has_the_keys_the_manifests_expect() -> None:
    secrets = {d["metadata"]["name"]: d for d in yaml.safe_load_all((INFRA / "kuberay" / "secret.example.yaml").read_text())}
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(secrets["actstore-s3"]["stringData"])
    assert set(secrets["actstore-hf"]["stringData"]) == {"HF_TOKEN"}


def test_dockerfile_image_and_build_context() -> None:
    text = _dockerfile()
    assert re.search(r"^FROM rayproject/ray:2\.\d+\.\d+-py311-gpu$", text, re.M)
    env = _dockerfile_env()
    # the caches exist in the image and belong to the non-root user that runs Ray
    made = re.search(r"mkdir -p ([^\n\\&]+)", text)
    assert made and {env["HF_HOME"], env["ACTSTORE_CACHE"]} <= set(made.group(1).split())
    assert re.search(rf"chown -R ray:users [^\n]*{re.escape(env['HF_HOME'])}", text)
    assert text.rindex("USER ray") > text.index("USER root")
    assert "assert torch.version.cuda" in text  # the CUDA build, checked when the image is built
    images = {c["image"] for m in ("rayjob.yaml", "raycluster.yaml") for p in _pods(_cluster_spec(_load(m)))
              for c in p["containers"]}
    assert len(images) == 1
    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".venv/", "runs/", ".git/"} <= ignored
    for src in re.findall(r"^COPY \S+ (.+) \S+$", text, re.M):
        for name in src.split():
            assert (REPO / name).exists() and f"{name}/" not in ignored, f"COPY {name}: missing or ignored"


def test_example_configs_are_valid() -> None:
    for path in sorted((REPO / "jobs" / "configs").glob("*.yaml")):
        keys = set(yaml.safe_load(path.read_text()))
        kind = TrainConfig if "out" in keys else ExplainConfig if "backend" in keys else ExtractConfig
        load_config(path, kind)


def test_a_job_submitted_under_another_configs_run_id_is_refused(monkeypatch) -> None:
    """Inside a Ray job the driver finds its submission id in the job's metadata (Ray's job
    supervisor sets RAY_JOB_CONFIG_JSON_ENV_VAR for the entrypoint, ray/dashboard/modules/job/
    job_supervisor.py): an actstore-extract id that is not the config's run id is refused."""
    from actstore.cluster.preflight import refuse_other_submission_id

    run = "actstore-extract-87a1d61de4fe"
    for submitted, refused in ((run, False), ("actstore-extract-0123456789ab", True), ("raysubmit_XyZ", False)):
        monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", f'{{"runtime_env": {{}}, "metadata": {{"job_submission_id": "{submitted}"}}}}')
        if refused:
            with pytest.raises(ConfigError, match=f"submitted as '{submitted}', but its config's run id is '{run}'"):
                refuse_other_submission_id(run)
        else:
            refuse_other_submission_id(run)
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR")
    refuse_other_submission_id(run)  # not a Ray job
