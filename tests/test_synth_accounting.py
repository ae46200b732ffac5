"""Statistics computed from the final rows: per-stage counts, drop reasons, costs (engine seconds, loads), identities."""

from __future__ import annotations

import json
import time

import pytest
from synth_rows import new_row

from zwz_ray.config import EngineConfig
from zwz_ray.engines import ChatRequest, ChatResult, Engine, SamplingParams, user_message
from zwz_ray.synth.accounting import add_usage, compute_stats, merge_stats, model_calls, reconcile, subtract_stats
from zwz_ray.synth.columns import image_complete, to_table
from zwz_ray.synth.stages.base import Stage

STAGES = [("image_pool", 0, 0), ("proposal", 0, 1), ("grounding", 1, 1), ("crop", 1, 1), ("questions", 1, 2),
          ("validation", 2, 2), ("output", 2, 2)]


def row(source, obj=-1, q=-1, stage=None, reason=None, usage=None, n_objects=None, n_questions=None):
    return {"source": source, "object_index": obj, "question_index": q, "drop_stage": stage, "drop_reason": reason,
            "usage": usage, "n_objects": n_objects, "n_questions": n_questions}


def teacher_usage(calls, stage="proposal"):
    return add_usage(None, stage, 1.5, {"teacher": {"calls": calls, "samples": calls, "prompt_tokens": 100 * calls,
                                                    "completion_tokens": 10 * calls, "errors": 0}})


def chunk_rows():
    """Image a: 3 objects -> 1 no box, 1 too large, 1 with 2 questions (1 kept, 1 invalid);
    image b: unreadable; image c: too few objects."""
    return [
        row("a", 0, stage="grounding", reason="no_box", usage=teacher_usage(3), n_objects=3),
        row("a", 1, stage="crop", reason="box_too_large", n_objects=3),
        row("a", 2, 0, n_objects=3, n_questions=2, usage=teacher_usage(1, "questions")),
        row("a", 2, 1, stage="validation", reason="invalid_question", n_objects=3, n_questions=2),
        row("b", stage="image_pool", reason="truncated"),
        row("c", stage="proposal", reason="too_few_objects"),
    ]


def test_stage_counts_follow_the_units():
    stats = compute_stats(chunk_rows(), STAGES, ["a", "b", "c"])
    s = stats["stages"]
    assert (s["image_pool"]["rows_in"], s["image_pool"]["rows_out"], s["image_pool"]["dropped"]) == (3, 2, {"truncated": 1})
    assert (s["proposal"]["rows_in"], s["proposal"]["rows_out"], s["proposal"]["units_passed"]) == (2, 3, 1)
    assert (s["grounding"]["rows_in"], s["grounding"]["rows_out"]) == (3, 2)
    assert (s["crop"]["rows_in"], s["crop"]["rows_out"]) == (2, 1)
    assert (s["questions"]["rows_in"], s["questions"]["rows_out"]) == (1, 2)
    assert (s["validation"]["rows_in"], s["validation"]["rows_out"], s["validation"]["dropped"]) == (2, 1, {"invalid_question": 1})
    assert stats["images"] == {"in": 3, "with_kept_rows": 1, "fully_dropped": 2}
    assert (stats["kept_rows"], stats["drop_rows"]) == (1, 5)
    assert s["proposal"]["models"]["teacher"]["calls"] == 3 and s["questions"]["busy_s"] == 1.5
    assert model_calls(stats) == 4
    assert reconcile(stats) == []


def test_merged_chunks_still_reconcile():
    one = compute_stats(chunk_rows(), STAGES, ["a", "b", "c"])
    other = compute_stats([row("d", 0, 0, n_objects=1, n_questions=1, usage=teacher_usage(2))], STAGES, ["d"])
    merged = merge_stats(one, other)
    assert merged["images"] == {"in": 4, "with_kept_rows": 2, "fully_dropped": 2}
    assert merged["kept_rows"] == 2 and model_calls(merged) == 6
    assert reconcile(merged) == []


def test_reconcile_catches_a_lost_row():
    rows = chunk_rows()[:-1]  # image c vanished without a drop record
    stats = compute_stats(rows, STAGES, ["a", "b", "c"])
    problems = reconcile(stats)
    assert any("first stage saw 2 images, 3 went in" in p for p in problems)


def test_usage_accumulates_per_stage_and_model():
    usage = teacher_usage(1)
    usage = add_usage(usage, "proposal", 0.5, {"teacher": {"calls": 2}})
    usage = add_usage(usage, "grounding", 0.25, {})
    data = json.loads(usage)
    assert data["proposal"]["models"]["teacher"]["calls"] == 3 and data["proposal"]["busy_s"] == 2.0
    assert data["grounding"] == {"busy_s": 0.25, "models": {}}


def test_image_complete_uses_fan_out_counts():
    rows = chunk_rows()
    a = [r for r in rows if r["source"] == "a"]
    assert image_complete(a)
    assert not image_complete(a[:-1])  # question 1 of object 2 still missing
    assert not image_complete(a[1:])  # object 0 still missing
    assert image_complete([r for r in rows if r["source"] == "b"])


# --------------------------------------------------------------------------- engine seconds and model loads


class Echo(Engine):
    """A model double: one reply per request, after a short wait (so the call has engine seconds)."""

    def _chat(self, requests):
        time.sleep(0.004)
        return [ChatResult(texts=["ok"] * r.sampling.n, prompt_tokens=7, completion_tokens=2) for r in requests]


class Asking(Stage):
    """Sends one request per live row to its engine and keeps the row."""

    name = "proposal"
    reads = ("source",)

    def __init__(self, engine: Engine):
        super().__init__()
        self.engine = engine

    def engines(self):
        return {self.engine.config.label: self.engine}

    def process(self, rows):
        self.engine.chat([ChatRequest([user_message("hi")], SamplingParams(n=2)) for _ in rows])
        return [[{**r, "n_objects": 0}] for r in rows]


def test_loads_and_engine_seconds_are_booked_on_real_rows():
    stage = Asking(Echo(EngineConfig(model="echo")))
    first = stage(to_table([new_row("a"), new_row("b")])).to_pylist()
    second = stage(to_table([new_row("c")])).to_pylist()
    usages = [json.loads(r["usage"])["proposal"]["models"]["echo"] for r in (first[0], second[0])]
    assert first[1]["usage"] is None and [u["loads"] for u in usages] == [1, 0]  # the model loaded once, before batch 1
    assert all(u["engine_s"] >= 0.004 and u["engine_s"] == round(u["engine_s"], 3) for u in usages)
    stats = compute_stats(first + second, [("proposal", 0, 0)], ["a", "b", "c"])
    echo = stats["models"]["echo"]
    assert (echo["calls"], echo["samples"], echo["prompt_tokens"], echo["loads"]) == (3, 6, 21, 1)
    assert isinstance(echo["calls"], int) and echo["engine_s"] == pytest.approx(usages[0]["engine_s"] + usages[1]["engine_s"])
    assert echo["engine_s"] == pytest.approx(stage.engine.stats.engine_s, abs=0.002)  # what the engine measured, to the ms


def old_usage(calls: int) -> str:
    """A usage JSON written before loads and engine seconds were booked."""
    counts = {"calls": calls, "samples": calls, "prompt_tokens": 100 * calls, "completion_tokens": 10 * calls, "errors": 0}
    return json.dumps({"proposal": {"busy_s": 1.0, "models": {"teacher": counts}}})


def test_usage_and_stats_written_before_the_new_counters_still_read():
    usage = json.loads(add_usage(old_usage(2), "proposal", 0.5, {"teacher": {"calls": 1, "engine_s": 0.25, "loads": 1}}))
    assert usage["proposal"]["models"]["teacher"] == {"calls": 3, "samples": 2, "prompt_tokens": 200, "completion_tokens": 20,
                                                      "errors": 0, "engine_s": 0.25, "loads": 1}
    old = compute_stats([row("a", 0, 0, usage=old_usage(2), n_objects=1, n_questions=1)], STAGES, ["a"])
    assert (old["models"]["teacher"]["loads"], old["models"]["teacher"]["engine_s"]) == (0, 0)
    # a chunk of an older output dir: its stats lack the keys altogether
    for counts in (old["models"]["teacher"], old["stages"]["proposal"]["models"]["teacher"]):
        del counts["loads"], counts["engine_s"]
    new = compute_stats([row("b", 0, 0, usage=teacher_usage(1), n_objects=1, n_questions=1)], STAGES, ["b"])
    merged = merge_stats(old, new)
    assert merged["models"]["teacher"]["calls"] == 3 and reconcile(merged) == []
    assert subtract_stats(merged, new)["models"]["teacher"]["calls"] == 2


def test_engine_seconds_merge_and_subtract_without_float_residue():
    seconds = [0.1, 0.2, 0.7]
    chunks = [compute_stats([row(s, 0, 0, n_objects=1, n_questions=1,
                                 usage=add_usage(None, "proposal", 0.0, {"teacher": {"calls": 1, "engine_s": e}}))], STAGES, [s])
              for s, e in zip("abc", seconds)]
    two = merge_stats(chunks[0], chunks[1])
    assert two["models"]["teacher"]["engine_s"] == 0.3  # not 0.30000000000000004
    merged = merge_stats(two, chunks[2])
    rest = subtract_stats(subtract_stats(merged, chunks[2]), chunks[1])
    assert rest["models"]["teacher"]["engine_s"] == 0.1
    assert subtract_stats(rest, chunks[0])["models"] == {}  # nothing left: the model disappears
