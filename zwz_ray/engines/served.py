"""A model as one Ray Serve deployment, and the light client every stage talks to it through.

``ModelServer`` (one per replica) builds the engine once (hf or vllm, :func:`build_engine`) and
serves ``chat(requests, route_key)``. Calls that arrive together are merged by ``serve.batch`` into
ONE engine call, so requests of different stages (proposal, questions, validation ...) share a
generate / vLLM step. The engine is the synchronous one of the backend (``vllm.LLM`` or
``generate``, the same as in ``serving.mode: actors``) and runs in one worker thread, so the replica's
event loop keeps answering Serve's health checks meanwhile. vLLM's async engine (``AsyncLLM``) also
runs inside a replica on the CPU build (its engine core in a subprocess); using it would give
continuous batching across stages instead of ``serve.batch`` windows, at the price of a backend that
renders chat messages and images itself.

:class:`ImageAffinityRouter` sends every call with the same ``route_key`` to the same replica while
it accepts work (rendezvous hashing over the live replicas, so a new or lost replica moves only its
own keys), falling back to the next replica in that order when it is full. The client keys a call
by its first image, which is the start of its prompt: the stages about one image hit the replica
whose prefix (vLLM ``enable_prefix_caching``) and encoder caches already hold it.

:class:`ServedEngine` is the :class:`Engine` a stage gets: it groups a batch's requests by key,
sends the groups concurrently, and sends a group again when its replica died (Serve restarts it),
for up to ``serving.retry_s`` seconds; after that every request of the group comes back as an
``engine_error`` result (retryable: the image is redone by the next run), never as a lost row.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from concurrent.futures import ThreadPoolExecutor

from ray import serve
from ray.serve.config import RequestRouterConfig
from ray.serve.request_router import FIFOMixin, RequestRouter

from zwz_ray.config import EngineConfig
from zwz_ray.engines.base import ChatRequest, ChatResult, Engine, as_pil
from zwz_ray.engines.serving import ServingConfig
from zwz_ray.logs import get_logger

log = get_logger(__name__)


class ModelServer:
    """One replica of a served model (the deployment's class)."""

    def __init__(self, config: EngineConfig, max_batch: int, batch_wait_s: float):
        from zwz_ray.engines.backends import build_engine

        self.config = config
        self.engine = build_engine(config)
        self._load_reported = False
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="engine")
        self.chat_batch.set_max_batch_size(max_batch)
        self.chat_batch.set_batch_wait_timeout_s(batch_wait_s)

    async def chat(self, requests: list[ChatRequest], route_key: str = "") -> list[ChatResult]:
        return await self.chat_batch(requests)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01)
    async def chat_batch(self, calls: list[list[ChatRequest]]) -> list[list[ChatResult]]:
        flat = [r for call in calls for r in call]
        try:
            results = await asyncio.get_running_loop().run_in_executor(self._thread, self.engine.chat, flat)
        except Exception as exc:  # engines return per-request errors; this is a broken engine
            log.warning("served model %s failed a batch of %d requests: %s", self.config.label, len(flat), exc)
            results = [ChatResult(error=f"served_engine_failed: {type(exc).__name__}: {exc}") for _ in flat]
        if results and not self._load_reported:  # the clients count this replica's load from its first result
            results[0].loads, self._load_reported = 1, True
        out, start = [], 0
        for call in calls:
            out.append(results[start : start + len(call)])
            start += len(call)
        return out

    def info(self) -> dict:
        import os

        return {"pid": os.getpid(), "label": self.config.label, "stats": self.engine.stats.as_dict()}


class ImageAffinityRouter(FIFOMixin, RequestRouter):
    """Calls with one ``route_key`` go to one replica (rendezvous hashing); calls without one: two random choices."""

    async def choose_replicas(self, candidate_replicas, pending_request=None):
        key = pending_request.kwargs.get("route_key", "") if pending_request is not None else ""
        if not candidate_replicas:
            return []
        if not key:
            chosen = random.sample(candidate_replicas, min(2, len(candidate_replicas)))
            return [chosen]

        def weight(replica) -> bytes:
            return hashlib.blake2b(f"{key}\x1f{replica.replica_id.unique_id}".encode(), digest_size=8).digest()

        ranked = sorted(candidate_replicas, key=weight, reverse=True)
        return [[replica] for replica in ranked]


def route_key(request: ChatRequest) -> str:
    """The request's first image as a short content hash ("" for a text-only request)."""
    for message in request.messages:
        content = message.get("content")
        if isinstance(content, list):
            for part in content:
                if part.get("type") == "image":
                    image = as_pil(part["image"])
                    thumb = image.resize((16, 16)).tobytes()
                    return hashlib.blake2b(thumb + repr(image.size).encode(), digest_size=8).hexdigest()
    return ""


class ServedEngine(Engine):
    """An :class:`Engine` whose model is a Serve deployment (see the module docstring)."""

    loads_model = False  # the replicas load it and report their loads in their results
    measures_time = False  # the replicas report their engine seconds

    def __init__(self, config: EngineConfig, ref):
        import logging

        super().__init__(config)
        self.ref = ref
        logging.getLogger("ray.serve").setLevel(ref.serving.log_level)  # no "Started <router>" line per client actor
        self.handle = serve.get_deployment_handle(ref.deployment, app_name=ref.app)

    def __repr__(self) -> str:
        return f"ServedEngine(model={self.config.label!r}, app={self.ref.app!r})"

    def _chat(self, requests: list[ChatRequest]) -> list[ChatResult]:
        groups: dict[str, list[int]] = {}
        for i, req in enumerate(requests):
            groups.setdefault(route_key(req) if self.ref.serving.route_by_image else "", []).append(i)
        results: list[ChatResult | None] = [None] * len(requests)
        pending = {key: self._send(requests, idx, key) for key, idx in groups.items()}
        for key, idx in groups.items():
            for i, res in zip(idx, self._receive(requests, idx, key, pending[key])):
                results[i] = res
        return results  # type: ignore[return-value]

    def _send(self, requests: list[ChatRequest], idx: list[int], key: str):
        return self.handle.chat.remote([requests[i] for i in idx], route_key=key)

    def _receive(self, requests: list[ChatRequest], idx: list[int], key: str, response) -> list[ChatResult]:
        deadline, attempt = time.monotonic() + self.ref.serving.retry_s, 0
        while True:
            try:
                out = response.result(timeout_s=self.ref.serving.call_timeout_s)
                if len(out) == len(idx):
                    return out
                error = f"served model returned {len(out)} results for {len(idx)} requests"
            except Exception as exc:  # the replica died (Serve restarts it), was unreachable, or the call timed out
                error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            wait = min(2.0**attempt, 10.0)
            if time.monotonic() + wait > deadline:
                return [ChatResult(error=f"served_call_failed: {self.ref.label}: {error}") for _ in idx]
            attempt += 1
            log.warning("served model %s: call failed (%s); sending it again in %.0fs (attempt %d)", self.ref.label,
                        error, wait, attempt + 1)
            time.sleep(wait)
            response = self._send(requests, idx, key)


# --------------------------------------------------------------------------- lifecycle


def _logging(serving: ServingConfig) -> dict:
    return {"log_level": serving.log_level, "enable_access_log": False}


def deploy(specs: list, names: list[str], serving: ServingConfig) -> None:
    """Start one application per model (all at once) and wait until every replica has loaded."""
    import logging

    from ray.serve.api import RunTarget

    logging.getLogger("ray.serve").setLevel(serving.log_level)  # the driver's own Serve lines
    serve.start(proxy_location="Disabled", logging_config=_logging(serving))
    delete_orphans()
    targets = []
    for spec, name in zip(specs, names):
        r = spec.config.resources
        options = dict(
            name="model",
            ray_actor_options={"num_cpus": r.num_cpus, "num_gpus": r.num_gpus},
            max_ongoing_requests=r.max_ongoing_requests,
            logging_config=_logging(serving),
            health_check_period_s=10,
            health_check_timeout_s=60,
            graceful_shutdown_timeout_s=5,
        )
        if r.max_replicas > r.min_replicas:
            options["autoscaling_config"] = {"min_replicas": r.min_replicas, "max_replicas": r.max_replicas,
                                             "target_ongoing_requests": r.target_ongoing_requests}
        else:
            options["num_replicas"] = r.min_replicas
        if serving.route_by_image:
            options["request_router_config"] = RequestRouterConfig(request_router_class=ImageAffinityRouter)
        app = serve.deployment(ModelServer, **options).bind(spec.config, r.max_ongoing_requests, serving.batch_wait_s)
        targets.append(RunTarget(app, name=name, route_prefix=None, logging_config=_logging(serving)))
    start = time.perf_counter()
    serve.run_many(targets)
    log.info("served %d model(s) in %.1fs: %s", len(specs), time.perf_counter() - start, ", ".join(s.label for s in specs))


def delete(names: list[str]) -> None:
    """Delete these applications (their replicas stop and free their GPUs); never raises."""
    for name in names:
        try:
            serve.delete(name)
        except Exception as exc:  # noqa: BLE001 - teardown must go on (Ray may already be down)
            log.warning("could not delete the Serve application %s: %s", name, exc)


def delete_orphans() -> list[str]:
    """Delete our applications whose driver job has ended (it was killed before it could delete them).

    Reads the job table through ``ray._private.state.jobs()``: the public state API needs the dashboard,
    which a local instance runs without."""
    import re

    from ray._private import state

    try:
        dead = {j["JobID"] for j in state.jobs() if j.get("IsDead")}
        names = list(serve.status().applications)
    except Exception as exc:  # noqa: BLE001 - a sweep that cannot run must not stop the job
        log.warning("could not look for Serve applications of ended jobs: %s", exc)
        return []
    orphans = [n for n in names if (m := re.fullmatch(r"zwz-.+-j([0-9a-f]+)", n)) and m.group(1) in dead]
    if orphans:
        log.warning("deleting %d Serve application(s) left by ended jobs: %s", len(orphans), ", ".join(orphans))
        delete(orphans)
    return orphans
