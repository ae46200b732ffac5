"""Statistics that stay correct under Ray's parallelism.

Nothing is counted in shared state. Each stage call adds its cost (model calls, tokens, engine
seconds, model loads, busy seconds) to the ``usage`` JSON of the first row it returns; a fanned-out row hands its usage
to its first child only. Dropped rows stay in the data. So after the run, the final rows
alone give every number exactly once: rows in/out per stage (from the unit keys of the rows
that reached or passed it), every drop reason, and the cost per stage and model.

Units: a stage reads and writes rows at a level (0 image, 1 object, 2 question); the unit key
of a row at level L is ``(source, object_index, question_index)[: L + 1]``.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

COUNTERS = ("calls", "samples", "prompt_tokens", "completion_tokens", "errors", "loads", "engine_s")
SECONDS = "engine_s"  # the one float counter (seconds, kept to the millisecond); the others are integers


def _count(key: str, value: float) -> float:
    """A counter as it is stored: seconds rounded to the millisecond, the rest as integers."""
    return round(float(value), 3) if key == SECONDS else int(value)


# --------------------------------------------------------------------------- per-row usage


def add_usage(usage: str | None, stage: str, busy_s: float, models: dict[str, dict[str, float]],
              flags: dict[str, int] | None = None) -> str:
    """``usage`` (JSON or None) plus one stage call's cost and its flags (events on kept rows).

    A usage written before a counter existed reads as 0 for that counter."""
    data = json.loads(usage) if usage else {}
    entry = data.setdefault(stage, {"busy_s": 0.0, "models": {}})
    entry["busy_s"] = entry["busy_s"] + busy_s
    for name, n in (flags or {}).items():
        entry.setdefault("flags", {})[name] = entry.get("flags", {}).get(name, 0) + n
    for label, counts in models.items():
        into = entry["models"].setdefault(label, dict.fromkeys(COUNTERS, 0))
        for key in COUNTERS:
            into[key] = _count(key, into.get(key, 0) + _count(key, counts.get(key, 0)))
    return json.dumps(data, separators=(",", ":"))


def stats_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {key: after.get(key, 0) - before.get(key, 0) for key in COUNTERS}


# --------------------------------------------------------------------------- stats from rows


def _key(row: dict, level: int) -> tuple:
    return (row["source"], row["object_index"], row["question_index"])[: level + 1]


def compute_stats(rows: Sequence[dict], stages: Sequence[tuple[str, int, int]], sources: Iterable[str]) -> dict:
    """Per-stage and per-image numbers from the final rows (source, unit indices, drop stage and reason, usage are enough).

    ``stages``: (name, level_in, level_out) in pipeline order; ``sources``: the images sent in.
    """
    order = {name: i for i, (name, _, _) in enumerate(stages)}
    last = len(stages)
    reached_upto = [order.get(r["drop_stage"], last) if r["drop_stage"] else last for r in rows]
    out: dict = {"stages": {}}
    for i, (name, level_in, level_out) in enumerate(stages):
        reached = [r for r, upto in zip(rows, reached_upto) if upto >= i]
        passed = [r for r, upto in zip(rows, reached_upto) if upto > i]
        dropped_here = [r for r in reached if r["drop_stage"] == name]
        out["stages"][name] = {
            "rows_in": len({_key(r, level_in) for r in reached}),
            "rows_out": len({_key(r, level_out) for r in passed}),
            "units_passed": len({_key(r, level_in) for r in passed}),
            "dropped": dict(Counter(r["drop_reason"] for r in dropped_here)),
            "busy_s": 0.0,
            "models": {},
        }
    _add_costs(out["stages"], rows)
    sources = set(sources)
    with_kept = {r["source"] for r in rows if not r["drop_stage"]}
    out["images"] = {"in": len(sources), "with_kept_rows": len(with_kept & sources), "fully_dropped": len(sources - with_kept)}
    out["kept_rows"] = sum(1 for r in rows if not r["drop_stage"])
    out["drop_rows"] = sum(1 for r in rows if r["drop_stage"])
    out["retryable_drops"] = sum(1 for r in rows if r["drop_stage"] and r.get("drop_retryable"))
    out["models"] = model_totals(out["stages"])
    return out


def _add_costs(stage_stats: dict, rows: Sequence[dict]) -> None:
    for row in rows:
        if not row.get("usage"):
            continue
        for stage, entry in json.loads(row["usage"]).items():
            into = stage_stats.setdefault(stage, {"rows_in": 0, "rows_out": 0, "units_passed": 0, "dropped": {}, "busy_s": 0.0, "models": {}})
            into["busy_s"] += entry.get("busy_s", 0.0)
            for name, n in entry.get("flags", {}).items():
                into.setdefault("flags", {})[name] = into.get("flags", {}).get(name, 0) + n
            for label, counts in entry.get("models", {}).items():
                acc = into["models"].setdefault(label, dict.fromkeys(COUNTERS, 0))
                for key in COUNTERS:
                    acc[key] = _count(key, acc[key] + counts.get(key, 0))


def model_totals(stage_stats: dict) -> dict:
    totals: dict = defaultdict(lambda: dict.fromkeys(COUNTERS, 0))
    for entry in stage_stats.values():
        for label, counts in entry["models"].items():
            for key in COUNTERS:
                totals[label][key] = _count(key, totals[label][key] + counts.get(key, 0))
    return dict(totals)


def model_calls(stats: dict) -> int:
    return sum(m["calls"] for m in stats.get("models", {}).values())


# --------------------------------------------------------------------------- merging, checking


def merge_stats(a: dict, b: dict) -> dict:
    """Sum two stats dicts (numbers add, dicts merge key by key, order of first appearance).

    A key only one side has is copied, so stats written before a counter existed merge fine."""
    out = dict(a)
    for key, value in b.items():
        if key not in out:
            out[key] = json.loads(json.dumps(value))
        elif isinstance(value, dict):
            out[key] = merge_stats(out[key], value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = _count(key, out[key] + value) if key == SECONDS else out[key] + value
        else:
            out[key] = value
    return out


def subtract_stats(a: dict, b: dict) -> dict:
    """``a`` without ``b`` (``b`` was merged into ``a``): what a chunk holds once some of its images are redone.

    Drop reasons and models whose counts fall to zero disappear, so the result equals the stats
    of the remaining images alone."""
    out = {}
    for key, value in a.items():
        other = b.get(key)
        if isinstance(value, dict):
            out[key] = subtract_stats(value, other if isinstance(other, dict) else {})
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and isinstance(other, (int, float)):
            out[key] = _count(key, value - other) if key == SECONDS else value - other
        else:
            out[key] = value
    if isinstance(out.get("dropped"), dict):
        out["dropped"] = {reason: n for reason, n in out["dropped"].items() if n}
    if isinstance(out.get("models"), dict):
        out["models"] = {label: c for label, c in out["models"].items() if not isinstance(c, dict) or any(c.get(k) for k in COUNTERS)}
    return out


def reconcile(stats: dict) -> list[str]:
    """Accounting identities every stats dict must satisfy; returns the violated ones."""
    problems = []
    images = stats["images"]
    if images["in"] != images["with_kept_rows"] + images["fully_dropped"]:
        problems.append(f"images: in {images['in']} != with kept rows {images['with_kept_rows']} + fully dropped {images['fully_dropped']}")
    stages = list(stats["stages"].items())
    if stages and stages[0][1]["rows_in"] != images["in"]:
        problems.append(f"first stage saw {stages[0][1]['rows_in']} images, {images['in']} went in")
    drops = 0
    for i, (name, s) in enumerate(stages):
        n_dropped = sum(s["dropped"].values())
        drops += n_dropped
        if s["rows_in"] != n_dropped + s["units_passed"]:
            problems.append(f"{name}: rows_in {s['rows_in']} != dropped {n_dropped} + passed {s['units_passed']}")
        if i + 1 < len(stages) and s["rows_out"] != stages[i + 1][1]["rows_in"]:
            problems.append(f"{name}: rows_out {s['rows_out']} != {stages[i + 1][0]}.rows_in {stages[i + 1][1]['rows_in']}")
    if stages and stages[-1][1]["rows_out"] != stats["kept_rows"]:
        problems.append(f"last stage let {stages[-1][1]['rows_out']} rows out but {stats['kept_rows']} were kept")
    if drops != stats["drop_rows"]:
        problems.append(f"{drops} drops counted by stage but {stats['drop_rows']} drop rows")
    return problems


def drop_reasons(stats: dict) -> Counter:
    """``"stage/reason" -> count`` over all stages."""
    counts: Counter = Counter()
    for name, s in stats["stages"].items():
        for reason, n in s["dropped"].items():
            counts[f"{name}/{reason}"] += n
    return counts
