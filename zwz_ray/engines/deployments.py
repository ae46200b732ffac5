"""Which models a job runs and where: each model served once, shared by every stage that names it.

A job registers every (stage, model) pair in a :class:`ModelPlan`. Two stages whose model sections
are equal (the same named section in ``engines:``, or two identical inline sections) share one
:class:`ModelSpec`. With ``serving.mode: serve`` each hf or vllm model becomes ONE Ray Serve
deployment (``min_replicas..max_replicas`` replicas of its ``resources``), and the stages become
light clients (:func:`zwz_ray.engines.connect`); ``openai`` models are endpoints and need nothing.
Other actor pools a job runs (SAM3 grounding; every model stage with ``serving.mode: actors``) are
listed as pools, so :meth:`ModelPlan.describe` prints the whole footprint (``--plan``) and
:meth:`ModelPlan.require_gpus` checks the plan's total against the cluster before anything starts.

:class:`Deployments` starts the plan's deployments and always deletes them again (``with``): at the
end of the job, on an error and on Ctrl-C. A driver killed outright (SIGKILL, a lost head node
process) cannot; the next job on the cluster deletes the applications of drivers that are gone. Nothing here imports Ray until a deployment starts.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from dataclasses import dataclass, field, replace

from zwz_ray.config import EngineConfig, ResourcesConfig, to_dict
from zwz_ray.engines.serving import ServingConfig
from zwz_ray.logs import get_logger

log = get_logger(__name__)


def model_key(config: EngineConfig) -> str:
    """The identity of a model section: equal sections (every setting) share one key, one deployment."""
    text = json.dumps(to_dict(config), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class DeploymentRef:
    """Where a served model answers: a Serve application and its one deployment."""

    app: str
    deployment: str
    label: str
    serving: ServingConfig = field(default_factory=ServingConfig)  # retries, timeouts, routing, log level


def stage_resources(config: EngineConfig, serving: ServingConfig, served: bool) -> ResourcesConfig:
    """The Ray Data resources of a stage that calls ``config``'s model: the model's own when the stage loads it
    itself, else (``served`` by a deployment, or an openai endpoint) a light client's: no GPU, few CPUs."""
    r = config.resources
    if not served and config.backend != "openai":
        return r
    return replace(r, num_cpus=serving.client_cpus, num_gpus=0.0, min_replicas=1, max_replicas=max(r.max_replicas, 1))


@dataclass
class ModelSpec:
    """One model of the plan and the stages that call it."""

    config: EngineConfig
    served: bool  # one Serve deployment (False: an openai endpoint)
    users: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.config.label

    @property
    def key(self) -> str:
        return model_key(self.config)

    @property
    def gpus_per_replica(self) -> float:
        return self.config.resources.num_gpus if self.served else 0.0

    @property
    def replicas(self) -> tuple[int, int]:
        r = self.config.resources
        return (r.min_replicas, r.max_replicas) if self.served else (0, 0)


@dataclass
class PoolSpec:
    """An actor pool a job runs besides the deployments (its own copy of a model, or a grounder)."""

    stage: str
    label: str
    kind: str  # what runs in it, e.g. "hf", "vllm", "sam3"
    resources: ResourcesConfig


class ModelPlan:
    """Every model of a job, deduplicated, with the stages that use it (see the module docstring)."""

    def __init__(self, serving: ServingConfig):
        self.serving = serving
        self.models: dict[str, ModelSpec] = {}
        self.pools: list[PoolSpec] = []

    def use(self, config: EngineConfig, stage: str, *, own_pool: bool = True) -> None:
        """Record that ``stage`` calls ``config``'s model. With ``serving.mode: actors`` the stage loads its own
        copy: in an actor pool of its own (``own_pool``), or inside the actors of another of its models."""
        if config.backend != "openai" and self.serving.mode == "actors":
            if own_pool:
                self.pools.append(PoolSpec(stage, config.label, config.backend, config.resources))
            return
        spec = self.models.setdefault(model_key(config), ModelSpec(config, served=config.backend != "openai"))
        if stage not in spec.users:
            spec.users.append(stage)

    def pool(self, stage: str, label: str, kind: str, resources: ResourcesConfig) -> None:
        self.pools.append(PoolSpec(stage, label, kind, resources))

    def deployments(self) -> list[ModelSpec]:
        return [m for m in self.models.values() if m.served]

    def gpus(self) -> tuple[float, float]:
        """GPUs at the smallest and at the largest size of every deployment and pool."""
        low = high = 0.0
        for m in self.deployments():
            low += m.replicas[0] * m.gpus_per_replica
            high += m.replicas[1] * m.gpus_per_replica
        for p in self.pools:
            low += p.resources.min_replicas * p.resources.num_gpus
            high += p.resources.max_replicas * p.resources.num_gpus
        return low, high

    def describe(self, title: str = "model plan") -> str:
        """The plan as text: per model its kind, replicas, GPUs per replica and stages; then the totals."""
        rows = []
        for m in self.models.values():
            kind = f"{m.config.backend} deployment" if m.served else "openai endpoint"
            low, high = m.replicas
            rows.append((m.label, kind, f"{low}..{high}" if m.served else "-", f"{m.gpus_per_replica:g}", ", ".join(m.users)))
        for p in self.pools:
            r = p.resources
            rows.append((p.label, f"{p.kind} actor pool", f"{r.min_replicas}..{r.max_replicas}", f"{r.num_gpus:g}", p.stage))
        head = ("model", "runs as", "replicas", "GPUs/replica", "stages")
        widths = [max(len(str(row[i])) for row in [head, *rows]) for i in range(4)]
        lines = [f"{title} (serving.mode: {self.serving.mode})"]
        for row in [head, *rows]:
            lines.append("  " + "  ".join(str(c).ljust(w) for c, w in zip(row[:4], widths)) + "  " + row[4])
        low, high = self.gpus()
        lines.append(f"total GPUs: min {low:g}, max {high:g}")
        return "\n".join(lines)

    def require_gpus(self, what: str) -> None:
        """Fail before any work when the cluster cannot hold the plan at its minimum (see ServingConfig)."""
        from zwz_ray.runtime import require_gpus

        if not self.serving.allow_pending_gpus:
            require_gpus(self.gpus()[0], f"{what}, with every deployment and actor pool at min_replicas (see --plan),")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()[:40] or "model"


class Deployments:
    """The plan's deployments, started on ``__enter__`` and deleted on ``__exit__`` (also on errors/Ctrl-C).

    ``refs`` maps :func:`model_key` to the :class:`DeploymentRef` a stage connects to. Application
    names carry a random token, so two jobs on one cluster never share or delete each other's models.
    """

    def __init__(self, plan: ModelPlan, job: str):
        self.plan, self.job = plan, job
        self.refs: dict[str, DeploymentRef] = {}
        self._token = secrets.token_hex(3)

    def app_name(self, spec: ModelSpec) -> str:
        """``zwz-<job>-<model>-<key>-<token>-j<Ray job id>``: the Ray job id lets a later run delete the
        applications of a driver that was killed before it could (see ``served.delete_orphans``)."""
        import ray

        return f"zwz-{self.job}-{_slug(spec.label)}-{spec.key[:6]}-{self._token}-j{ray.get_runtime_context().get_job_id()}"

    def __enter__(self) -> Deployments:
        specs = self.plan.deployments()
        if specs:
            from zwz_ray.engines.served import deploy

            serving = self.plan.serving
            names = [self.app_name(s) for s in specs]
            try:
                deploy(specs, names, serving)
            except BaseException:
                self._delete(names)
                raise
            self.refs = {s.key: DeploymentRef(n, "model", s.label, serving)
                         for s, n in zip(specs, names)}
        return self

    def __exit__(self, *exc) -> None:
        self._delete([ref.app for ref in self.refs.values()])
        self.refs = {}

    def _delete(self, names: list[str]) -> None:
        if not names:
            return
        from zwz_ray.engines.served import delete

        delete(names)
