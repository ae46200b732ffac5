"""The Ray Data stages of an evaluation pass.

items -> ``explode_views`` (tasks; skips answered (item, view) pairs) -> :class:`ViewAnswerer`
(actor pool, one engine per replica, batched) -> ``apply_rules`` (tasks) -> predictions.
Undecided predictions of every model then go once through :class:`JudgeStage` (actor pool
with the text judge, or light clients of the judge's Serve deployment: :mod:`zwz_ray.eval.serving`).
"""

from __future__ import annotations

import dataclasses
import time

import pandas as pd

from zwz_ray.config import EngineConfig
from zwz_ray.engines.serving import ServingConfig
from zwz_ray.eval.config import InferenceConfig, Protocol
from zwz_ray.eval.items import explode_views
from zwz_ray.eval.store import PREDICTION_COLUMNS, answer_fingerprint
from zwz_ray.logs import get_logger
from zwz_ray.prompts import reference_system_prompt, student_prompt
from zwz_ray.replies import judge_answer
from zwz_ray.resources import map_batches_kwargs

log = get_logger(__name__)

ANSWER_OUT = ["id", "view", "question", "answer", "category", "is_mcq", "options", "response", "error", "sent", "done",
              "latency_s", "batch_latency_s", "answered_at", "prompt_tokens", "completion_tokens", "finish_reason",
              "engine_loads"]


PASS_COLUMNS = ["sent", "done", "engine_loads"]  # what the driver learns about the pass besides the predictions


def protocol_engine(engine: EngineConfig, protocol: Protocol) -> EngineConfig:
    """The model's engine config with the protocol's image pixel bounds (a protocol that sets none keeps the model's)."""
    bounds = {k: getattr(protocol, k) for k in ("min_pixels", "max_pixels") if getattr(protocol, k) is not None}
    return dataclasses.replace(engine, **bounds) if bounds else engine


def protocol_messages(question: str, image, protocol: Protocol) -> list[dict]:
    """The conversation a protocol sends: the student prompt alone, or the reference's system turn + the raw question."""
    from zwz_ray.engines import system_message, user_message

    if protocol.prompt == "reference":
        return [system_message(reference_system_prompt()), user_message(question.strip(), [image])]
    return [user_message(student_prompt(question), [image])]


class ViewAnswerer:
    """Ray Data UDF (actor): one model answers (item, view) rows as the protocol asks.

    The engine is built on the first non-empty batch, so a pass with nothing left to answer
    never loads the model.
    """

    def __init__(self, engine: EngineConfig, inference: InferenceConfig):
        self.engine_config = engine
        self.inference = inference
        self.engine = None

    def _requests(self, rows: list[dict]) -> list:
        from zwz_ray.engines import ChatRequest, SamplingParams

        p = self.inference.protocol_settings()
        sampling = SamplingParams(n=1, temperature=p.temperature, top_p=p.top_p, max_tokens=p.max_tokens, seed=p.seed,
                                  top_k=p.top_k, presence_penalty=p.presence_penalty, repetition_penalty=p.repetition_penalty)
        return [ChatRequest(messages=protocol_messages(r["question"], r["image"], p), sampling=sampling,
                            request_id=f"{r['id']}:{r['view']}") for r in rows]

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        rows = batch.to_dict("records")
        todo = [r for r in rows if not r.get("done") and not r.get("image_error")]
        results, elapsed, loads = [], 0.0, 0
        if todo:
            if self.engine is None:
                from zwz_ray.engines import build_engine

                self.engine, loads = build_engine(protocol_engine(self.engine_config, self.inference.protocol_settings())), 1
            start = time.perf_counter()
            results = self.engine.chat(self._requests(todo))
            elapsed = time.perf_counter() - start
        by_key = {(r["id"], r["view"]): res for r, res in zip(todo, results)}
        out = [self._row(r, by_key.get((r["id"], r["view"])), elapsed, len(todo)) for r in rows]
        for i, row in enumerate(out):  # the driver counts model loads from the first row of a batch
            row["engine_loads"] = loads if i == 0 else 0
        return pd.DataFrame(out, columns=ANSWER_OUT)

    @staticmethod
    def _row(r: dict, res, elapsed: float, n: int) -> dict:
        base = {k: r.get(k) for k in ("id", "view", "question", "answer", "category", "is_mcq", "options", "done")}
        if r.get("done"):
            return {**base, "sent": False}
        if res is None:
            return {**base, "response": None, "error": f"image: {r.get('image_error')}", "sent": False}
        return {**base, "response": res.texts[0] if res.ok and res.texts else None, "error": res.error, "sent": True,
                "latency_s": elapsed / max(n, 1), "batch_latency_s": elapsed, "answered_at": time.time(),
                "prompt_tokens": res.prompt_tokens, "completion_tokens": res.completion_tokens,
                "finish_reason": res.finish_reasons[0] if res.finish_reasons else None}


def apply_rules(batch: pd.DataFrame, model: str, fingerprint: str = "", policy: str = "default",
                letters: bool = True) -> pd.DataFrame:
    """The rule part of the judging cascade on every answered row.

    ``policy``: how the answer is extracted; ``letters=False`` judges multiple-choice items as open answers
    (rules on the text, then the LLM), never by the letter (the reference protocol on ZoomBench).
    """
    out = []
    for r in batch.to_dict("records"):
        row = {k: r.get(k) for k in PREDICTION_COLUMNS + PASS_COLUMNS if k in r}
        row.update(model=model, fingerprint=fingerprint)
        if r.get("done"):
            row.update(correct=False, rule=None)
        elif r.get("error"):
            row.update(extracted=None, correct=False, rule="error")
        else:
            options = {chr(65 + i): str(o) for i, o in enumerate(r["options"])} if r.get("options") is not None else {}
            v = judge_answer(r.get("response"), r.get("answer") or "", is_mcq=letters and bool(r.get("is_mcq")), options=options,
                             policy=policy)
            row.update(extracted=v.extracted, correct=v.correct, rule=v.rule)
        row["verdict"] = "correct" if row["correct"] else "incorrect"
        out.append(row)
    return pd.DataFrame(out, columns=PREDICTION_COLUMNS + PASS_COLUMNS).astype({"correct": bool})


class JudgeStage:
    """Ray Data UDF (actor): the LLM judge decides the rows the rules left undecided.

    ``served`` (model key -> DeploymentRef): the judge is a Serve deployment and this actor is its client
    (:func:`zwz_ray.engines.connect`); else the actor loads the judge itself. The engine is connected on the
    first batch with something to judge; the ``engine_loads`` column counts, on a batch's first row, the
    model loads booked since the last batch (a local load, or the one a served replica reports).
    """

    def __init__(self, engine: EngineConfig, max_tokens: int = 64, decision: str = "json", served: dict | None = None):
        self.engine_config = engine
        self.max_tokens = max_tokens
        self.decision = decision  # json: {"equivalent": bool}; yes_no: a plain Yes or No (the reference protocol)
        self.served = served or {}
        self.judge = None
        self._booked_loads = 0

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        rows = batch.to_dict("records")
        todo = [i for i, r in enumerate(rows) if r["rule"] == "undecided" and r.get("extracted")]
        if todo:
            if self.judge is None:
                from zwz_ray.engines import connect
                from zwz_ray.judge import LLMJudge

                self.judge = LLMJudge(connect(self.engine_config, self.served), self.max_tokens, self.decision)
            for i, (equivalent, text) in zip(todo, self.judge.decide([rows[i] for i in todo])):
                rows[i]["judge_output"] = text
                if equivalent is not None:
                    rows[i].update(correct=bool(equivalent), rule="llm_judge",
                                   verdict="correct" if equivalent else "incorrect")
        loads = self.judge.engine.stats.loads - self._booked_loads if self.judge is not None else 0
        self._booked_loads += loads
        out = pd.DataFrame(rows, columns=list(batch.columns))
        out["engine_loads"] = [loads] + [0] * (len(out) - 1) if len(out) else []
        return out


def rule_options(inference: InferenceConfig, zoombench: bool) -> dict:
    """How :func:`apply_rules` reads answers under the protocol: the extraction policy, and whether
    multiple-choice letters are matched (always, except ZoomBench under the reference protocol)."""
    p = inference.protocol_settings()
    return {"policy": p.extraction, "letters": p.zoombench_letters or not zoombench}


def answer_dataset(items, model: EngineConfig, inference: InferenceConfig, done: set[str], zoombench: bool = False):
    """The lazy Ray Dataset of new predictions of one model over the benchmark items (``zoombench``: the
    benchmark is ZoomBench, whose letters the reference protocol does not match)."""
    res = model.resources
    views = items.map_batches(explode_views, batch_format="pandas", fn_kwargs={"views": list(inference.views),
                                                                                "done": frozenset(done)})
    # blocks of one batch each, so every replica of the pool gets work (a benchmark file is often one block)
    views = views.repartition(target_num_rows_per_block=res.batch_size)
    answered = views.map_batches(
        ViewAnswerer,
        fn_constructor_kwargs={"engine": model, "inference": inference},
        batch_format="pandas",
        **map_batches_kwargs(res, actors=True),
    )
    rules = {"model": model.label, "fingerprint": answer_fingerprint(model, inference), **rule_options(inference, zoombench)}
    return answered.map_batches(apply_rules, batch_format="pandas", fn_kwargs=rules)


def judge_dataset(predictions: pd.DataFrame, judge: EngineConfig, max_tokens: int, decision: str = "json",
                  served: dict | None = None, serving: ServingConfig | None = None):
    """The lazy Ray Dataset of ``predictions`` after the judge (:class:`JudgeStage`, plus ``engine_loads``).

    With ``served`` holding the judge (a Serve deployment), the stage's actors are light clients."""
    import ray

    from zwz_ray.engines.deployments import model_key, stage_resources

    res = stage_resources(judge, serving or ServingConfig(), served=model_key(judge) in (served or {}))
    # One block per batch so every judge replica gets work. Split here: from_pandas' own split
    # (numpy.array_split) hands back arrays instead of frames with pandas 3.
    step = res.batch_size
    parts = [predictions.iloc[i:i + step] for i in range(0, len(predictions), step)] or [predictions]
    return ray.data.from_pandas(parts).map_batches(
        JudgeStage,
        fn_constructor_kwargs={"engine": judge, "max_tokens": max_tokens, "decision": decision, "served": served},
        batch_format="pandas",
        **map_batches_kwargs(res, actors=True),
    )


def protocol_record(cfg) -> dict:
    """What ``metrics.json`` says about the protocol behind its numbers: the name, every resolved setting,
    the overrides, the judge, and whether that judge is the one the protocol was published with."""
    p = cfg.inference.protocol_settings()
    judge = cfg.judge.model if cfg.judge else None
    as_published = p.judge_model is None or judge == p.judge_model
    if not as_published:
        log.warning("protocol %s was published with the judge %s; this run judges with %s", p.name, p.judge_model, judge)
    return {"name": p.name, "label": cfg.inference.describe(), "settings": dataclasses.asdict(p),
            "overrides": cfg.inference.overrides(), "judge": judge, "judge_as_published": as_published}
