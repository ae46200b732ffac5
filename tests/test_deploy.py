"""Cluster recipes parse and name modules and config files that exist."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMMAND = re.compile(r"python -m (pipelines\.\w+) --config (\S+)")


def _commands(text: str) -> list[tuple[str, str]]:
    return COMMAND.findall(text)


def _check_commands(text: str, where: str) -> None:
    found = _commands(text)
    assert found, f"{where} runs no zwz-ray job"
    for module, config in found:
        importlib.import_module(module)
        assert (ROOT / config).is_file(), f"{where} names {config}, which does not exist"


def test_kuberay_rayjob():
    path = ROOT / "deploy/kuberay/rayjob.yaml"
    doc = yaml.safe_load(path.read_text())
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayJob"
    spec = doc["spec"]
    _check_commands(spec["entrypoint"], str(path))
    cluster = spec["rayClusterSpec"]
    assert cluster["enableInTreeAutoscaling"] is True
    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    assert {"cpu-workers", "gpu-teachers", "gpu-trainers"} <= set(groups)
    for name, group in groups.items():
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], name
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert ("nvidia.com/gpu" in limits) == name.startswith("gpu"), name
    assert "s3://" in spec["entrypoint"]


def test_cluster_launcher():
    path = ROOT / "deploy/launcher/aws.yaml"
    text = path.read_text()
    doc = yaml.safe_load(text)
    types = doc["available_node_types"]
    assert doc["head_node_type"] in types
    assert {"cpu_worker", "gpu_teacher", "gpu_trainer"} <= set(types)
    for name, node in types.items():
        if name != doc["head_node_type"]:
            assert 0 <= node["min_workers"] <= node["max_workers"] <= doc["max_workers"], name
    _check_commands(text, str(path))


def test_dockerfile_copies_what_exists():
    text = (ROOT / "deploy/Dockerfile").read_text()
    for src in re.findall(r"^COPY (?:--\S+ )*(.+?) \S+$", text, flags=re.M):
        for part in src.split():
            assert (ROOT / part).exists(), f"Dockerfile copies {part}, which does not exist"


@pytest.mark.parametrize("name", ["synthesize", "distill", "evaluate", "r2i"])
def test_every_job_has_an_entry_point(name):
    module = importlib.import_module(f"pipelines.{name}")
    assert callable(module.main) and module.CONFIG_CLASS is not None
