"""The evaluation's LLM judge as one Ray Serve deployment, started when there is something to judge.

``serving.mode: serve`` (the default) registers the judge in a :class:`ModelPlan`; :class:`JudgeServing`
starts its deployment the first time a benchmark has undecided answers (:meth:`JudgeServing.refs`), keeps
it for every later benchmark of the job (a suite loads the judge once), and deletes it when the job ends,
also on an error or Ctrl-C. A run whose answers are all stored and judged never starts it, so it loads no
model. The judge stage's actors are then light clients (:func:`zwz_ray.engines.deployments.stage_resources`). ``serving.mode: actors``
(or an ``openai`` judge, an endpoint) starts nothing: the judge stage loads its own copy in its actor
pool, or calls the endpoint. The evaluated models keep their own actor pools: each is used by one pass.
"""

from __future__ import annotations

from contextlib import ExitStack

from zwz_ray.config import EngineConfig
from zwz_ray.engines.deployments import Deployments, ModelPlan
from zwz_ray.engines.serving import ServingConfig


def judge_plan(judge: EngineConfig | None, serving: ServingConfig) -> ModelPlan:
    """The models of the judge stage: the judge as a deployment (serve), an actor pool (actors) or nothing."""
    plan = ModelPlan(serving)
    if judge is not None:
        plan.use(judge, "judge")
    return plan


class JudgeServing:
    """The judge's deployment for one job (see the module docstring); use it as a context manager."""

    def __init__(self, judge: EngineConfig | None, serving: ServingConfig):
        self.judge, self.serving = judge, serving
        self.plan = judge_plan(judge, serving)
        self.started = False  # the deployment was started in this job (it stays True after close)
        self._refs: dict = {}
        self._stack = ExitStack()
        self._closed = False

    @property
    def serves(self) -> bool:
        """Whether the judge runs as a Serve deployment (hf or vllm judge, ``serving.mode: serve``)."""
        return bool(self.plan.deployments())

    def require_gpus(self) -> None:
        """The judge's GPUs at its minimum (deployment or actor pool) must fit the cluster."""
        self.plan.require_gpus("the LLM judge")

    def refs(self) -> dict:
        """Model key -> DeploymentRef for the judge stage; starts the deployment on the first call."""
        if self.serves and not self.started and not self._closed:
            self._refs = dict(self._stack.enter_context(Deployments(self.plan, "eval")).refs)
            self.started = True
        return self._refs

    def close(self) -> None:
        """Delete the deployment (if it was started); the judge stage cannot use it afterwards."""
        self._refs, self._closed = {}, True
        self._stack.close()

    def __enter__(self) -> JudgeServing:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
