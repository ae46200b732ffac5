"""Driver side of distillation: build the TorchTrainer, run it, write metrics and the summary.

``run_distill(cfg)`` reads the rows at ``data.path`` (see :func:`zwz_ray.train.data.locate_rows`);
``run_distill(cfg, dataset)`` takes a Ray Dataset instead (e.g. the synthesis pipeline itself), which
streams into the workers without being written to storage first. GRPO's reward judge is served once for
the run (:func:`served_judge`) and the workers connect to it. Every path is checked and the rows of
``data.path`` are counted before Ray starts; a run whose rows turn out unusable on the workers (all
dropped) ends once with :class:`~zwz_ray.preflight.DataError` and is never retried.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

from zwz_ray import uris
from zwz_ray.config import ConfigError, ResourcesConfig, resolve_paths, to_dict
from zwz_ray.logs import get_logger
from zwz_ray.train.config import DistillConfig
from zwz_ray.train.grpo_config import grpo_total_updates

# Ray, Ray Train and torch (through the worker, data and export modules) are imported inside the functions
# that run the job, so that ``import zwz_ray.train`` (and ``python -m pipelines.distill --help``) stays light.

log = get_logger(__name__)

METRICS_FILE, SUMMARY_FILE, PLOT_FILE = "metrics.jsonl", "distill_summary.json", "loss.png"


@dataclass
class DistillResult:
    """What a distillation run produced."""

    checkpoint_path: str | None  # the latest checkpoint in RunConfig storage
    export_dir: str | None  # <output.dir>/model: a Hugging Face model directory
    adapter_dir: str | None  # <output.dir>/adapter for LoRA runs exporting the adapter
    run_path: str  # <storage_path>/<run_name>
    steps: int
    history: list[dict] = field(default_factory=list)  # one metrics record per optimizer step
    dropped: dict[str, int] = field(default_factory=dict)
    summary_path: str = ""
    metrics_path: str = ""

    @property
    def final_loss(self) -> float | None:
        return self.history[-1]["loss"] if self.history else None


def given_rows(cfg: DistillConfig, dataset: Any) -> Any:
    """The training columns of a given dataset, materialised when its epochs (or retries) would re-run it."""
    from zwz_ray.train.examples import REQUIRED_COLUMNS

    ds = dataset.select_columns(list(REQUIRED_COLUMNS))
    mode = cfg.data.materialize
    if mode == "always" or (mode == "auto" and cfg.trainer.epochs > 1):
        log.info("materialising the given dataset in the object store: %d epochs read the same rows "
                 "without re-running its pipeline (data.materialize: never streams it instead)", cfg.trainer.epochs)
        ds = ds.materialize()
    return ds


def estimate_total_steps(cfg: DistillConfig, num_rows: int | None) -> int | None:
    """Optimizer steps of the whole run (an upper bound: dropped rows shorten epochs)."""
    t = cfg.trainer
    if t.objective == "grpo":
        return grpo_total_updates(cfg, num_rows)
    if num_rows is None:
        return t.max_steps
    per_epoch = (num_rows // t.num_workers) // (t.micro_batch_size * t.grad_accum_steps)
    total = per_epoch * t.epochs
    return min(total, t.max_steps) if t.max_steps else total


def count_given(cfg: DistillConfig, ds: Any) -> int | None:
    """Rows of a given dataset when it is materialised (free) or when a cosine schedule needs the total
    (that runs its pipeline once)."""
    from ray.data.dataset import MaterializedDataset

    if isinstance(ds, MaterializedDataset):
        return ds.count()
    if cfg.optim.schedule == "cosine" and not cfg.trainer.max_steps:
        log.info("counting the rows of the given dataset for the cosine schedule (set trainer.max_steps to skip this)")
        return ds.count()
    return None


def global_batch(cfg: DistillConfig) -> tuple[int, str]:
    """Rows one optimizer step (SFT) or one RL step (GRPO) needs, and what sets that number."""
    if cfg.trainer.objective == "grpo":
        return cfg.grpo.rollout_batch_prompts, "grpo.rollout_batch_prompts"
    return cfg.trainer.global_batch_size, "workers x micro_batch_size x grad_accum_steps"


def check_enough(cfg: DistillConfig, num_rows: int | None, where: str) -> None:
    batch, what = global_batch(cfg)
    if num_rows is not None and num_rows < batch:
        raise ConfigError(f"{where} holds {num_rows} rows, fewer than one global batch ({batch} = {what})")


@contextlib.contextmanager
def controller_poll(seconds: float | None):
    """Set Ray Train's controller poll interval for one fit() unless the environment already sets it."""
    key = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
    if seconds is None or key in os.environ:
        yield
        return
    os.environ[key] = str(seconds)  # read when fit() starts the controller
    try:
        yield
    finally:
        os.environ.pop(key, None)


@contextlib.contextmanager
def served_judge(cfg: DistillConfig):
    """GRPO's reward judge as ONE Ray Serve deployment for the whole run (``grpo.reward.serving.mode: serve``,
    an hf or vllm judge); yields model key -> DeploymentRef for the workers, deletes the deployment on exit
    (also on an error or Ctrl-C). Yields ``{}`` (the workers load or call the judge themselves) otherwise."""
    from zwz_ray.engines.deployments import Deployments, ModelPlan

    reward = cfg.grpo.reward
    plan = ModelPlan(reward.serving)
    if cfg.trainer.objective == "grpo" and reward.judge is not None and reward.function is None:
        plan.use(reward.judge, "reward")
    if not plan.deployments():
        yield {}
        return
    if cfg.trainer.use_gpu:  # the judge's GPUs come on top of the workers'
        plan.pool("trainer", cfg.student, "ray-train", ResourcesConfig(num_gpus=1.0, min_replicas=cfg.trainer.num_workers,
                                                                      max_replicas=cfg.trainer.num_workers))
    plan.require_gpus("GRPO with a served reward judge")
    with Deployments(plan, "distill") as deployments:
        log.info("reward judge %s served for the run", reward.judge.label)
        yield dict(deployments.refs)


def make_trainer(cfg: DistillConfig, ds: Any, total_steps: int | None, served: dict | None = None) -> Any:
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from zwz_ray.runtime import train_log_level
    from zwz_ray.train.data import ingest_config
    from zwz_ray.train.worker import train_loop_per_worker

    t, c = cfg.trainer, cfg.checkpoint
    resources = {"CPU": t.cpus_per_worker, **({"GPU": 1} if t.use_gpu else {})}
    tb = uris.join(cfg.output.dir, "tensorboard") if cfg.output.tensorboard and not uris.is_remote(cfg.output.dir) else None
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"cfg": to_dict(cfg), "total_steps": total_steps, "tensorboard_dir": tb, "served": served or {}},
        scaling_config=ScalingConfig(num_workers=t.num_workers, use_gpu=t.use_gpu, resources_per_worker=resources),
        run_config=RunConfig(name=c.run_name, storage_path=c.storage_path,
                             failure_config=FailureConfig(max_failures=c.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=c.num_to_keep),
                             logging_config=LoggingConfig(log_level=train_log_level())),
        datasets={"train": ds},
        dataset_config=ingest_config(),
    )


def run_distill(cfg: DistillConfig, dataset: Any = None) -> DistillResult:
    """Distil rows (``data.path`` or ``dataset``) into ``cfg.student`` on Ray Train."""
    from zwz_ray.preflight import DataError, check_distill
    from zwz_ray.runtime import init_ray, require_gpus
    from zwz_ray.train.data import locate_rows, read_rows
    from zwz_ray.train.export import ADAPTER_DIR, MODEL_DIR

    cfg = resolve_paths(cfg)  # workers run in other folders (and processes)
    if dataset is None and not cfg.data.path:
        raise ConfigError("data.path is empty and no dataset was given")
    check_distill(cfg, data=dataset is None)  # every path mistake, before Ray starts
    rows = None
    if dataset is None:
        rows = locate_rows(cfg.data.path)
        log.info("training rows: %d in %d file(s) of %s (%s, %s layout)", rows.num_rows, len(rows.files), cfg.data.path,
                 rows.kind, rows.layout)
        check_enough(cfg, rows.num_rows, f"data.path: {cfg.data.path}")
    init_ray(cfg.ray)
    if cfg.trainer.use_gpu:
        require_gpus(cfg.trainer.num_workers, "distillation (trainer.use_gpu with trainer.num_workers workers)")
    ds = given_rows(cfg, dataset) if rows is None else read_rows(rows)
    num_rows = count_given(cfg, ds) if rows is None else rows.num_rows
    check_enough(cfg, num_rows, "the given dataset")
    batch = global_batch(cfg)[0]
    total_steps = estimate_total_steps(cfg, num_rows)
    log.info("distilling (%s) into %s with %d worker(s), global batch %d, run %s/%s", cfg.trainer.objective, cfg.student,
             cfg.trainer.num_workers, batch, cfg.checkpoint.storage_path, cfg.checkpoint.run_name)
    start = time.time()
    with served_judge(cfg) as served, controller_poll(cfg.trainer.controller_poll_s):
        result = make_trainer(cfg, ds, total_steps, served).fit()
    out = result.return_value or {}
    if out.get("error"):  # deterministic (no usable rows): the workers ended the run instead of failing it
        raise DataError(out["error"])
    export = out.get("export", {})
    res = DistillResult(
        checkpoint_path=result.checkpoint.path if result.checkpoint else None,
        export_dir=export.get(MODEL_DIR), adapter_dir=export.get(ADAPTER_DIR), run_path=result.path,
        steps=out.get("steps", 0), history=out.get("history", []), dropped=out.get("dropped", {}),
    )
    write_outputs(cfg, res, out, time.time() - start)
    return res


def write_outputs(cfg: DistillConfig, res: DistillResult, out: dict, wall_s: float) -> None:
    """metrics.jsonl, distill_summary.json and a loss plot in ``output.dir``."""
    fs, root = uris.filesystem(cfg.output.dir)
    fs.makedirs(root, exist_ok=True)
    res.metrics_path, res.summary_path = uris.join(cfg.output.dir, METRICS_FILE), uris.join(cfg.output.dir, SUMMARY_FILE)
    with fs.open(f"{root}/{METRICS_FILE}", "w") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in res.history)
    with fs.open(f"{root}/{SUMMARY_FILE}", "w") as fh:
        json.dump(summary(cfg, res, out, wall_s), fh, indent=2)
    if cfg.trainer.objective == "grpo":
        from zwz_ray.train.reward import reward_plot

        plot, plot_file = reward_plot(res.history), "reward.png"
    else:
        plot, plot_file = loss_plot(res.history), PLOT_FILE
    if plot:
        with fs.open(f"{root}/{plot_file}", "wb") as fh:
            fh.write(plot)
    log.info("done: %d steps, final loss %s, dropped %s; summary in %s", res.steps,
             f"{res.final_loss:.4f}" if res.final_loss is not None else "n/a", res.dropped, res.summary_path)


def summary(cfg: DistillConfig, res: DistillResult, out: dict, wall_s: float) -> dict:
    h = res.history
    mean = lambda key: sum(r[key] for r in h) / len(h) if h else None  # noqa: E731
    return {
        "student": cfg.student, "objective": cfg.trainer.objective, "steps": res.steps, "epochs_completed": out.get("epoch"),
        "resumed_from_step": out.get("resumed_from_step"), "num_workers": cfg.trainer.num_workers,
        "global_batch_size": cfg.trainer.global_batch_size, "first_loss": h[0]["loss"] if h else None,
        "final_loss": res.final_loss, "mean_samples_per_s": mean("samples_per_s"), "mean_tokens_per_s": mean("tokens_per_s"),
        "dropped": res.dropped, "dropped_total": sum(res.dropped.values()), "checkpoint": res.checkpoint_path,
        "export_dir": res.export_dir, "adapter_dir": res.adapter_dir, "run_path": res.run_path, "wall_s": round(wall_s, 2),
        "config": to_dict(cfg),
    }


def loss_plot(history: list[dict]) -> bytes | None:
    """PNG of loss and learning rate per step (None without history)."""
    if not history:
        return None
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.2))
    ax1.plot(steps, [r["loss"] for r in history])
    ax1.set(xlabel="step", ylabel="loss (answer tokens)", title="training loss")
    ax2.plot(steps, [r["lr"] for r in history])
    ax2.set(xlabel="step", ylabel="lr", title="learning rate")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()
