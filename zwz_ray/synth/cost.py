"""What one kept row cost: the models' calls, tokens and engine / GPU seconds over the kept rows.

The counters come from ``stats["models"]`` (booked per model label by the stages, see ``accounting``);
the GPUs of one replica of each model come from the synthesis config (:func:`model_gpus`). GPU-seconds
are engine seconds times those GPUs: an ``openai`` endpoint's GPUs are unknown (its engine seconds are
the endpoint's seconds), and the SAM3 grounder counts forward passes but no tokens or seconds (not
metered). Numbers over all models sum the metered ones only.
"""

from __future__ import annotations

from collections.abc import Iterable

from zwz_ray.config import EngineConfig
from zwz_ray.synth.config import SynthConfig

# Per kept row, in this order: stats.json keys (completion tokens are called generated tokens here).
PER_ROW = ("calls", "samples", "prompt_tokens", "generated_tokens", "engine_s", "gpu_s")
_SOURCE = {"generated_tokens": "completion_tokens"}


def engine_configs(cfg: SynthConfig) -> list[EngineConfig]:
    m = cfg.models
    return [m.teacher, *m.answerers, *(e for e in (m.judge, m.student) if e is not None)]


def model_gpus(cfg: SynthConfig) -> dict[str, float | None]:
    """GPUs of one replica per model label (``resources.num_gpus``); None where unknown: an ``openai``
    endpoint, or a label configured twice with different GPUs (the stats cannot tell the two apart)."""
    out: dict[str, float | None] = {}
    for engine in engine_configs(cfg):
        gpus = None if engine.backend == "openai" else float(engine.resources.num_gpus)
        out[engine.label] = gpus if out.get(engine.label, gpus) == gpus else None
    return out


def not_metered(cfg: SynthConfig) -> set[str]:
    """Model labels whose stage books calls but no tokens or engine seconds (the SAM3 grounder)."""
    return {cfg.models.grounding.model} if cfg.models.grounding.backend == "sam3" else set()


def _per_row(total: dict, kept: int) -> dict:
    return {key: None if total[key] is None or not kept else round(total[key] / kept, 3) for key in PER_ROW}


def _model_total(counts: dict, gpus: float | None, metered: bool) -> dict:
    total = {key: counts.get(_SOURCE.get(key, key), 0) for key in PER_ROW[:-1]}
    if not metered:
        total.update(prompt_tokens=None, generated_tokens=None, engine_s=None)
    total["engine_s"] = None if total["engine_s"] is None else round(total["engine_s"], 3)
    total["gpu_s"] = None if total["engine_s"] is None or gpus is None else round(total["engine_s"] * gpus, 3)
    return total


def cost_per_kept_row(stats: dict, gpus: dict[str, float | None], unmetered: Iterable[str] = ()) -> dict:
    """The ``cost_per_kept_row`` section of stats.json: per model label and over all metered models, the
    raw totals (``total``), the same divided by ``kept_rows`` (``per_kept_row``; null with 0 kept rows),
    and per model its GPUs per replica and ``loads`` (model loads booked in this output dir).

    A label missing from ``gpus`` (not in this config) has unknown GPUs. ``gpu_s`` over all models
    leaves out the models with unknown GPUs; ``gpu_s_leaves_out`` names them."""
    kept = stats.get("kept_rows", 0)
    unmetered = set(unmetered)
    models, leaves_out = {}, []
    all_models = {key: 0.0 if key.endswith("_s") else 0 for key in PER_ROW}
    for label, counts in stats.get("models", {}).items():
        metered = label not in unmetered
        total = _model_total(counts, gpus.get(label), metered)
        models[label] = {
            "metered": metered,
            "gpus_per_replica": gpus.get(label),
            "loads": counts.get("loads", 0),
            "total": total,
            "per_kept_row": _per_row(total, kept),
        }
        if not metered:
            continue
        if total["gpu_s"] is None:
            leaves_out.append(label)
        for key in PER_ROW:
            all_models[key] += total[key] or 0
    all_models = {key: round(v, 3) if key.endswith("_s") else v for key, v in all_models.items()}
    if leaves_out and len(leaves_out) == sum(m["metered"] for m in models.values()):
        all_models["gpu_s"] = None  # no model with known GPUs: 0 would claim a free run
    return {
        "kept_rows": kept,
        "models": models,
        "all_models": {"total": all_models, "per_kept_row": _per_row(all_models, kept), "gpu_s_leaves_out": leaves_out},
    }


def short(value: float) -> str:
    """12.0, 8.1k, 3.2M: a number for a one-line summary."""
    for size, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:.1f}{suffix}"
    return f"{value:.1f}"


def cost_line(cost: dict | None) -> str | None:
    """One summary line: what a kept row cost over all metered models (None when nothing was metered)."""
    if not cost or not any(m["metered"] for m in cost["models"].values()):
        return None
    every = cost["all_models"]
    row, total = every["per_kept_row"], every["total"]
    shown, head = (row, "model cost per kept row") if cost["kept_rows"] else (total, "model cost (no kept row to divide by)")
    gpu_s = "GPU-s unknown" if shown["gpu_s"] is None else f"{shown['gpu_s']:.1f} GPU-s"
    gaps = every["gpu_s_leaves_out"]
    if gaps and shown["gpu_s"] is not None:
        gpu_s += f" (GPUs unknown for {', '.join(gaps)})"
    return (
        f"{head}: {short(shown['calls'])} calls, {short(shown['prompt_tokens'])} prompt tokens, "
        f"{short(shown['generated_tokens'])} generated tokens, {short(shown['engine_s'])} engine-s, {gpu_s}"
    )
