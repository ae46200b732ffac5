"""Dual-view metrics from one model's predictions.

Accuracy per view (global = full image, regional = the crop), the zooming gap (regional -
global accuracy over the items answered in both views), accuracy per dimension (the
benchmark's own category; items without one appear under ``all`` only), the multiple-choice /
open split, which judging rule decided, and latency per item. Accuracies are fractions in
[0, 1]. Rows whose model call failed (rule ``error``) count as incorrect and are counted.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

VIEWS = ("global", "regional")


def _acc(df: pd.DataFrame) -> dict:
    n = int(len(df))
    correct = int(df["correct"].astype(bool).sum()) if n else 0
    return {"n": n, "correct": correct, "accuracy": correct / n if n else None,
            "errors": int((df["rule"] == "error").sum()) if n else 0,
            "undecided": int((df["rule"] == "undecided").sum()) if n else 0}


def per_view(df: pd.DataFrame) -> dict:
    return {view: _acc(df[df["view"] == view]) for view in VIEWS if (df["view"] == view).any()}


def zooming_gap(df: pd.DataFrame) -> dict | None:
    """Regional minus global accuracy over the items that have both views."""
    g = df[df["view"] == "global"].set_index("id")["correct"].astype(bool)
    r = df[df["view"] == "regional"].set_index("id")["correct"].astype(bool)
    paired = g.index.intersection(r.index)
    if len(paired) == 0:
        return None
    acc_g, acc_r = float(g.loc[paired].mean()), float(r.loc[paired].mean())
    return {"n_paired": int(len(paired)), "global": acc_g, "regional": acc_r, "gap": acc_r - acc_g,
            "fixed_by_zoom": int((~g.loc[paired] & r.loc[paired]).sum()),
            "lost_by_zoom": int((g.loc[paired] & ~r.loc[paired]).sum())}


def per_dimension(df: pd.DataFrame) -> dict:
    out = {"all": per_view(df)}
    cats = df["category"].dropna().astype(str)
    for cat in sorted(c for c in cats.unique() if c.strip()):
        out[cat] = per_view(df[df["category"].astype(str) == cat])
    return out


def per_kind(df: pd.DataFrame) -> dict:
    mcq = df["is_mcq"].astype(bool)
    return {kind: per_view(part) for kind, part in (("mcq", df[mcq]), ("open", df[~mcq])) if len(part)}


def _stats(values: pd.Series) -> dict:
    arr = pd.to_numeric(values, errors="coerce").dropna().to_numpy(dtype=float)
    if arr.size == 0:
        return {"n": 0}
    return {"n": int(arr.size), "mean": float(arr.mean()), "median": float(np.median(arr)),
            "p90": float(np.percentile(arr, 90)), "total": float(arr.sum())}


def latency(df: pd.DataFrame) -> dict:
    out = {}
    for view in VIEWS:
        part = df[(df["view"] == view) & (df["rule"] != "error")]
        if len(part):
            out[view] = {"latency_s": _stats(part["latency_s"]), "completion_tokens": _stats(part["completion_tokens"])}
    return out


def rules(df: pd.DataFrame) -> dict:
    return {view: {str(k): int(v) for k, v in df[df["view"] == view]["rule"].value_counts().sort_index().items()}
            for view in VIEWS if (df["view"] == view).any()}


def compute_metrics(df: pd.DataFrame) -> dict:
    """All metrics of one model's predictions (columns as in ``zwz_ray.eval.store.PREDICTION_COLUMNS``)."""
    if df.empty:
        return {"n_items": 0, "views": {}, "zooming_gap": None, "dimensions": {}, "kinds": {}, "rules": {}, "latency": {}}
    return {
        "n_items": int(df["id"].nunique()),
        "views": per_view(df),
        "zooming_gap": zooming_gap(df),
        "dimensions": per_dimension(df),
        "kinds": per_kind(df),
        "rules": rules(df),
        "latency": latency(df),
    }


def pct(value: float | None) -> str:
    """A fraction as a percentage with two decimals, as papers report accuracy."""
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.2f}"
