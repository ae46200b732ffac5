"""The whole R2I chain in one Ray job: synthesis -> distillation -> evaluation -> one report.

With ``output.persist_rows`` (the default) the rows are written under ``<output.dir>/synth``, which
makes the synthesis resumable, and the trainer reads the committed rows back from there; without it the
lazy synthesis dataset streams into the ``TorchTrainer`` and nothing is written between the two. Every
path is checked before Ray starts (:func:`preflight`). The base student and the
distilled student are then evaluated side by side on the configured benchmark.
"""

from __future__ import annotations

import json
import time
from contextlib import ExitStack
from dataclasses import dataclass, replace
from typing import Any

import ray

from zwz_ray import uris
from zwz_ray.chain_report import BASE_LABEL, DISTILLED_LABEL
from zwz_ray.config import ConfigError, EngineConfig, RayConfig, section, setting, to_dict, uri
from zwz_ray.eval.config import EvalConfig
from zwz_ray.logs import get_logger
from zwz_ray.preflight import DataError
from zwz_ray.runtime import init_ray
from zwz_ray.synth.config import SynthConfig
from zwz_ray.train.config import DistillConfig

log = get_logger(__name__)

EXPORT_DIR = "model"  # where distillation exports under its output.dir (zwz_ray.train.export.MODEL_DIR; that module loads torch)


@dataclass
class ChainOutputConfig:
    """Where the chain writes."""

    dir: str = uri("outputs/r2i", doc="local path or fsspec URI; each job writes a sub-folder (synth/, distill/, eval/)")
    persist_rows: bool = setting(True, doc="also write the synthesis rows (resumable); false: stream them into the trainer only")


# Keys of the job sections that the chain sets itself (and what from). Where a user writes one of them
# (in the chain's config file or with --set) with another value than the chain's, that is a config error.
_FROM_OUT = "from output.dir; set output.dir instead"
_FROM_RAY = "from the top-level ray section; set ray.* instead"
OWNED = {
    "synth.output.dir": _FROM_OUT, "distill.data.path": _FROM_OUT, "distill.output.dir": _FROM_OUT,
    "distill.checkpoint.storage_path": _FROM_OUT, "evaluate.output.dir": _FROM_OUT,
    "synth.ray": _FROM_RAY, "distill.ray": _FROM_RAY, "evaluate.ray": _FROM_RAY,
    "evaluate.models": "the base is distill.student, the distilled student the chain's export; set distill.student instead",
}


@dataclass
class R2IConfig:
    """One chain: the three job configs plus where the chain writes.

    The chain sets the jobs' output folders (``synth/``, ``distill/``, ``eval/`` under ``output.dir``),
    their Ray runtime (``ray``), the distillation's data (the synthesis output) and the evaluated models
    (base + distilled student, with the engine settings of ``evaluate.models[0]``). Values that a job's
    own config file (``_base_``) gives for these keys are replaced; the same keys written in the chain's
    config or with ``--set`` must agree with the chain (see :meth:`as_run`).
    """

    output: ChainOutputConfig = section(ChainOutputConfig, doc="where the chain writes")
    synth: SynthConfig = section(SynthConfig, doc="the synthesis job (its output.dir and ray are set by the chain)")
    distill: DistillConfig = section(
        DistillConfig, doc="the distillation job (its data, output, checkpoint storage and ray are set by the chain)")
    evaluate: EvalConfig = section(
        EvalConfig, doc="the evaluation job; models[0] is the engine template for both students (output and ray set by the chain)")
    evaluate_base: bool = setting(True, doc="also evaluate the student before distillation")
    ray: RayConfig = section(RayConfig, doc="the Ray runtime of every job")

    def validate(self, where: str) -> None:
        if not self.evaluate.models:
            raise ConfigError("evaluate.models needs one engine: it is the template for the evaluated students")

    def as_run(self, written: set[str] | None = None) -> R2IConfig:
        """This config with the job settings the chain makes: what runs, and what is recorded and printed.

        ``written``: the keys the user wrote (the chain's file and ``--set``); one of :data:`OWNED` among them
        whose value differs from the chain's is a ConfigError naming the key and where the chain takes it from.
        """
        synth, distill = job_configs(self)
        ran = replace(self, synth=synth, distill=distill,
                      evaluate=eval_config(self, uris.join(distill.output.dir, EXPORT_DIR)))
        if written:
            check_owned(self, ran, written)
        return ran


def _get(tree: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if isinstance(tree, list):
            tree = tree[int(part)] if part.isdigit() and int(part) < len(tree) else None
        elif isinstance(tree, dict):
            tree = tree.get(part)
        else:
            return None
    return tree


def check_owned(given: R2IConfig, ran: R2IConfig, written: set[str]) -> None:
    mine, theirs = to_dict(given), to_dict(ran)
    for key in sorted(written):
        owner = next((k for k in OWNED if key == k or key.startswith(k + ".")), None)
        if owner is None:
            continue
        if key == "evaluate.models":  # the template list itself: one engine, whose model the chain replaces
            if len(given.evaluate.models) != 1:
                raise ConfigError("evaluate.models: the chain evaluates the base and the distilled student with the engine "
                                  f"settings of one template model; give one, not {len(given.evaluate.models)}")
            continue
        if _get(mine, key) != _get(theirs, key):
            raise ConfigError(f"{key}: the chain sets it (to {_get(theirs, key)!r}, {OWNED[owner]})")


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
        # persisted rows are read back from the synthesis output; streamed rows never touch data.path
        data=replace(cfg.distill.data, path=uris.join(out, "synth") if cfg.output.persist_rows else None),
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


def preflight(cfg: R2IConfig) -> None:
    """Every path the chain reads and every place it writes, before Ray starts (its own sub-folders exempt)."""
    from zwz_ray.preflight import check_eval, check_model, check_synthesis, check_writable_dir

    check_writable_dir("output.dir", cfg.output.dir)
    check_synthesis(cfg.synth, output=False, prefix="synth.")
    check_model("distill.student", cfg.distill.student)
    check_eval(cfg.evaluate, models=False, output=False, prefix="evaluate.")


def synthesize(cfg: R2IConfig, synth_cfg: SynthConfig, stack: ExitStack) -> tuple[ray.data.Dataset | None, dict]:
    """Run synthesis; return the stats and, when the rows are not persisted, the lazy dataset of kept rows
    (its served models then stay up, on ``stack``, until the chain ends: the trainer consumes it)."""
    if cfg.output.persist_rows:
        from zwz_ray.synth import run_synthesis

        result = run_synthesis(synth_cfg)
        log.info("synthesis: %s", result.summary().splitlines()[0])
        if result.kept_rows == 0:
            raise DataError(f"synthesis kept no rows; see {uris.join(result.output_dir, 'stats.json')} for the drop reasons")
        return None, result.stats  # distillation reads the committed rows of synth/ (its data.path)
    from zwz_ray.synth import build_synthesis

    plan = stack.enter_context(build_synthesis(synth_cfg).serving())
    return plan.dataset(), {"streamed": True}


def run_r2i(cfg: R2IConfig) -> R2IResult:
    """Synthesis -> distillation -> evaluation of the base and the distilled student -> report."""
    from zwz_ray.chain_report import write_report
    from zwz_ray.eval import run_eval
    from zwz_ray.train import run_distill

    cfg = cfg.as_run()  # idempotent: what the CLI already did, for Python callers
    preflight(cfg)
    init_ray(cfg.ray)
    timings: dict[str, float] = {}
    synth_cfg, distill_cfg = cfg.synth, cfg.distill

    with ExitStack() as stack:
        t0 = time.perf_counter()
        dataset, synth_stats = synthesize(cfg, synth_cfg, stack)
        timings["synthesis_s"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        distilled = run_distill(distill_cfg, dataset=dataset)
        timings["distillation_s"] = time.perf_counter() - t0
    if not distilled.export_dir:
        raise RuntimeError("distillation exported no model (set distill.output.export: true) so there is nothing to evaluate")

    t0 = time.perf_counter()
    evaluated = run_eval(replace(cfg.evaluate, models=[
        replace(m, model=distilled.export_dir) if m.name == DISTILLED_LABEL else m for m in cfg.evaluate.models]))
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
