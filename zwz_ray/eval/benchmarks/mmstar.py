"""MMStar (Lin-Chen/MMStar): 1,500 questions, 6 core capabilities x 3 detailed axes, letter answers.

Layout (the dataset card; lmms-eval's mmstar task): ``index, question, image, answer, category,
l2_category, meta_info``; the options are inside ``question`` ("Options: A: x, B: y, ...").
Scores: overall accuracy (headline), per category and per l2 category.
"""

from __future__ import annotations

from zwz_ray.eval.benchmarks.base import Preset, letter, need, plain_score


def options_in(question: str) -> list[str] | None:
    """The option texts after "Options:", in letter order (read as every letter question is: zwz_ray.replies)."""
    from zwz_ray.replies import parse_options

    _, sep, tail = question.rpartition("Options:")
    return list(parse_options(tail).values()) or None if sep else None


def _convert(row: dict) -> list[dict]:
    question = need(row, "question")
    return [{"id": str(need(row, "index", (str, int))), "question": question, "answer": letter(row.get("answer"), "answer", "ABCDEF"),
             "image": row.get("image"), "options": options_in(question), "category": str(need(row, "category")),
             "l2_category": str(row.get("l2_category") or "")}]


PRESETS = [
    Preset("mmstar", "MMStar", "hf://datasets/Lin-Chen/MMStar", ("index", "question", "image", "answer", "category", "l2_category"),
           _convert, lambda df: plain_score(df, "category", "l2_category"), "Lin-Chen/MMStar; lmms-eval mmstar task",
           meta=("l2_category",)),
]
