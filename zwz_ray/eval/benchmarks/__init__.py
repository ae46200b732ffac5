"""Benchmark presets: the paper's benchmarks read in their published layouts, each with its own score.

    --set benchmark.preset=hrbench_4k        # reads DreamMr/HR-Bench as published, reports single / cross / average
    --set benchmark.preset=vstar --set benchmark.path=/data/vstar_bench   # a local copy of the same layout

One small module per benchmark family maps its layout onto our item fields and scores one view's
predictions; :func:`open_preset` reads it (a :class:`~zwz_ray.eval.loaders.Benchmark`), and
:func:`benchmark_scores` turns a run's predictions into each benchmark's own breakdown. Several
benchmarks in one job: :mod:`zwz_ray.eval.benchmarks.suite`.
"""

from __future__ import annotations

import difflib
import os

import pandas as pd
from fsspec.core import url_to_fs

from zwz_ray.config import ConfigError
from zwz_ray.eval.benchmarks import babyvision, colorbench, countqa, cvbench, hrbench, mme_realworld, mmstar, vstar, zoombench
from zwz_ray.eval.benchmarks.base import LayoutError, Preset, PresetBenchmark, read_preset
from zwz_ray.eval.benchmarks.hub import hub_local_copy
from zwz_ray.eval.config import DEFAULT_PATH, BenchmarkConfig
from zwz_ray.eval.image_paths import ImagePathError, resolve_image_path
from zwz_ray.eval.loaders import Benchmark, BenchmarkError, open_benchmark

PRESETS: dict[str, Preset] = {p.name: p for m in (zoombench, vstar, hrbench, mme_realworld, mmstar, cvbench, countqa, colorbench,
                                                   babyvision) for p in m.PRESETS}

__all__ = ["PRESETS", "open_any", "ImagePathError", "LayoutError", "Preset", "PresetBenchmark", "benchmark_scores", "check_preset",
           "get_preset", "open_preset", "preset_path", "rescore", "resolve_image_path", "scores_markdown"]


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        hint = difflib.get_close_matches(name, list(PRESETS), n=1)
        raise ConfigError(f"unknown benchmark preset {name!r}{f' (did you mean {hint[0]!r}?)' if hint else ''}; "
                          f"presets are {sorted(PRESETS)}")
    return PRESETS[name]


def check_preset(cfg: BenchmarkConfig, where: str) -> None:
    try:
        preset = get_preset(cfg.preset)
    except ConfigError as exc:
        raise ConfigError(f"{where}.preset: {exc}") from None
    if cfg.columns:
        raise ConfigError(f"{where}: a preset reads its own layout; drop columns {sorted(cfg.columns)} or the preset")
    if not preset.path and cfg.path == DEFAULT_PATH:
        raise ConfigError(f"{where}.path: the {cfg.preset} preset has no published copy; give the path of its files")


def open_any(cfg: BenchmarkConfig, where: str = "benchmark") -> Benchmark:
    """Open a benchmark: through its preset when it names one, else the ZoomBench / generic loader."""
    if not cfg.preset:
        return open_benchmark(cfg)
    check_preset(cfg, where)
    return open_preset(cfg)


def preset_path(cfg: BenchmarkConfig) -> str:
    """The benchmark's location: ``path`` if given, else the preset's published copy (the local cache when offline)."""
    preset = get_preset(cfg.preset)
    return hub_local_copy(cfg.path if cfg.path != DEFAULT_PATH or not preset.path else preset.path)


def open_preset(cfg: BenchmarkConfig) -> PresetBenchmark:
    """Read and check a benchmark through its preset; no image is read yet."""
    preset = get_preset(cfg.preset)
    path = preset_path(cfg)
    files, kind, records, meta, read_columns = read_preset(preset, path)
    item_meta = pd.DataFrame(meta, columns=["id", "category", *preset.meta])
    dupes = item_meta["id"][item_meta["id"].duplicated()].unique().tolist()
    if dupes:
        raise BenchmarkError(f"{files[0]}: repeated question ids {dupes[:3]} in the {preset.name} layout; ids must be unique")
    fs, local = url_to_fs(path)
    base = local if fs.isdir(local) else os.path.dirname(url_to_fs(files[0])[1])
    base_dir = fs.unstrip_protocol(base) if "://" in path else base
    name = cfg.name or preset.title
    return PresetBenchmark(name, preset.name, files, kind, {}, base_dir, cfg.bbox_format, cfg.limit, records, cfg.image_root,
                           cfg.image_prefix, preset=preset, item_meta=item_meta, read_columns=read_columns)


# --------------------------------------------------------------------------- scoring


def rescore(bench, df: pd.DataFrame) -> pd.DataFrame:
    """Predictions decided by the preset's own rule where it has one (CountQA: by the number)."""
    preset = getattr(bench, "preset", None)
    if preset is None or preset.rule is None or df.empty:
        return df
    df = df.copy()
    ok = df["rule"] != "error"
    decided = [preset.rule(r, str(a)) for r, a in zip(df.loc[ok, "response"], df.loc[ok, "answer"])]
    if decided:
        df.loc[ok, "extracted"] = [d[0] for d in decided]
        df.loc[ok, "correct"] = [bool(d[1]) for d in decided]
        df.loc[ok, "rule"] = [d[2] for d in decided]
        df.loc[ok, "verdict"] = ["correct" if d[1] else "incorrect" for d in decided]
    df["correct"] = df["correct"].astype(bool)
    return df


def benchmark_scores(bench, predictions: dict[str, pd.DataFrame]) -> dict:
    """``{model: {view: the benchmark's own scores}}``; empty for a benchmark read without a preset."""
    preset = getattr(bench, "preset", None)
    if preset is None:
        return {}
    meta = bench.item_meta.drop_duplicates("id")
    out = {}
    for label, df in predictions.items():
        if df.empty:
            out[label] = {}
            continue
        scored = rescore(bench, df).drop(columns=["category"], errors="ignore").merge(meta, on="id", how="left")
        out[label] = {view: preset.score(part.reset_index(drop=True)) for view, part in scored.groupby("view", sort=False)}
    return out


def _fmt(value) -> str:
    return "-" if value is None or value != value else f"{100 * value:.2f}"


def scores_markdown(title: str, scores: dict) -> list[str]:
    """Markdown lines: each model's headline and top-level scores per view, then the per-class tables."""
    if not scores:
        return []
    lines = [f"## {title}: the benchmark's own scores", "", "Accuracy in %.", ""]
    for label, views in scores.items():
        for view, s in views.items():
            flat = {k: v for k, v in s.items() if isinstance(v, float) or v is None}
            lines.append(f"**{label} ({view})**: " + ", ".join(f"{k} {_fmt(v)}" for k, v in flat.items()))
            for key, block in s.items():
                if isinstance(block, dict) and block and all(isinstance(v, dict) for v in block.values()):
                    cells = [f"{name} {_fmt(v.get('accuracy', v.get('Avg')))} (n={v.get('n', '-')})" for name, v in block.items()]
                    lines.append(f"- {key}: " + "; ".join(cells))
                elif isinstance(block, dict) and block:
                    lines.append(f"- {key}: " + ", ".join(f"{k} {_fmt(v) if isinstance(v, float) else v}" for k, v in block.items()
                                                         if not isinstance(v, dict)))
            lines.append("")
    return lines
