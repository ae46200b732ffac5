"""Statistics computed from the final rows: per-stage counts, drop reasons, costs, identities."""

from __future__ import annotations

import json

from zwz_ray.synth.accounting import add_usage, compute_stats, merge_stats, model_calls, reconcile
from zwz_ray.synth.columns import image_complete

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
