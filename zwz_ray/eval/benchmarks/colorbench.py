"""ColorBench (umd-zhou-lab/ColorBench): color perception, reasoning and robustness, 5,800+ questions.

Layout (the dataset card; tianyi-lab/ColorBench evaluation): ``idx, type (Perception / Reasoning
/ Robustness), task, filename, image, prompt, choices, answer ("(A)")``; ``prompt`` holds the
question and its options. Scores as the authors' metrics_eval: accuracy per task, perception,
reasoning and overall over the perception + reasoning questions (headline); robustness = the
share of robustness images answered right in the original and in every recolored version
(``<id>.png`` and ``<id>_<k>.png`` in ``filename``).
"""

from __future__ import annotations

import pandas as pd

from zwz_ray.eval.benchmarks.base import LayoutError, Preset, accuracy, as_list, by, letter, need

COLUMNS = ("idx", "type", "task", "image", "prompt", "choices", "answer")


def _convert(row: dict) -> list[dict]:
    try:
        choices = [str(c) for c in as_list(row.get("choices"))]
    except ValueError as exc:
        raise LayoutError("choices", str(exc)) from None
    kind = str(need(row, "type")).strip()
    stem = str(row.get("filename") or "").rsplit("/", 1)[-1].rsplit(".", 1)[0]
    if kind.lower() == "robustness" and not stem:
        raise LayoutError("filename", "is needed for robustness questions (it groups an image with its recolorings)")
    return [{"id": str(need(row, "idx", (str, int))), "question": need(row, "prompt"),
             "answer": letter(row.get("answer"), "answer", "ABCDEFGH"[: max(len(choices), 2)]), "image": row.get("image"),
             "options": choices or None, "category": str(need(row, "task")), "type": kind.lower(), "group": stem.split("_")[0]}]


def _score(df: pd.DataFrame) -> dict:
    pr = df[df["type"] != "robustness"]
    rob = df[df["type"] == "robustness"]
    robust = rob.groupby("group")["correct"].agg(lambda s: bool(s.astype(bool).all())) if len(rob) else pd.Series(dtype=bool)
    overall = accuracy(pr)
    return {"headline": overall["accuracy"], **overall, "perception": accuracy(pr[pr["type"] == "perception"])["accuracy"],
            "reasoning": accuracy(pr[pr["type"] == "reasoning"])["accuracy"], "by_task": by(pr, "category"),
            "robustness": float(robust.mean()) if len(robust) else None, "robustness_images": int(len(robust))}


PRESETS = [
    Preset("colorbench", "ColorBench", "hf://datasets/umd-zhou-lab/ColorBench", COLUMNS, _convert, _score,
           "umd-zhou-lab/ColorBench; tianyi-lab/ColorBench evaluation/metrics_eval.py", meta=("type", "group")),
]
