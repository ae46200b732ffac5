"""A ``resources`` block of the config as Ray Data ``map_batches`` arguments.

Synthesis stages, evaluation answerers and judges and the attention-coverage pass all size their
operators the same way: a stateful step (one that holds a model) runs as an autoscaling actor
pool of ``min_replicas..max_replicas``; a stateless one as tasks.

Fault tolerance is set explicitly rather than left to Ray Data's defaults (infinite actor restarts
and task retries): an actor whose process dies (OOM killer, a preempted node, SIGKILL) is restarted
up to ``ACTOR_MAX_RESTARTS`` times and its in-flight batch is sent again, up to
``MAX_TASK_RETRIES`` times; a stateless task is retried as often. Only system failures are retried
(``retry_exceptions`` is left false): a stage turns its own exceptions into drops, and an exception
that escapes a stage (the circuit breaker) must stop the job, not run again. Bounded, so an input that
kills its worker every time fails the job instead of looping forever.
"""

from __future__ import annotations

from typing import Any

from zwz_ray.config import ResourcesConfig

ACTOR_MAX_RESTARTS = 4
MAX_TASK_RETRIES = 4


def map_batches_kwargs(res: ResourcesConfig, *, actors: bool, batch_size: int | None = None) -> dict[str, Any]:
    """``batch_size``, ``num_cpus``, ``num_gpus`` (when any), the retry options and, for ``actors``, the actor-pool ``compute``."""
    kw: dict[str, Any] = {"batch_size": batch_size or res.batch_size, "num_cpus": res.num_cpus}
    if res.num_gpus:
        kw["num_gpus"] = res.num_gpus
    if actors:
        import ray.data

        kw["compute"] = ray.data.ActorPoolStrategy(min_size=res.min_replicas, max_size=res.max_replicas)
        kw.update(max_restarts=ACTOR_MAX_RESTARTS, max_task_retries=MAX_TASK_RETRIES)
    else:
        kw["max_retries"] = MAX_TASK_RETRIES
    return kw
