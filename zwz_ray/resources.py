"""A ``resources`` block of the config as Ray Data ``map_batches`` arguments.

Synthesis stages, evaluation answerers and judges and the attention-coverage pass all size their
operators the same way: a stateful step (one that holds a model) runs as an autoscaling actor
pool of ``min_replicas..max_replicas``; a stateless one as tasks.
"""

from __future__ import annotations

from typing import Any

from zwz_ray.config import ResourcesConfig


def map_batches_kwargs(res: ResourcesConfig, *, actors: bool, batch_size: int | None = None) -> dict[str, Any]:
    """``batch_size``, ``num_cpus``, ``num_gpus`` (when any) and, for ``actors``, the actor-pool ``compute``."""
    kw: dict[str, Any] = {"batch_size": batch_size or res.batch_size, "num_cpus": res.num_cpus}
    if res.num_gpus:
        kw["num_gpus"] = res.num_gpus
    if actors:
        import ray.data

        kw["compute"] = ray.data.ActorPoolStrategy(min_size=res.min_replicas, max_size=res.max_replicas)
    return kw
