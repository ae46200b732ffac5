"""CV-Bench 2D / 3D (nyu-visionx/CV-Bench): 2,638 vision-centric questions from ADE20K, COCO and Omni3D.

Layout (the dataset card; lmms-eval's cv_bench tasks): ``idx, type, task, image, question,
choices, answer ("(A)"), prompt, filename, source, ...``; ``prompt`` is the question with its
choices. ``test_2d`` / ``test_3d`` parquet files, or ``test.parquet`` with ``type`` 2D / 3D.
Scores as the authors combine them: 2D = mean of the ADE20K and COCO accuracies, 3D = the Omni3D
accuracy; per task and per source too.
"""

from __future__ import annotations

import pandas as pd

from zwz_ray.eval.benchmarks.base import LayoutError, Preset, as_list, by, letter, mean_of, need, plain_score

COLUMNS = ("idx", "type", "task", "image", "prompt", "choices", "answer", "source")


def _converter(kind: str):
    def convert(row: dict) -> list[dict]:
        if str(need(row, "type")).upper() != kind:
            return []
        try:
            choices = [str(c) for c in as_list(row.get("choices"))]
        except ValueError as exc:
            raise LayoutError("choices", str(exc)) from None
        return [{"id": str(need(row, "idx", (str, int))), "question": need(row, "prompt"),
                 "answer": letter(row.get("answer"), "answer", "ABCDEF"[: max(len(choices), 2)]), "image": row.get("image"),
                 "options": choices or None, "category": str(need(row, "task")), "source": str(need(row, "source"))}]
    return convert


def _score_2d(df: pd.DataFrame) -> dict:
    sources = by(df, "source")
    parts = {s: v for s, v in sources.items() if s in ("ADE20K", "COCO")}
    return {**plain_score(df, "category", "source"), "headline": mean_of(parts) if parts else None}


PRESETS = [
    Preset("cvbench_2d", "CV-Bench 2D", "hf://datasets/nyu-visionx/CV-Bench", COLUMNS, _converter("2D"), _score_2d,
           "nyu-visionx/CV-Bench; lmms-eval cv_bench tasks", files=("**/*2[dD]*.parquet", "**/test*.parquet"), meta=("source",)),
    Preset("cvbench_3d", "CV-Bench 3D", "hf://datasets/nyu-visionx/CV-Bench", COLUMNS, _converter("3D"),
           lambda df: plain_score(df, "category", "source"), "nyu-visionx/CV-Bench; lmms-eval cv_bench tasks",
           files=("**/*3[dD]*.parquet", "**/test*.parquet"), meta=("source",)),
]
