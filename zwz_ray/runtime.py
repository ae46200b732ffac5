"""Connecting to Ray: a cluster through RAY_ADDRESS / ``ray.address``, else a local instance."""

from __future__ import annotations

import os
import sys
import tempfile

import ray

from zwz_ray.config import RayConfig
from zwz_ray.logs import get_logger
from zwz_ray.progress import interactive

log = get_logger(__name__)

# Set by Ray in the environment of a `ray job submit` driver.
JOB_RUNTIME_ENV_VAR = "RAY_JOB_CONFIG_JSON_ENV_VAR"

# Environment that every Ray worker of a zwz-ray job gets (vLLM on CPU must not spawn a subprocess engine).
WORKER_ENV = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "TOKENIZERS_PARALLELISM": "false"}

# Ray Data settings for the workers of a local instance: list a dataset's files in one thread. The threaded
# listing gains nothing on a laptop's few local files and can end with a harmless InterruptedError traceback
# from a ListFiles task (a race in Ray 2.60's file-listing work queue).
LOCAL_DATA_ENV = {"RAY_DATA_LIST_FILES_THREADED_NUM_WORKERS": "1"}


def init_ray(cfg: RayConfig) -> None:
    """Start or join Ray once. An already-initialised Ray (tests, notebooks) is reused as is."""
    if ray.is_initialized():
        return
    address = cfg.address or os.environ.get("RAY_ADDRESS")
    defaults = {**WORKER_ENV, **({} if address else LOCAL_DATA_ENV)}
    env_vars = {k: os.environ.get(k, v) for k, v in defaults.items()}
    for key in ("ZWZ_CACHE_DIR", "ZWZ_LOG_LEVEL", "HF_HOME", "HF_HUB_OFFLINE"):
        if key in os.environ:
            env_vars[key] = os.environ[key]
    kwargs: dict = {"log_to_driver": cfg.log_to_driver}
    if os.environ.get(JOB_RUNTIME_ENV_VAR):
        # Under `ray job submit` the job's runtime env (working_dir, env_vars from --runtime-env-json)
        # already applies to every worker; passing a second one would conflict with it.
        _leave_working_dir()
    else:
        kwargs["runtime_env"] = {"env_vars": env_vars}
    if address:
        log.info("joining Ray cluster at %s", address)
        ray.init(address=address, **kwargs)
    else:
        log.info("starting a local Ray instance")
        ray.init(num_cpus=cfg.num_cpus, include_dashboard=False, **kwargs)
    configure_ray_data(ray.data.DataContext.get_current(), cfg.progress_bars)
    if not interactive():
        log.info("%s", HARMLESS_NOTICE)


# Lines Ray itself prints in a successful run that read like failures, explained once rather than hidden: they
# come from Ray's C++ core worker and raylet, from Ray Train's placement-group cleaner actor and from a Ray Data
# worker thread, where no Ray setting turns them off (filtering Ray's output by text could hide real errors).
HARMLESS_NOTICE = (
    "Ray prints a few harmless lines in a healthy run: 'has constructor arguments in the object store and "
    "max_restarts > 0' (actor pools keep their arguments referenced for the whole job); 'worker processes have been "
    "started ... maximum expected startup concurrency' (the model actor pools start together on a small machine); "
    "'Failed to query Ray Train Controller actor state', or a ConnectionError traceback from PlacementGroupCleaner "
    "when several Ray instances run on the machine (its state-API probe needs the dashboard, which a local instance "
    "runs without); an InterruptedError traceback from a ListFiles task (a file-listing thread stopped after its "
    "work was done). Real errors end the job with a non-zero exit and a message from zwz_ray.")


def configure_ray_data(ctx: ray.data.DataContext, progress_bars: bool) -> None:
    """Ray Data's progress bars in a terminal; quiet Ray Data elsewhere.

    When stdout is not a terminal, Ray Data replaces its bars with a status dump of every operator
    every 10 s (hundreds of lines per job) and logs each execution plan; the jobs print their own
    progress lines (``zwz_ray.progress``) instead. Errors and the one-line "execution finished"
    notice per dataset still print.
    """
    if interactive():
        ctx.enable_progress_bars = progress_bars
        return
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.verbose_stats_logs = False
    ctx.enable_auto_log_stats = False


def train_log_level() -> str:
    """Ray Train's log level: INFO in a terminal; WARNING elsewhere, where its per-report lines
    ("Reporting training result N: TrainingReport(...)") would repeat the trainer's own step lines."""
    return "INFO" if interactive() else "WARNING"


def _leave_working_dir() -> None:
    """A `ray job submit` driver starts inside the job's unpacked working_dir, which the node's runtime
    env agent may delete and unpack again while the job runs (when the job's last worker using it
    exits); libraries that call os.getcwd() then fail. Entry points have made every config path
    absolute by now, so the driver keeps its imports and moves to a directory that stays put."""
    here = os.getcwd()
    sys.path[:] = [here if p in ("", ".") else p for p in sys.path]
    if here not in sys.path:
        sys.path.insert(0, here)
    os.chdir(tempfile.gettempdir())
    log.info("running from %s; the job's working_dir %s stays on sys.path", os.getcwd(), here)


def cluster_resources() -> dict[str, float]:
    return dict(ray.cluster_resources()) if ray.is_initialized() else {}


def require_gpus(needed: float, what: str) -> None:
    """Fail early, with a clear message, when a GPU stage cannot ever be scheduled.

    On an autoscaling cluster GPUs may appear later; set ZWZ_ALLOW_PENDING_GPUS=1 to skip the check.
    """
    if needed <= 0 or os.environ.get("ZWZ_ALLOW_PENDING_GPUS") == "1":
        return
    have = cluster_resources().get("GPU", 0.0)
    if have < needed:
        raise RuntimeError(
            f"{what} asks for {needed:g} GPU(s) but the Ray cluster has {have:g}. Use a GPU cluster, set the stage's "
            f"resources.num_gpus to 0 (and backend 'hf' on CPU), or set ZWZ_ALLOW_PENDING_GPUS=1 on an autoscaling "
            f"cluster whose GPU nodes start on demand."
        )
