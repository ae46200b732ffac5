"""Dual-view metrics from one model's predictions.

Accuracy per view (global = full image, regional = the crop), the zooming gap (regional -
global accuracy over the items answered in both views), accuracy per dimension (the
benchmark's own category; items without one appear under ``all`` only), the multiple-choice /
open split, which judging rule decided, and latency per item. Accuracies are fractions in
[0, 1]. Rows whose model call failed (rule ``error``) count as incorrect and are counted.

View ``agent`` is the zoom-agent baseline (``zwz_ray.eval.agent``): :func:`agent_summary` sets it
against the single-pass global view (accuracy, items/s, the latency ratio, turns, tokens per item).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

VIEWS = ("global", "regional", "agent")


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


def _mean(values) -> float | None:
    arr = pd.to_numeric(pd.Series(values), errors="coerce").dropna()
    return float(arr.mean()) if len(arr) else None


def _cost(part: pd.DataFrame) -> dict:
    """Seconds per item (amortised, see ``latency_s``), items/s and tokens per item of answered rows."""
    ok = part[part["rule"] != "error"]
    s_per_item = _mean(ok["latency_s"])
    prompt, completion = _mean(ok["prompt_tokens"]), _mean(ok["completion_tokens"])
    return {"n": int(len(ok)), "s_per_item": s_per_item, "items_per_s": 1 / s_per_item if s_per_item else None,
            "prompt_tokens": prompt, "completion_tokens": completion,
            "tokens": prompt + completion if prompt is not None and completion is not None else None}


def agent_summary(df: pd.DataFrame, traces: pd.DataFrame | None) -> dict | None:
    """The zoom agent against single-pass answers on the same items (the global view), or None without agent rows."""
    agent = df[df["view"] == "agent"]
    if agent.empty:
        return None
    single = df[(df["view"] == "global") & df["id"].isin(agent["id"])]
    costs = {"single": _cost(single), "agent": _cost(agent)}
    out = {"n": int(len(agent)), "accuracy": _acc(agent)["accuracy"], "single_accuracy": _acc(single)["accuracy"] if len(single) else None,
           **{f"{mode}_{k}": v for mode, c in costs.items() for k, v in c.items() if k != "n"}}
    a, s = costs["agent"]["s_per_item"], costs["single"]["s_per_item"]
    out["latency_ratio"] = a / s if a and s else None  # agent seconds per item / single-pass seconds per item
    t = traces if traces is not None and not traces.empty else pd.DataFrame(columns=["turns"])
    turns = pd.to_numeric(t["turns"], errors="coerce").dropna().astype(int) if "turns" in t else pd.Series(dtype=int)
    calls = pd.to_numeric(t.get("tool_calls", pd.Series(dtype=float)), errors="coerce").fillna(0)
    malformed = int(pd.to_numeric(t.get("malformed_calls", pd.Series(dtype=float)), errors="coerce").fillna(0).sum())
    out.update(traced=int(len(t)), mean_turns=_mean(turns), mean_tool_calls=_mean(calls),
               mean_images=_mean(t["images"]) if "images" in t else None, tool_calls=int(calls.sum()), malformed_calls=malformed,
               malformed_rate=malformed / calls.sum() if calls.sum() else 0.0,
               mean_episode_s=_mean(t["episode_s"]) if "episode_s" in t else None,
               turns_histogram={str(k): int(v) for k, v in turns.value_counts().sort_index().items()},
               stops={str(k): int(v) for k, v in t["stop"].value_counts().sort_index().items()} if "stop" in t else {})
    return out


def compute_metrics(df: pd.DataFrame, traces: pd.DataFrame | None = None) -> dict:
    """All metrics of one model's predictions (columns as in ``zwz_ray.eval.store.PREDICTION_COLUMNS``);
    ``traces``: its zoom-agent episodes (``zwz_ray.eval.agent.TRACE_COLUMNS``), if any."""
    if df.empty:
        return {"n_items": 0, "views": {}, "zooming_gap": None, "dimensions": {}, "kinds": {}, "rules": {}, "latency": {},
                "agent": None}
    return {
        "n_items": int(df["id"].nunique()),
        "views": per_view(df),
        "zooming_gap": zooming_gap(df),
        "dimensions": per_dimension(df),
        "kinds": per_kind(df),
        "rules": rules(df),
        "latency": latency(df),
        "agent": agent_summary(df, traces),
    }


def pct(value: float | None) -> str:
    """A fraction as a percentage with two decimals, as papers report accuracy."""
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.2f}"
