"""Each model served once (Ray Serve on loopback, the real hf engine): the plan, loads, equal rows, a killed replica."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from zwz_ray.config import ConfigError, EngineConfig, ResourcesConfig, load_config
from zwz_ray.demo import ensure_demo_images
from zwz_ray.engines.deployments import ModelPlan
from zwz_ray.engines.serving import ServingConfig
from zwz_ray.synth import build_synthesis
from zwz_ray.synth.config import SynthConfig

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "synth"
ENGINES = ["teacher", "answerers.0", "answerers.1", "judge", "student"]


def config(name: str = "laptop.yaml", *overrides: str) -> SynthConfig:
    return load_config(SynthConfig, str(CONFIGS / name), list(overrides))


# --------------------------------------------------------------------------- the plan (no Ray)


def test_cluster_plan_prints_each_model_once_and_the_total():
    out = subprocess.run([sys.executable, "-m", "pipelines.synthesize", "--config", str(CONFIGS / "cluster.yaml"), "--plan"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[-1] == "total GPUs: min 10, max 22"
    teacher = next(line for line in lines if line.strip().startswith("qwen3-vl-32b"))
    assert "vllm deployment" in teacher and "1..4" in teacher
    assert teacher.rstrip().endswith("proposal, questions, validation, answers_1, distractors")
    assert sum("qwen3-vl-32b" in line for line in lines) == 1  # the teacher and the first answerer: one deployment
    judge = next(line for line in lines if line.strip().startswith("judge-qwen3-32b"))
    assert judge.rstrip().endswith("consensus, difficulty")
    assert "sam3 actor pool" in out.stdout and "Ray" not in out.stderr  # nothing started
    # one copy per stage: the footprint the served plan avoids
    actors = build_synthesis(config("cluster.yaml", "serving.mode=actors")).models
    assert actors.gpus() == (18, 54)


def test_models_are_named_once_and_identical_sections_merge():
    cfg = config("cluster.yaml")
    assert cfg.models.teacher is cfg.models.answerers[0] and cfg.models.teacher.label == "qwen3-vl-32b"
    with pytest.raises(ConfigError, match="did you mean 'qwen3-vl-32b'"):
        config("cluster.yaml", "models.teacher=qwen3-vl-23b")
    from zwz_ray.cli import explain

    rows = {line.split()[0]: line for line in explain(cfg).splitlines()}
    assert "(4 named sections)" in rows["engines"] and "tensor_parallel" not in rows["engines"]
    assert "2 (default: 1)" in rows["engines.qwen3-vl-32b.tensor_parallel_size"]
    plan = ModelPlan(ServingConfig())
    a = EngineConfig(model="tiny:text", resources=ResourcesConfig(num_gpus=1, min_replicas=1, max_replicas=3))
    b = EngineConfig(model="tiny:text", resources=ResourcesConfig(num_gpus=1, min_replicas=1, max_replicas=3))
    c = EngineConfig(model="tiny:text", seed=7, resources=ResourcesConfig(num_gpus=1))
    for stage, engine in (("one", a), ("two", b), ("three", c), ("four", EngineConfig(backend="openai", base_url="http://x/v1"))):
        plan.use(engine, stage)
    assert [m.users for m in plan.models.values()] == [["one", "two"], ["three"], ["four"]]
    assert plan.gpus() == (2, 4)  # the openai endpoint needs no GPU here
    laptop = build_synthesis(config()).models
    assert [m.label for m in laptop.deployments()] == ["tiny:qwen2_5_vl", "tiny:qwen3_vl", "tiny:text"]


def test_the_start_up_check_uses_the_plans_total(monkeypatch):
    import zwz_ray.runtime

    plan = build_synthesis(config("cluster.yaml"))
    monkeypatch.setattr(zwz_ray.runtime, "cluster_resources", lambda: {"GPU": 4.0})  # a 4-GPU cluster
    with pytest.raises(RuntimeError, match=r"min_replicas \(see --plan\), asks for 10 GPU\(s\) but the Ray cluster has 4"):
        plan.require_resources()
    monkeypatch.setattr(zwz_ray.runtime, "cluster_resources", lambda: {"GPU": 10.0})
    plan.require_resources()
    build_synthesis(config("cluster.yaml", "serving.allow_pending_gpus=true")).require_resources()


# --------------------------------------------------------------------------- real runs


def _sets(images: Path, out: Path, mode: str) -> list[str]:
    # One request per generate call: the samples of a request then depend only on its seed, not on which
    # other requests share the engine call (batch padding changes a random model's tokens).
    sets = [f"input.paths=[{images}]", "input.generate_demo=false", f"output.dir={out}", "output.chunk_size=1",
            "ray.progress_bars=false", f"serving.mode={mode}"]
    return sets + [f"models.{e}.max_batch_requests=1" for e in ENGINES]


def _rows(out: Path, folder: str = "kept") -> list[dict]:
    rows = [r for f in sorted((out / folder).glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    return sorted(rows, key=lambda r: r["id"] if folder == "kept" else (r["source"], r["object_index"], r["question_index"]))


def _drops(out: Path) -> list[tuple]:
    return [(r["source"], r["object_index"], r["question_index"], r["stage"], r["reason"], r["question"]) for r in _rows(out, "drops")]


class ReplicaKiller(threading.Thread):
    """SIGKILLs the teacher's replica once it has served ``after`` calls (found through its Serve app)."""

    def __init__(self, after: int):
        super().__init__(daemon=True)
        self.after, self.killed_pid, self.stop = after, None, threading.Event()

    def run(self) -> None:
        from ray import serve

        while not self.stop.is_set():
            try:
                apps = [n for n in serve.status().applications if n.startswith("zwz-synth-tiny-qwen2-5-vl-")]
                if apps:
                    info = serve.get_deployment_handle("model", app_name=apps[0]).info.remote().result(timeout_s=10)
                    if info["stats"]["calls"] >= self.after:
                        os.kill(info["pid"], signal.SIGKILL)
                        self.killed_pid = info["pid"]
                        return
            except Exception:  # noqa: BLE001 - Serve not up yet, or the replica busy: look again
                pass
            time.sleep(0.5)


@pytest.fixture(scope="module")
def runs(ray_session, tmp_path_factory):
    from zwz_ray.synth.run import run_synthesis

    base = tmp_path_factory.mktemp("serving")
    # A fixed folder: row seeds derive from the image URIs, so these images give the same rows in every session.
    images = Path(os.environ["ZWZ_CACHE_DIR"]) / "serving_images"
    ensure_demo_images(str(images), n=4, seed=0, size=(1600, 1280))
    actors = run_synthesis(config("laptop.yaml", *_sets(images, base / "actors", "actors")))
    killer = ReplicaKiller(after=6)
    killer.start()
    try:
        served = run_synthesis(config("laptop.yaml", *_sets(images, base / "served", "serve")))
    finally:
        killer.stop.set()
    return {"actors": actors, "served": served, "killed": killer.killed_pid, "base": base}


def test_served_rows_equal_per_stage_pool_rows_though_a_replica_was_killed(runs):
    assert runs["killed"] is not None, "the teacher's replica was never killed"
    actors, served = _rows(runs["base"] / "actors"), _rows(runs["base"] / "served")
    assert actors, "the per-stage-pool run kept no row"
    keys = [r["id"] for r in served]
    assert len(keys) == len(set(keys))  # nothing duplicated
    assert served == actors  # nothing lost, every value the same
    assert _drops(runs["base"] / "served") == _drops(runs["base"] / "actors")
    for result in (runs["actors"], runs["served"]):
        assert result.stats["retryable_drops"] == 0 and not result.stats["reconciliation_problems"]


def test_five_stages_naming_one_model_load_it_once(runs):
    served, actors = runs["served"].stats["models"], runs["actors"].stats["models"]
    assert actors["tiny:qwen2_5_vl"]["loads"] == 5  # proposal, questions, validation, answers_1, distractors
    assert actors["tiny:qwen3_vl"]["loads"] == 2 and actors["tiny:text"]["loads"] == 2
    assert served["tiny:qwen3_vl"]["loads"] == 1 and served["tiny:text"]["loads"] == 1
    assert served["tiny:qwen2_5_vl"]["loads"] in (1, 2)  # once, and once more after the kill when it still had work
    for label in ("tiny:qwen2_5_vl", "tiny:qwen3_vl", "tiny:text"):
        assert served[label]["calls"] == actors[label]["calls"]


def test_deployments_are_gone_when_the_job_ends(runs):
    from ray import serve

    assert not [n for n in serve.status().applications if n.startswith("zwz-synth-")]
