"""``ServingConfig``: how a job runs its models (each served once on Ray Serve, or one copy per stage).

Every job config that runs models holds one (``serving:``); see :mod:`zwz_ray.engines.deployments`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from zwz_ray.config import bounded, setting


@dataclass
class ServingConfig:
    """How models are run: each one served once on Ray Serve, or one copy per stage."""

    mode: Literal["serve", "actors"] = setting("serve", doc=(
        "serve: every model (hf or vllm backend) is ONE Ray Serve deployment (min..max replicas of its resources) that "
        "every stage naming it calls; actors: every stage loads its own copy in its own actor pool. openai-backend "
        "models are endpoints either way"))
    route_by_image: bool = setting(True, doc="send the requests about one image to the same replica (prefix and "
                                   "encoder cache reuse); false: Serve's power-of-two-choices routing")
    retry_s: float = bounded(600.0, 0.0, doc="a call whose replica died or was unreachable is sent again (Serve restarts "
                             "the replica; a large model takes minutes to load) until this many seconds have passed; "
                             "then its requests fail as engine errors, which the next run redoes")
    call_timeout_s: float = bounded(1800.0, 1.0, doc="a call without an answer after this many seconds counts as failed and "
                                    "is sent again (a hung engine); longer than the longest generation of a batch")
    client_cpus: float = bounded(0.1, 0.0, doc="CPUs of one stage client actor (it only sends requests and reads rows)")
    batch_wait_s: float = bounded(0.01, 0.0, doc="a replica waits this long for more calls to batch with the first")
    allow_pending_gpus: bool = setting(False, doc="start even when the cluster has fewer GPUs than the plan's minimum "
                                       "(an autoscaling cluster adds GPU nodes on demand); also ZWZ_ALLOW_PENDING_GPUS=1")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = setting("WARNING", doc="Serve's own log level (replicas, "
                                                                       "controller); per-request access logs stay off")
