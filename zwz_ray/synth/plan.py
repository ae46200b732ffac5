"""``build_synthesis(cfg) -> SynthesisPlan``: the stage list, checkable without loading a model.

A plan holds one :class:`StageSpec` per paper step (class, constructor arguments, Ray
resources). Nothing is built until Ray Data runs the stages: :meth:`SynthesisPlan.dataset`
returns a lazy, streaming ``ray.data.Dataset`` that a trainer can consume directly.
"""

from __future__ import annotations

import hashlib
import json
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from zwz_ray import __version__
from zwz_ray.config import EngineConfig, ResourcesConfig, to_dict
from zwz_ray.engines.deployments import Deployments, ModelPlan, stage_resources
from zwz_ray.prompts import PROMPT_VERSION
from zwz_ray.resources import map_batches_kwargs
from zwz_ray.synth.columns import output_table
from zwz_ray.synth.config import SynthConfig
from zwz_ray.synth.stages import (
    Answers,
    Consensus,
    Difficulty,
    Distractors,
    ImagePool,
    MCQAssembly,
    MicroCrop,
    OutputRows,
    Overlay,
    Proposal,
    Questions,
    Sam3Grounding,
    Stage,
    Validation,
    VLMGrounding,
)

# Settings that change where or how fast the work runs, not what it produces.
_VOLATILE = {"resources", "device", "max_batch_requests", "max_concurrency", "timeout_s", "max_retries", "api_key_env",
             "base_url", "gpu_memory_utilization", "kv_cache_memory_bytes", "enforce_eager", "tensor_parallel_size",
             "max_prompts_per_forward"}
# `engines` holds the named sections that `models` was resolved from (the resolved copies are hashed).
_VOLATILE_SECTIONS = {"ray", "output", "demo", "cpu", "reliability", "serving", "engines"}
_VOLATILE_INPUT = {"paths", "max_images", "generate_demo", "probe_threads", "probe_batch"}


@dataclass
class StageSpec:
    """One stage as Ray Data will run it."""

    name: str
    cls: type[Stage]
    kwargs: dict[str, Any]
    resources: ResourcesConfig
    stateful: bool
    models: tuple[str, ...] = ()
    engines: bool = False  # the stage calls engines: it gets the served deployments (``served``) to connect to

    @property
    def reads(self) -> tuple[str, ...]:
        return self.cls.reads

    @property
    def writes(self) -> tuple[str, ...]:
        return self.cls.writes

    @property
    def levels(self) -> tuple[int, int]:
        return self.cls.level_in, self.cls.level_out

    def build(self) -> Stage:
        """Instantiate the stage in this process (a model stage loads its model here).

        :meth:`SynthesisPlan.apply` hands every stateless stage to Ray Data built this way."""
        return self.cls(**self.kwargs)


@dataclass
class SynthesisPlan:
    config: SynthConfig
    stages: list[StageSpec] = field(default_factory=list)
    config_hash: str = ""
    models: ModelPlan | None = None  # every model and actor pool, each model served once (see --plan)
    served: dict = field(default_factory=dict)  # model key -> DeploymentRef while the deployments run
    _serving: bool = False

    def names(self) -> list[str]:
        return [s.name for s in self.stages]

    def stage(self, name: str) -> StageSpec:
        for spec in self.stages:
            if spec.name == name:
                return spec
        raise KeyError(f"no stage {name!r}; stages: {self.names()}")

    def levels(self) -> list[tuple[str, int, int]]:
        return [(s.name, *s.levels) for s in self.stages]

    def check(self) -> None:
        """Every column a stage reads is written by an earlier stage (or is the input ``source``)."""
        known = {"source"}
        for spec in self.stages:
            missing = [c for c in spec.reads if c not in known]
            if missing:
                raise ValueError(f"stage {spec.name!r} reads {missing}, which no earlier stage writes")
            known.update(spec.writes)

    def gpu_stages(self) -> list[StageSpec]:
        return [s for s in self.stages if s.resources.num_gpus > 0]

    def require_resources(self) -> None:
        """The plan's total GPUs at its minimum (every deployment and pool) must fit the cluster."""
        self.models.require_gpus("synthesis")

    def describe(self) -> str:
        """The deployment plan (``--plan``): per model its stages, replicas and GPUs, then the totals."""
        return self.models.describe("synthesis plan")

    @contextmanager
    def serving(self):
        """Start every served model (one Ray Serve deployment each) for the stages; delete them on exit."""
        from zwz_ray.runtime import init_ray

        init_ray(self.config.ray)
        self.require_resources()
        with Deployments(self.models, "synth") as deployments:
            self.served, self._serving = deployments.refs, True
            try:
                yield self
            finally:
                self.served, self._serving = {}, False

    # ------------------------------------------------------------------ Ray Data

    def dataset(self, paths: list[str] | None = None, *, include_drops: bool = False):
        """A lazy, streaming dataset of synthesized rows for ``paths`` (default: ``input`` of the config).

        Kept rows in the output layout, or with ``include_drops`` every row (all columns, drops marked).
        """
        from zwz_ray.images import list_images
        from zwz_ray.synth.stages import select_images

        sources = list_images(paths) if paths is not None else select_images(self.config)
        return self.dataset_from_sources(sources, include_drops=include_drops)

    def dataset_from_sources(self, sources: list[str], *, include_drops: bool = False):
        import ray

        from zwz_ray.runtime import init_ray

        if not sources:
            raise ValueError("no images to synthesize from")
        if not self._serving:  # serving() has started Ray and checked the plan's GPUs already
            init_ray(self.config.ray)
            self.require_resources()
        if self.models.deployments() and not self._serving:
            raise RuntimeError("this plan serves its models on Ray Serve: build and consume its dataset inside "
                               "`with plan.serving():` (or set serving.mode=actors)")
        ds = ray.data.from_items([{"source": s} for s in sources], override_num_blocks=min(len(sources), 1024))
        ds = self.apply(ds)
        if include_drops:
            return ds
        return ds.map_batches(output_table, batch_format="pyarrow", zero_copy_batch=False)

    def apply(self, ds):
        """Append every stage to ``ds`` as a ``map_batches`` operator."""
        for spec in self.stages:
            kw = dict(batch_format="pyarrow", zero_copy_batch=False, **map_batches_kwargs(spec.resources, actors=spec.stateful))
            if spec.stateful:
                kwargs = {**spec.kwargs, "served": self.served} if spec.engines else spec.kwargs
                ds = ds.map_batches(spec.cls, fn_constructor_kwargs=kwargs, **kw)
            else:
                ds = ds.map_batches(spec.build(), **kw)
        return ds


# --------------------------------------------------------------------------- building


def config_hash(cfg: SynthConfig) -> str:
    """A hash of what determines the output rows (not where or how fast they are made)."""

    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if k not in _VOLATILE}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    tree = {k: v for k, v in to_dict(cfg).items() if k not in _VOLATILE_SECTIONS}
    tree["input"] = {k: v for k, v in tree["input"].items() if k not in _VOLATILE_INPUT}
    tree["prompt_version"] = PROMPT_VERSION
    text = json.dumps(strip(tree), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def provenance(cfg: SynthConfig, digest: str) -> dict:
    m = cfg.models
    grounder = m.grounding.model if m.grounding.backend == "sam3" else m.teacher.label
    return {
        "models": {
            "teacher": m.teacher.label,
            "answerers": [a.label for a in m.answerers],
            "judge": m.judge.label if m.judge else None,
            "grounding": f"{m.grounding.backend}:{grounder}",
            "student": m.student.label if m.student and cfg.difficulty.enabled else None,
        },
        "prompt_version": PROMPT_VERSION,
        "seeds": {"teacher": m.teacher.seed, "answerers": [a.seed for a in m.answerers], "mcq": cfg.mcq.seed,
                  "student": m.student.seed if m.student else None},
        "config_hash": digest,
        "zwz_ray": __version__,
    }


def _cpu(cfg: SynthConfig) -> ResourcesConfig:
    return ResourcesConfig(num_cpus=cfg.cpu.num_cpus, batch_size=cfg.cpu.batch_size)


def _model(name: str, cls: type, engine: EngineConfig, cfg: SynthConfig, models: ModelPlan, **kwargs: Any) -> StageSpec:
    models.use(engine, name)
    resources = stage_resources(engine, cfg.serving, served=cfg.serving.mode == "serve")
    return StageSpec(name, cls, {"engine_config": engine, "name": name, **kwargs}, resources, True, (engine.label,), True)


def _with_breaker(stages: list[StageSpec], cfg: SynthConfig) -> None:
    for spec in stages:
        if "engine_config" in spec.kwargs:
            spec.kwargs["reliability"] = cfg.reliability


def build_synthesis(cfg: SynthConfig) -> SynthesisPlan:
    """The stage list for ``cfg`` (paper order), without building any engine."""
    m, digest, models = cfg.models, config_hash(cfg), ModelPlan(cfg.serving)
    stages = [StageSpec("image_pool", ImagePool, {"input": cfg.input}, _cpu(cfg), False)]
    stages.append(_model("proposal", Proposal, m.teacher, cfg, models, proposal=cfg.proposal, input=cfg.input))
    if m.grounding.backend == "sam3":
        models.pool("grounding", m.grounding.model, "sam3", m.grounding.resources)
        stages.append(StageSpec("grounding", Sam3Grounding, {"grounding": m.grounding, "input": cfg.input},
                                m.grounding.resources, True, (m.grounding.model,)))
    else:
        stages.append(_model("grounding", VLMGrounding, m.teacher, cfg, models, grounding=m.grounding, input=cfg.input))
    stages.append(StageSpec("crop", MicroCrop, {"crop": cfg.crop, "input": cfg.input}, _cpu(cfg), False))
    stages.append(_model("questions", Questions, m.teacher, cfg, models, questions=cfg.questions))
    stages.append(_model("validation", Validation, m.teacher, cfg, models, validation=cfg.validation, input=cfg.input))
    for i, answerer in enumerate(m.answerers, start=1):
        stages.append(_model(f"answers_{i}", Answers, answerer, cfg, models, answers=cfg.answers, consensus=cfg.consensus,
                             position=i, answerers=len(m.answerers),
                             judged=m.judge is not None and cfg.consensus.mode != "normalizer"))
    expected = cfg.answers.samples_per_teacher * len(m.answerers)
    judge_kwargs = {"consensus": cfg.consensus, "judge": m.judge, "expected_samples": expected, "name": "consensus"}
    if m.judge is not None and cfg.consensus.mode != "normalizer":
        models.use(m.judge, "consensus")
        stages.append(StageSpec("consensus", Consensus, judge_kwargs, stage_resources(m.judge, cfg.serving, cfg.serving.mode == "serve"),
                                True, (m.judge.label,), True))
    else:
        stages.append(StageSpec("consensus", Consensus, judge_kwargs, _cpu(cfg), False))
    stages.append(StageSpec("overlay", Overlay, {"overlay": cfg.overlay, "input": cfg.input}, _cpu(cfg), False))
    stages.append(_model("distractors", Distractors, m.teacher, cfg, models, mcq=cfg.mcq))
    stages.append(StageSpec("mcq", MCQAssembly, {"mcq": cfg.mcq}, _cpu(cfg), False))
    if cfg.difficulty.enabled:
        stages.append(_model("difficulty", Difficulty, m.student, cfg, models, difficulty=cfg.difficulty, judge=m.judge))
        if m.judge is not None and cfg.difficulty.judge:
            models.use(m.judge, "difficulty", own_pool=False)  # actors mode: loaded inside the difficulty actors
    stages.append(StageSpec("output", OutputRows, {"provenance": provenance(cfg, digest)}, _cpu(cfg), False))
    _with_breaker(stages, cfg)
    plan = SynthesisPlan(cfg, stages, digest, models)
    plan.check()
    return plan
