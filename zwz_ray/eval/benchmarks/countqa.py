"""CountQA: 1,528 counting questions on 1,001 cluttered real photos, scored by the number.

Layout (evalscope/CountQA, as evalscope's count_qa adapter reads it): one row per image,
``image`` ({bytes, path}), ``questions`` and ``answers`` (aligned lists), ``categories``,
``is_focused``; each question becomes one item. Rule (the paper's): the reply's count is the
reply itself when it is an integer, else its first integer; exact match is the headline,
relaxed accuracy (within 5%) is reported too.
"""

from __future__ import annotations

import re

import pandas as pd

from zwz_ray.eval.benchmarks.base import LayoutError, Preset, as_list, by, need

_INTEGER = re.compile(r"\d+")


def parse_count(response: str | None) -> int | None:
    if not response:
        return None
    from zwz_ray.replies import extract_answer

    text = extract_answer(response) or response  # the answer part of a reasoning reply, as every rule reads it
    cleaned = text.strip().strip("*`_\"'.,:; \n")
    if _INTEGER.fullmatch(cleaned):
        return int(cleaned)
    m = _INTEGER.search(text)
    return int(m.group()) if m else None


def count_rule(response: str | None, answer: str) -> tuple[str | None, bool, str]:
    count = parse_count(response)
    if count is None:
        return None, False, "no_answer"
    return str(count), count == int(answer), "count"


def _convert(row: dict) -> list[dict]:
    image = row.get("image")
    path = image.get("path") if isinstance(image, dict) else None
    if not path:
        raise LayoutError("image", "has no path to name its questions by (expected an {bytes, path} image)")
    try:
        questions, answers = as_list(row.get("questions")), as_list(row.get("answers"))
        categories = as_list(row.get("categories"))
    except ValueError as exc:
        raise LayoutError("questions", str(exc)) from None
    if not questions or len(questions) != len(answers):
        raise LayoutError("answers", f"has {len(answers)} answers for {len(questions)} questions")
    stem = str(path).rsplit(".", 1)[0]  # the image's name keys its questions: "0.jpg" -> 0#0, 0#1...
    items = []
    for k, (q, a) in enumerate(zip(questions, answers)):
        if not str(a).strip().isdigit():
            raise LayoutError("answers", f"answer {k} is {a!r}, not a whole number")
        items.append({"id": f"{stem}#{k}", "question": need({"q": q}, "q"), "answer": str(int(str(a).strip())), "image": image,
                      "category": str(categories[0]) if categories else None, "focused": str(bool(row.get("is_focused")))})
    return items


def _score(df: pd.DataFrame) -> dict:
    exact = float(df["correct"].astype(bool).mean()) if len(df) else None
    pred = pd.to_numeric(df["extracted"], errors="coerce")
    gold = pd.to_numeric(df["answer"], errors="coerce")
    relaxed = ((pred - gold).abs() <= 0.05 * gold) & pred.notna()
    return {"headline": exact, "accuracy": exact, "relaxed_accuracy": float(relaxed.mean()) if len(df) else None,
            "n": int(len(df)), "by_category": by(df, "category"), "by_focused": by(df, "focused")}


PRESETS = [
    Preset("countqa", "CountQA", "hf://datasets/evalscope/CountQA", ("image", "questions", "answers"), _convert, _score,
           "evalscope/CountQA; evalscope count_qa adapter", meta=("focused",), rule=count_rule),
]
