"""HR-Bench 4K / 8K (DreamMr/HR-Bench): single-instance (FSP) and cross-instance (FCP) perception.

Layout (VLMEvalKit TSV and its parquet copy): ``index, question, A, B, C, D, answer, category,
cycle_category, image`` with base64 images; ``category`` is ``single`` or ``cross``. Each
question comes in cyclic option orders sharing a ``cycle_category``; as lmms-eval's hrbench task
does, accuracy is averaged within each cycle category, then across cycles, for ``single``,
``cross`` and all questions (``average``, the headline).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from zwz_ray.eval.benchmarks.base import LayoutError, Preset, letter, need, with_options

COLUMNS = ("index", "question", "A", "B", "C", "D", "answer", "category", "cycle_category", "image")


def _convert(row: dict) -> list[dict]:
    options = [str(need(row, c, (str, int, float))) for c in "ABCD"]
    category = str(need(row, "category")).strip().lower()
    if category not in ("single", "cross"):
        raise LayoutError("category", f"is {category!r}, not 'single' or 'cross'")
    return [{"id": str(need(row, "index", (str, int))), "question": with_options(need(row, "question"), options),
             "answer": letter(row.get("answer"), "answer", "ABCD"), "image": row.get("image"), "options": options,
             "category": category, "cycle_category": str(need(row, "cycle_category", (str, int)))}]


def cycle_average(df: pd.DataFrame) -> float | None:
    """Mean over cycle categories of the accuracy within each."""
    if df.empty:
        return None
    return float(np.mean([part["correct"].astype(bool).mean() for _, part in df.groupby("cycle_category")]))


def _score(df: pd.DataFrame) -> dict:
    single, cross = cycle_average(df[df["category"] == "single"]), cycle_average(df[df["category"] == "cross"])
    return {"headline": cycle_average(df), "single": single, "cross": cross, "average": cycle_average(df), "n": int(len(df))}


def _preset(size: str) -> Preset:
    return Preset(f"hrbench_{size}", f"HR-Bench {size.upper()}", "hf://datasets/DreamMr/HR-Bench", COLUMNS, _convert, _score,
                  "DreamMr/HR-Bench (VLMEvalKit TSV); lmms-eval hrbench task", files=(f"**/*{size}*",),
                  meta=("cycle_category",))


PRESETS = [_preset("4k"), _preset("8k")]
