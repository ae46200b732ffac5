"""Connecting to Ray: a cluster through RAY_ADDRESS / ``ray.address``, else a local instance."""

from __future__ import annotations

import os
import sys
import tempfile

import ray

from zwz_ray.config import RayConfig
from zwz_ray.logs import get_logger

log = get_logger(__name__)

# Set by Ray in the environment of a `ray job submit` driver.
JOB_RUNTIME_ENV_VAR = "RAY_JOB_CONFIG_JSON_ENV_VAR"

# Environment that every Ray worker of a zwz-ray job gets (vLLM on CPU must not spawn a subprocess engine).
WORKER_ENV = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "TOKENIZERS_PARALLELISM": "false"}


def init_ray(cfg: RayConfig) -> None:
    """Start or join Ray once. An already-initialised Ray (tests, notebooks) is reused as is."""
    if ray.is_initialized():
        return
    address = cfg.address or os.environ.get("RAY_ADDRESS")
    env_vars = {k: os.environ.get(k, v) for k, v in WORKER_ENV.items()}
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
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = cfg.progress_bars


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
