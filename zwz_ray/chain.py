"""The whole R2I chain in one Ray job: synthesis -> distillation -> evaluation -> one report.

The synthesis dataset goes straight into the distillation ``TorchTrainer``. With
``output.persist_rows`` (the default) the rows are also written under ``<output.dir>/synth``, which
makes the synthesis resumable and lets the trainer read them back; without it the lazy synthesis
dataset streams into the trainer and nothing is written between the two. The base student and the
distilled student are then evaluated side by side on the configured benchmark.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace

import ray

from zwz_ray import uris
from zwz_ray.config import ConfigError, EngineConfig, RayConfig, section, setting, to_dict, uri
from zwz_ray.eval.config import EvalConfig
from zwz_ray.logs import get_logger
from zwz_ray.runtime import init_ray
from zwz_ray.synth.config import SynthConfig
from zwz_ray.train.config import DistillConfig

log = get_logger(__name__)

BASE_LABEL = "base"
DISTILLED_LABEL = "distilled"


@dataclass
class ChainOutputConfig:
    """Where the chain writes."""

    dir: str = uri("outputs/r2i", doc="local path or fsspec URI; each job writes a sub-folder (synth/, distill/, eval/)")
    persist_rows: bool = setting(True, doc="also write the synthesis rows (resumable); false: stream them into the trainer only")


@dataclass
class R2IConfig:
    """One chain: the three job configs plus where the chain writes.

    The chain sets the jobs' output folders (``synth/``, ``distill/``, ``eval/`` under ``output.dir``),
    the distillation's data (the synthesis dataset) and the evaluated models (base + distilled student);
    what those sections say for them is replaced.
    """

    output: ChainOutputConfig = section(ChainOutputConfig, doc="where the chain writes")
    synth: SynthConfig = section(SynthConfig, doc="the synthesis job (its output.dir is set by the chain)")
    distill: DistillConfig = section(DistillConfig, doc="the distillation job (its data and output folders are set by the chain)")
    evaluate: EvalConfig = section(EvalConfig, doc="the evaluation job; models[0] is the engine template for both students")
    evaluate_base: bool = setting(True, doc="also evaluate the student before distillation")
    ray: RayConfig = section(RayConfig, doc="the Ray runtime of every job")

    def validate(self, where: str) -> None:
        if not self.evaluate.models:
            raise ConfigError("evaluate.models needs one engine: it is the template for the evaluated students")


@dataclass
class R2IResult:
    output_dir: str
    report_path: str
    summary: dict


def job_configs(cfg: R2IConfig) -> tuple[SynthConfig, DistillConfig]:
    """The synthesis and distillation configs as the chain runs them."""
    out = cfg.output.dir
    synth = replace(cfg.synth, output=replace(cfg.synth.output, dir=uris.join(out, "synth")), ray=cfg.ray)
    distill = replace(
        cfg.distill,
        data=replace(cfg.distill.data, path=uris.join(out, "synth", "kept")),
        output=replace(cfg.distill.output, dir=uris.join(out, "distill")),
        checkpoint=replace(cfg.distill.checkpoint, storage_path=uris.join(out, "distill", "runs")),
        ray=cfg.ray,
    )
    return synth, distill


def eval_config(cfg: R2IConfig, export_dir: str) -> EvalConfig:
    """Evaluate the base and the distilled student with the engine settings of ``evaluate.models[0]``."""
    template: EngineConfig = cfg.evaluate.models[0]
    models = [replace(template, model=export_dir, name=DISTILLED_LABEL)]
    if cfg.evaluate_base:
        models.insert(0, replace(template, model=cfg.distill.student, name=BASE_LABEL))
    output = replace(cfg.evaluate.output, dir=uris.join(cfg.output.dir, "eval"))
    return replace(cfg.evaluate, models=models, output=output, ray=cfg.ray)


def synthesize(cfg: R2IConfig, synth_cfg: SynthConfig) -> tuple[ray.data.Dataset, dict]:
    """Run synthesis; return the kept rows as a Ray Dataset and the synthesis stats."""
    if cfg.output.persist_rows:
        from zwz_ray.synth import run_synthesis

        result = run_synthesis(synth_cfg)
        log.info("synthesis: %s", result.summary().splitlines()[0])
        if result.kept_rows == 0:
            raise RuntimeError(f"synthesis kept no rows; see {uris.join(result.output_dir, 'stats.json')} for the drop reasons")
        return ray.data.read_parquet(uris.join(result.output_dir, "kept")), result.stats
    from zwz_ray.synth import build_synthesis

    ds = build_synthesis(synth_cfg).dataset()
    return ds, {"streamed": True}


def run_r2i(cfg: R2IConfig) -> R2IResult:
    """Synthesis -> distillation -> evaluation of the base and the distilled student -> report."""
    from zwz_ray.chain_report import write_report
    from zwz_ray.eval import run_eval
    from zwz_ray.train import run_distill

    init_ray(cfg.ray)
    timings: dict[str, float] = {}
    synth_cfg, distill_cfg = job_configs(cfg)

    t0 = time.perf_counter()
    dataset, synth_stats = synthesize(cfg, synth_cfg)
    timings["synthesis_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    distilled = run_distill(distill_cfg, dataset=dataset)
    timings["distillation_s"] = time.perf_counter() - t0
    if not distilled.export_dir:
        raise RuntimeError("distillation exported no model (set distill.output.export: true) so there is nothing to evaluate")

    t0 = time.perf_counter()
    evaluated = run_eval(eval_config(cfg, distilled.export_dir))
    timings["evaluation_s"] = time.perf_counter() - t0

    summary = {
        "config": to_dict(cfg),
        "synthesis": synth_stats,
        "distillation": {"steps": distilled.steps, "final_loss": distilled.final_loss, "dropped": distilled.dropped,
                         "export_dir": distilled.export_dir, "history": distilled.history},
        "evaluation": evaluated.metrics,
        "timings": timings,
        "ray": {"nodes": sum(1 for n in ray.nodes() if n.get("Alive")), "resources": dict(ray.cluster_resources())},
    }
    uris.atomic_write(uris.join(cfg.output.dir, "r2i_summary.json"), json.dumps(summary, indent=2, default=str))
    report = write_report(cfg.output.dir, summary, eval_report=evaluated.report_path)
    return R2IResult(output_dir=cfg.output.dir, report_path=report, summary=summary)
