"""The zoom-agent (thinking with images) baseline as an evaluation pass: view ``agent``.

items -> ``explode_views`` (the full image; skips answered items) -> :class:`AgentAnswerer` (actor
pool, one engine per replica: the episodes of a batch run in lock-step, ONE engine call per turn
for every item still active) -> the judging rules -> predictions (view ``agent``, the same cascade
and LLM judge as single-pass answers) + traces (``<output.dir>/agent/predictions/<model>.parquet``).

An episode: system prompt describing ``image_zoom_in_tool`` (``zoom_agent_prompt``), the student
prompt with the image; each reply is an answer (the episode ends) or tool calls, whose crops come
back as new images in the next user turn (``zoom_result_prompt``); the last allowed turn must answer.
Recorded per item: turns, tool calls (each with its box), malformed calls, images, tokens summed
over the turns, ``latency_s`` (each turn's engine time shared by the items in that call, plus the
item's own crops: comparable with single-pass ``latency_s``) and ``episode_s`` (its wall clock).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass, field

import pandas as pd
from PIL import Image

from zwz_ray import uris
from zwz_ray.config import EngineConfig, to_dict
from zwz_ray.eval.agent_tools import ZoomTool, model_geometry, read_reply, resolve_coords, turn_grammar
from zwz_ray.eval.config import AgentConfig, InferenceConfig
from zwz_ray.eval.items import explode_views, view_key
from zwz_ray.eval.stages import ANSWER_OUT, apply_rules
from zwz_ray.eval.store import PREDICTION_COLUMNS, PredictionStore, answer_fingerprint
from zwz_ray.logs import get_logger
from zwz_ray.prompts import student_prompt, zoom_agent_prompt, zoom_result_prompt
from zwz_ray.resources import map_batches_kwargs

log = get_logger(__name__)

AGENT_VIEW = "agent"
TRACE_FIELDS = ["turns", "tool_calls", "malformed_calls", "images", "stop", "episode_s", "calls"]
TRACE_COLUMNS = ["model", "id", "view", *TRACE_FIELDS, "fingerprint", "answered_at"]


@dataclass
class Episode:
    """One item's conversation with the model and what it cost."""

    row: dict
    image: Image.Image
    messages: list[dict]
    turns: int = 0
    tool_calls: int = 0
    malformed_calls: int = 0
    images: int = 1
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    started: float = field(default_factory=time.perf_counter)
    episode_s: float = 0.0
    response: str | None = None
    finish_reason: str | None = None
    error: str | None = None
    stop: str | None = None  # answer | turn_limit | error
    calls: list[dict] = field(default_factory=list)

    def end(self, stop: str, response: str | None = None, error: str | None = None) -> None:
        self.stop, self.response, self.error = stop, response, error
        self.episode_s = time.perf_counter() - self.started


class ZoomAgent:
    """Runs the episodes of a batch together: each turn is one ``engine.chat`` over the active ones."""

    def __init__(self, engine, agent: AgentConfig, inference: InferenceConfig, tool: ZoomTool, grammar: bool):
        from zwz_ray.eval.stages import ViewAnswerer

        self.engine, self.agent, self.tool = engine, agent, tool
        # the single pass's own sampling (built by its request builder), so the two modes differ only in the tool
        probe = ViewAnswerer(engine.config, inference)._requests([{"id": "", "view": "", "question": "", "image": None}])
        self.sampling = dataclasses.replace(probe[0].sampling, max_tokens=agent.max_tokens)
        self.grammars = (turn_grammar(tool.coords, False), turn_grammar(tool.coords, True)) if grammar else (None, None)
        self.system = zoom_agent_prompt(tool.coords)

    def start(self, row: dict, image: Image.Image) -> Episode:
        from zwz_ray.engines import system_message, user_message

        return Episode(row, image, [system_message(self.system), user_message(student_prompt(row["question"]), [image])])

    def run(self, episodes: list[Episode]) -> list[Episode]:
        from zwz_ray.engines import ChatRequest

        for turn in range(1, self.agent.max_turns + 1):
            active = [e for e in episodes if e.stop is None]
            if not active:
                break
            last = turn == self.agent.max_turns
            grammar = self.grammars[1] if last else self.grammars[0]
            requests = [ChatRequest(list(e.messages), self.sampling, request_id=f"{e.row['id']}:{AGENT_VIEW}:{turn}",
                                    grammar=grammar) for e in active]
            start = time.perf_counter()
            results = self.engine.chat(requests)
            share = (time.perf_counter() - start) / len(active)
            for e, res in zip(active, results):
                e.latency_s += share
                self.step(e, res, last)
        return episodes

    def step(self, e: Episode, res, last: bool) -> None:
        """Read one reply: end the episode, or run its tool calls and add their crops as the next user turn."""
        e.turns += 1
        e.prompt_tokens += res.prompt_tokens
        e.completion_tokens += res.completion_tokens
        if not res.ok or not res.texts:
            e.end("error", error=res.error or "empty result")
            return
        text, e.finish_reason = res.texts[0], (res.finish_reasons or [None])[0]
        kind, calls = read_reply(text)
        if kind == "answer":
            e.end("answer", text)
            return
        if last:  # tool calls where an answer was due: the cascade reads what it can
            e.end("turn_limit", text)
            return
        start, parts = time.perf_counter(), []
        turns_left = self.agent.max_turns - e.turns
        for call in calls:
            crop, record = self.tool(e.image, call)
            e.calls.append({"turn": e.turns, **record})
            e.tool_calls += 1
            parts.append({"type": "text", "text": "<tool_response>\n"})
            if crop is None:
                e.malformed_calls += 1
                parts.append({"type": "text", "text": zoom_result_prompt(turns_left, record["error"])})
            else:
                e.images += 1
                parts += [{"type": "image", "image": crop}, {"type": "text", "text": zoom_result_prompt(turns_left)}]
            parts.append({"type": "text", "text": "\n</tool_response>"})
        e.messages += [{"role": "assistant", "content": text}, {"role": "user", "content": parts}]
        e.latency_s += time.perf_counter() - start


def use_grammar(agent: AgentConfig, model: EngineConfig) -> bool:
    from zwz_ray.models import is_tiny

    """Whether the turns of ``model`` are grammar-constrained (``agent.grammar``: on, off or auto = tiny models)."""
    return agent.grammar is True or (agent.grammar == "auto" and is_tiny(model.model))


class AgentAnswerer:
    """Ray Data UDF (actor): one model answers items as a zoom agent; the engine loads on the first real batch."""

    def __init__(self, engine: EngineConfig, inference: InferenceConfig, agent: AgentConfig):
        self.engine_config, self.inference, self.agent = engine, inference, agent
        self.runner = None

    def _runner(self) -> ZoomAgent:
        if self.runner is None:
            from zwz_ray.engines import build_engine

            coords, family = resolve_coords(self.agent.coords, self.engine_config)
            tool = ZoomTool(coords, model_geometry(self.engine_config, family), self.agent.min_side, self.agent.upscale)
            self.runner = ZoomAgent(build_engine(self.engine_config), self.agent, self.inference, tool,
                                    use_grammar(self.agent, self.engine_config))
        return self.runner

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        from zwz_ray.images import ImageDecodeError, decode_image

        rows, episodes, out = batch.to_dict("records"), {}, []
        for i, r in enumerate(rows):
            if r.get("done") or r.get("image_error"):
                continue
            try:
                episodes[i] = (r, decode_image(r["image"]))
            except ImageDecodeError as exc:
                r["image_error"] = f"{exc.reason}: {exc.detail}"
        if episodes:
            runner = self._runner()
            done = runner.run([runner.start(r, img) for r, img in episodes.values()])
            episodes = dict(zip(episodes, done))
        for i, r in enumerate(rows):
            out.append(_row(r, episodes.get(i)))
        return pd.DataFrame(out, columns=ANSWER_OUT + TRACE_FIELDS)


def _row(r: dict, e: Episode | None) -> dict:
    base = {k: r.get(k) for k in ("id", "question", "answer", "category", "is_mcq", "options", "done")}
    base["view"] = AGENT_VIEW
    if r.get("done"):
        return {**base, "sent": False}
    if e is None:
        return {**base, "response": None, "error": f"image: {r.get('image_error')}", "sent": False}
    return {**base, "response": e.response, "error": e.error, "sent": True, "latency_s": e.latency_s,
            "batch_latency_s": e.episode_s, "answered_at": time.time(), "prompt_tokens": e.prompt_tokens,
            "completion_tokens": e.completion_tokens, "finish_reason": e.finish_reason, "turns": e.turns,
            "tool_calls": e.tool_calls, "malformed_calls": e.malformed_calls, "images": e.images, "stop": e.stop,
            "episode_s": e.episode_s, "calls": json.dumps(e.calls)}


def agent_rules(batch: pd.DataFrame, model: str, fingerprint: str) -> pd.DataFrame:
    """The judging rules (as for single-pass answers), keeping the episode's trace columns."""
    out = apply_rules(batch, model, fingerprint)
    for name in TRACE_FIELDS:
        out[name] = batch[name].to_numpy()
    return out


def agent_fingerprint(model: EngineConfig, inference: InferenceConfig, agent: AgentConfig) -> str:
    """What decides an agent's answers: the single-pass settings, the agent settings and its prompts."""
    asked = {k: v for k, v in to_dict(agent).items() if k not in ("enabled", "models")}
    prompts = [zoom_agent_prompt(c) for c in ("absolute", "relative1000")] + [zoom_result_prompt(2), zoom_result_prompt(1, "e")]
    data = {"single": answer_fingerprint(model, inference), "agent": asked, "prompts": prompts}
    return hashlib.sha1(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:12]


def agent_dataset(items, model: EngineConfig, inference: InferenceConfig, agent: AgentConfig, done: set[str]):
    """The lazy Ray Dataset of new agent predictions (with trace columns) of one model."""
    res = model.resources
    # explode_views knows views by name: the agent answers on the full image, so its done keys map to "global"
    seen = frozenset(view_key(k.split("\x1f")[0], "global") for k in done)
    views = items.map_batches(explode_views, batch_format="pandas", fn_kwargs={"views": ["global"], "done": seen})
    views = views.repartition(target_num_rows_per_block=res.batch_size)
    answered = views.map_batches(AgentAnswerer, fn_constructor_kwargs={"engine": model, "inference": inference, "agent": agent},
                                 batch_format="pandas", **map_batches_kwargs(res, actors=True))
    rules = {"model": model.label, "fingerprint": agent_fingerprint(model, inference, agent)}
    return answered.map_batches(agent_rules, batch_format="pandas", fn_kwargs=rules)


# --------------------------------------------------------------------------- the pass, driven from run_eval


@dataclass
class AgentRun:
    """What one model's agent pass did in this run."""

    label: str
    traces_path: str
    requests: int = 0  # items sent to the agent in this run
    previously_answered: int = 0
    failed: int = 0
    turns: int = 0  # engine calls of this run's episodes, all turns
    seconds: float = 0.0


def trace_store(out_dir: str) -> PredictionStore:
    return PredictionStore(uris.join(out_dir, AGENT_VIEW))


def _trace_keys(traces: PredictionStore, label: str, fingerprint: str) -> set[str]:
    df = traces.load(label)
    if df.empty or "fingerprint" not in df:
        return set()
    df = df[df["fingerprint"] == fingerprint]
    return {view_key(str(i), str(v)) for i, v in zip(df["id"], df["view"])}


def run_agent_pass(model: EngineConfig, items, store: PredictionStore, cfg) -> tuple[AgentRun, set[str]]:
    """One model's agent pass (resumable like the single-pass one); returns its run and its (item, view) keys."""
    label, fp = model.label, agent_fingerprint(model, cfg.inference, cfg.agent)
    traces = trace_store(cfg.output.dir)
    done = {k for k in store.done_keys(label, fp) if k.endswith("\x1f" + AGENT_VIEW)} & _trace_keys(traces, label, fp)
    run = AgentRun(label, traces.path(label), previously_answered=len(done))
    start, keys = time.perf_counter(), set()
    for batch in agent_dataset(items, model, cfg.inference, cfg.agent, done).iter_batches(batch_format="pandas", batch_size=None):
        keys.update(view_key(str(i), AGENT_VIEW) for i in batch["id"])
        new = batch[~batch["done"].astype(bool)]
        sent = new[new["sent"].astype(bool)]
        run.requests += len(sent)
        run.turns += int(pd.to_numeric(sent["turns"]).sum()) if len(sent) else 0
        run.failed += int((new["rule"] == "error").sum())
        traces.append_part(label, sent[TRACE_COLUMNS])
        store.append_part(label, new[PREDICTION_COLUMNS])
    run.seconds = time.perf_counter() - start
    store.save(label, store.load(label))
    run.traces_path = traces.save(label, traces.load(label))
    log.info("%s as zoom agent: %d items, %d turns in %.1fs (%d failed)", label, run.requests, run.turns, run.seconds, run.failed)
    return run, keys


def load_traces(out_dir: str, label: str, keys: set[str]) -> pd.DataFrame:
    """The traces of ``label`` for the benchmark's current (item, view) keys."""
    df = trace_store(out_dir).load(label)
    if df.empty:
        return df
    return df[[view_key(str(i), str(v)) in keys for i, v in zip(df["id"], df["view"])]]
