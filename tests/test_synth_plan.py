"""build_synthesis: the stage list is inspectable on CPU without building any engine."""

from __future__ import annotations

from pathlib import Path

import pytest

import zwz_ray.engines
import zwz_ray.models
from zwz_ray.config import load_config
from zwz_ray.synth import build_synthesis
from zwz_ray.synth.config import SynthConfig
from zwz_ray.synth.plan import config_hash
from zwz_ray.synth.stages import Sam3Grounding, VLMGrounding

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "synth"
PAPER_ORDER = ["image_pool", "proposal", "grounding", "crop", "questions", "validation", "answers_1", "answers_2",
               "consensus", "overlay", "distractors", "mcq", "difficulty", "output"]


@pytest.fixture(autouse=True)
def no_models(monkeypatch):
    """Any attempt to load a model in this process fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded while building a plan")

    monkeypatch.setattr(zwz_ray.engines, "build_engine", refuse)
    monkeypatch.setattr(zwz_ray.models, "load_grounding", refuse)


def config(name="laptop.yaml", *overrides) -> SynthConfig:
    return load_config(SynthConfig, str(CONFIGS / name), list(overrides))


def test_stage_list_follows_the_paper():
    plan = build_synthesis(config())
    assert plan.names() == PAPER_ORDER
    stateful = {s.name for s in plan.stages if s.stateful}
    assert stateful == {"proposal", "grounding", "questions", "validation", "answers_1", "answers_2", "consensus", "distractors",
                        "difficulty"}
    assert plan.stage("grounding").cls is Sam3Grounding
    assert plan.stage("answers_2").models == ("tiny:qwen3_vl",)
    assert plan.stage("consensus").models == ("tiny:text",)
    assert [s.levels for s in plan.stages][1] == (0, 1) and plan.stage("questions").levels == (1, 2)
    assert "teacher_answers" in plan.stage("answers_1").writes and "bbox" in plan.stage("crop").writes


def test_resources_come_from_each_engine():
    # serving.mode: serve (the default): the model stages are GPU-less clients; the GPUs are the deployments'
    plan = build_synthesis(config("cluster.yaml"))
    assert plan.stage("proposal").resources.num_gpus == 0 and plan.stage("proposal").resources.max_replicas == 4
    assert plan.stage("grounding").resources.num_gpus == 1  # SAM3 stays an actor pool of its own
    assert {m.label: m.gpus_per_replica for m in plan.models.deployments()} == {
        "qwen3-vl-32b": 2, "qwen2.5-vl-72b": 4, "judge-qwen3-32b": 2, "qwen3-vl-8b": 1}
    # serving.mode: actors: every model stage loads its own copy with its engine's resources
    actors = build_synthesis(config("cluster.yaml", "serving.mode=actors"))
    assert actors.stage("proposal").resources.num_gpus == 2 and actors.stage("answers_2").resources.num_gpus == 4
    assert actors.stage("crop").resources.num_gpus == 0 and not actors.stage("crop").stateful
    assert {s.name for s in actors.gpu_stages()} == set(PAPER_ORDER) - {"image_pool", "crop", "overlay", "mcq", "output"}
    for p in (plan, actors):
        with pytest.raises(RuntimeError, match="GPU"):
            p.require_resources()  # no GPU cluster here: a clear error before any work


def test_variants():
    vlm = build_synthesis(config("laptop.yaml", "models.grounding.backend=vlm", "models.grounding.coords=relative1000"))
    assert vlm.stage("grounding").cls is VLMGrounding and vlm.stage("grounding").models == ("tiny:qwen2_5_vl",)
    lean = build_synthesis(config("laptop.yaml", "models.judge=null", "difficulty.enabled=false"))
    assert "difficulty" not in lean.names() and not lean.stage("consensus").stateful
    one = build_synthesis(config("laptop.yaml", "models.answerers=[{model: 'tiny:qwen3_vl'}]"))
    assert [n for n in one.names() if n.startswith("answers")] == ["answers_1"]
    assert one.stage("consensus").kwargs["expected_samples"] == 4


def test_misordered_stages_are_caught():
    plan = build_synthesis(config())
    plan.stages.insert(1, plan.stages.pop(plan.names().index("crop")))
    with pytest.raises(ValueError, match="crop.*grounding_box"):
        plan.check()


def test_config_hash_tracks_what_changes_the_rows():
    base = config_hash(config())
    assert config_hash(config("laptop.yaml", "ray.num_cpus=2", "output.chunk_size=7", "models.teacher.resources.batch_size=2")) == base
    assert config_hash(config("laptop.yaml", "consensus.threshold=0.5")) != base
    assert config_hash(config("laptop.yaml", "models.teacher.model=tiny:qwen3_vl")) != base


def test_dataset_is_lazy(ray_session, tmp_path):
    image = tmp_path / "a.png"
    image.write_bytes(b"")
    with pytest.raises(RuntimeError, match="with plan.serving"):  # served models must be started first
        build_synthesis(config()).dataset([str(image)])
    plan = build_synthesis(config("laptop.yaml", "serving.mode=actors"))
    ds = plan.dataset([str(image)])  # nothing runs, no engine is built (the fixture would fail)
    assert type(ds).__name__ == "Dataset"
    names, op = [], ds._logical_plan.dag
    while op is not None:
        names.append(op.name)
        op = op.input_dependencies[0] if op.input_dependencies else None
    names = " ".join(names)
    for stage in ("ImagePool", "Proposal", "Sam3Grounding", "Consensus", "MCQAssembly", "Difficulty", "OutputRows", "output_table"):
        assert stage in names
