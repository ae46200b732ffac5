"""The Ray Data stages of an evaluation pass.

items -> ``explode_views`` (tasks; skips answered (item, view) pairs) -> :class:`ViewAnswerer`
(actor pool, one engine per replica, batched) -> ``apply_rules`` (tasks) -> predictions.
Undecided predictions of every model then go once through :class:`JudgeStage` (actor pool
with the text judge).
"""

from __future__ import annotations

import time

import pandas as pd

from zwz_ray.config import EngineConfig
from zwz_ray.eval.config import InferenceConfig
from zwz_ray.eval.items import explode_views
from zwz_ray.eval.store import PREDICTION_COLUMNS, answer_fingerprint
from zwz_ray.prompts import student_prompt
from zwz_ray.replies import judge_answer
from zwz_ray.resources import map_batches_kwargs

ANSWER_OUT = ["id", "view", "question", "answer", "category", "is_mcq", "options", "response", "error", "sent", "done",
              "latency_s", "batch_latency_s", "answered_at", "prompt_tokens", "completion_tokens", "finish_reason"]


class ViewAnswerer:
    """Ray Data UDF (actor): one model answers (item, view) rows with the student prompt.

    The engine is built on the first non-empty batch, so a pass with nothing left to answer
    never loads the model.
    """

    def __init__(self, engine: EngineConfig, inference: InferenceConfig):
        self.engine_config = engine
        self.inference = inference
        self.engine = None

    def _requests(self, rows: list[dict]) -> list:
        from zwz_ray.engines import ChatRequest, SamplingParams, user_message

        inf = self.inference
        sampling = SamplingParams(n=1, temperature=inf.temperature, top_p=inf.top_p, max_tokens=inf.max_tokens, seed=inf.seed)
        return [ChatRequest(messages=[user_message(student_prompt(r["question"]), [r["image"]])], sampling=sampling,
                            request_id=f"{r['id']}:{r['view']}") for r in rows]

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        rows = batch.to_dict("records")
        todo = [r for r in rows if not r.get("done") and not r.get("image_error")]
        results, elapsed = [], 0.0
        if todo:
            if self.engine is None:
                from zwz_ray.engines import build_engine

                self.engine = build_engine(self.engine_config)
            start = time.perf_counter()
            results = self.engine.chat(self._requests(todo))
            elapsed = time.perf_counter() - start
        by_key = {(r["id"], r["view"]): res for r, res in zip(todo, results)}
        out = [self._row(r, by_key.get((r["id"], r["view"])), elapsed, len(todo)) for r in rows]
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


def apply_rules(batch: pd.DataFrame, model: str, fingerprint: str = "") -> pd.DataFrame:
    """The rule part of the judging cascade on every answered row."""
    out = []
    for r in batch.to_dict("records"):
        row = {k: r.get(k) for k in PREDICTION_COLUMNS + ["sent", "done"] if k in r}
        row.update(model=model, fingerprint=fingerprint)
        if r.get("done"):
            row.update(correct=False, rule=None)
        elif r.get("error"):
            row.update(extracted=None, correct=False, rule="error")
        else:
            options = {chr(65 + i): str(o) for i, o in enumerate(r["options"])} if r.get("options") is not None else {}
            v = judge_answer(r.get("response"), r.get("answer") or "", is_mcq=bool(r.get("is_mcq")), options=options)
            row.update(extracted=v.extracted, correct=v.correct, rule=v.rule)
        row["verdict"] = "correct" if row["correct"] else "incorrect"
        out.append(row)
    return pd.DataFrame(out, columns=PREDICTION_COLUMNS + ["sent", "done"]).astype({"correct": bool})


class JudgeStage:
    """Ray Data UDF (actor): the LLM judge decides the rows the rules left undecided."""

    def __init__(self, engine: EngineConfig, max_tokens: int = 64):
        self.engine_config = engine
        self.max_tokens = max_tokens
        self.judge = None

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        rows = batch.to_dict("records")
        todo = [i for i, r in enumerate(rows) if r["rule"] == "undecided" and r.get("extracted")]
        if todo:
            if self.judge is None:
                from zwz_ray.engines import build_engine
                from zwz_ray.judge import LLMJudge

                self.judge = LLMJudge(build_engine(self.engine_config), self.max_tokens)
            for i, (equivalent, text) in zip(todo, self.judge.decide([rows[i] for i in todo])):
                rows[i]["judge_output"] = text
                if equivalent is not None:
                    rows[i].update(correct=bool(equivalent), rule="llm_judge",
                                   verdict="correct" if equivalent else "incorrect")
        return pd.DataFrame(rows, columns=list(batch.columns))


def answer_dataset(items, model: EngineConfig, inference: InferenceConfig, done: set[str]):
    """The lazy Ray Dataset of new predictions of one model over the benchmark items."""
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
    rules = {"model": model.label, "fingerprint": answer_fingerprint(model, inference)}
    return answered.map_batches(apply_rules, batch_format="pandas", fn_kwargs=rules)


def judge_dataset(predictions: pd.DataFrame, judge: EngineConfig, max_tokens: int):
    import ray

    res = judge.resources
    # One block per batch so every judge replica gets work. Split here: from_pandas' own split
    # (numpy.array_split) hands back arrays instead of frames with pandas 3.
    step = res.batch_size
    parts = [predictions.iloc[i:i + step] for i in range(0, len(predictions), step)] or [predictions]
    return ray.data.from_pandas(parts).map_batches(
        JudgeStage,
        fn_constructor_kwargs={"engine": judge, "max_tokens": max_tokens},
        batch_format="pandas",
        **map_batches_kwargs(res, actors=True),
    )
