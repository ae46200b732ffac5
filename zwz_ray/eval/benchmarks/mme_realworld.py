"""MME-RealWorld (29,429 five-option questions), its Lite subset and the Chinese (CN) version.

Layout (yifanzhang114/MME-RealWorld*-Lmms-eval, read by lmms-eval's mme_realworld tasks):
``index, question, multi-choice options, answer, category, l2-category, bytes`` with the image
base64 in ``bytes`` and the options as "(A) text" strings (a list, or its Python literal in TSV
copies). ``category`` reads "Perception/<domain>" or "Reasoning/<domain>". Scores: Avg (accuracy
over the questions) and Avg-C (the mean of the per-domain accuracies), for perception, for
reasoning and overall (headline: overall Avg).
"""

from __future__ import annotations

import re

import pandas as pd

from zwz_ray.eval.benchmarks.base import LayoutError, Preset, accuracy, as_list, by, letter, mean_of, need, with_options

COLUMNS = ("index", "question", "multi-choice options", "answer", "category", "l2-category", "bytes")
_LABEL = re.compile(r"^\s*\(?([A-E])[\).:]\s*")


def _task(category: str) -> str:
    low = category.lower()
    if "perception" in low or "感知" in category:
        return "perception"
    if "reasoning" in low or "推理" in category:
        return "reasoning"
    raise LayoutError("category", f"is {category!r}: neither a perception nor a reasoning task")


def _convert(row: dict) -> list[dict]:
    try:
        raw = as_list(need(row, "multi-choice options", (str, list, tuple, object)))
    except ValueError as exc:
        raise LayoutError("multi-choice options", str(exc)) from None
    if not 2 <= len(raw) <= 5:
        raise LayoutError("multi-choice options", f"has {len(raw)} options; MME-RealWorld has up to five (A-E)")
    options = [_LABEL.sub("", str(o)).strip() for o in raw]
    category = str(need(row, "category"))
    return [{"id": str(need(row, "index", (str, int))), "question": with_options(need(row, "question"), options),
             "answer": letter(row.get("answer"), "answer", "ABCDE"), "image": row.get("bytes"), "options": options,
             "category": category, "task": _task(category), "domain": category.split("/")[-1].strip(),
             "l2": str(row.get("l2-category") or "")}]


def _score(df: pd.DataFrame) -> dict:
    out = {}
    for task in ("perception", "reasoning"):
        part = df[df["task"] == task]
        if len(part):
            domains = by(part, "domain")
            out[task] = {"Avg": accuracy(part)["accuracy"], "Avg-C": mean_of(domains), "n": int(len(part)), "domains": domains}
    classes = {f"{t}/{d}": v for t in ("perception", "reasoning") for d, v in out.get(t, {}).get("domains", {}).items()}
    overall = accuracy(df)
    return {"headline": overall["accuracy"], "Avg": overall["accuracy"], "Avg-C": mean_of(classes), "n": overall["n"], **out,
            "by_l2": by(df, "l2")}


def _preset(name: str, title: str, repo: str) -> Preset:
    return Preset(name, title, f"hf://datasets/yifanzhang114/{repo}", COLUMNS, _convert, _score,
                  f"yifanzhang114/{repo}; lmms-eval mme_realworld tasks", image_columns=("bytes",), meta=("task", "domain", "l2"))


PRESETS = [
    _preset("mme_realworld", "MME-RealWorld", "MME-RealWorld-Lmms-eval"),
    _preset("mme_realworld_lite", "MME-RealWorld Lite", "MME-RealWorld-lite-lmms-eval"),
    _preset("mme_realworld_cn", "MME-RealWorld CN", "MME-RealWorld-CN-Lmms-eval"),
]
