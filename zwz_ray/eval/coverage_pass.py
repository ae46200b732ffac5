"""The attention-coverage pass: a Ray Data actor pool per Qwen-VL model over items with a box."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
from PIL import Image

from zwz_ray.config import EngineConfig
from zwz_ray.eval.config import EvalConfig
from zwz_ray.eval.coverage import CoverageScorer, summarize
from zwz_ray.eval.loaders import Benchmark
from zwz_ray.eval.store import model_slug
from zwz_ray.images import encode_image
from zwz_ray.logs import get_logger
from zwz_ray.resources import map_batches_kwargs
from zwz_ray.runtime import require_gpus

log = get_logger(__name__)
THUMBNAIL = 768  # longest side of the images kept for heatmaps


class CoverageStage(CoverageScorer):
    """Adds a small thumbnail of the image to every scored row (for the heatmap plots)."""

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        rows = []
        for row in batch.to_dict("records"):
            scored = self.score(row)
            if scored["error"] is None:
                scored.update(_thumbnail(row["image"]))
            rows.append(scored)
        return pd.DataFrame(rows)


def _thumbnail(data: bytes) -> dict:
    img = Image.open(io.BytesIO(data)).convert("RGB")
    scale = min(1.0, THUMBNAIL / max(img.size))
    if scale < 1:
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))))
    return {"thumbnail": encode_image(img, "JPEG", quality=85), "scale": scale}


def _with_box(batch: pd.DataFrame) -> pd.DataFrame:
    keep = batch["bbox"].notna() & batch["image_error"].isna()
    return batch[keep][["id", "question", "image", "bbox", "category"]]


def _score_model(model: EngineConfig, items, cfg: EvalConfig) -> pd.DataFrame:
    res, cov = model.resources, cfg.coverage
    require_gpus(res.num_gpus, f"attention coverage of {model.label}")
    ds = items.map_batches(_with_box, batch_format="pandas")
    if cov.max_items != "all":
        ds = ds.limit(cov.max_items)
    ds = ds.repartition(target_num_rows_per_block=4)
    max_pixels = cov.max_pixels if cov.max_pixels is not None else model.max_pixels
    ds = ds.map_batches(
        CoverageStage,
        fn_constructor_kwargs={"model_ref": model.model, "device": model.device, "dtype": model.dtype, "layer": cov.layer,
                               "layer_of": cov.layer_of, "prompt": cov.prompt, "cells": cov.cells,
                               "min_pixels": model.min_pixels, "max_pixels": max_pixels},
        batch_format="pandas", **map_batches_kwargs(res, actors=True, batch_size=4),
    )
    return ds.to_pandas()


def _heatmaps(df: pd.DataFrame, label: str, count: int, fs, root: str) -> list[str]:
    from zwz_ray.eval.report import plot_heatmap

    paths = []
    folder = f"coverage/{model_slug(label)}"
    fs.makedirs(f"{root}/{folder}", exist_ok=True)
    for row in df[df["error"].isna()].head(count).to_dict("records"):
        grid = np.asarray(row["grid"], dtype=float).reshape(int(row["grid_rows"]), int(row["grid_cols"]))
        image = Image.open(io.BytesIO(row["thumbnail"])).convert("RGB")
        box = [float(v) * float(row["scale"]) for v in row["bbox"]]
        path = f"{folder}/{model_slug(str(row['id']))}.png"
        title = f"{label} item {row['id']}: coverage {row['coverage']:.4f} (box area {row['box_area']:.4f})"
        plot_heatmap(image, grid, box, title, fs, f"{root}/{path}")
        paths.append(path)
    return paths


def run_coverage(cfg: EvalConfig, bench: Benchmark, fs, root: str) -> dict:
    """Coverage summary (and heatmap paths) per model; per-item rows go to ``coverage/<model>.parquet``."""
    models = [m for m in cfg.models if not cfg.coverage.models or m.label in cfg.coverage.models]
    items = bench.dataset()
    out = {}
    for model in models:
        df = _score_model(model, items, cfg)
        if df.empty:
            out[model.label] = {"n": 0, "note": "no item with a bbox"}
            continue
        ok = df[df["error"].isna()] if "error" in df else df
        summary = summarize(ok["coverage"].tolist(), ok["box_area"].tolist()) if len(ok) else {"n": 0}
        first = ok.iloc[0] if len(ok) else None  # "layer" counts from 1, of "n_layers"
        summary.update(errors=int(len(df) - len(ok)), layer=int(first["layer"]) if first is not None else None,
                       n_layers=int(first["n_layers"]) if first is not None else None)
        if len(df) > len(ok):
            summary["first_error"] = str(df[df["error"].notna()]["error"].iloc[0])
        fs.makedirs(f"{root}/coverage", exist_ok=True)
        with fs.open(f"{root}/coverage/{model_slug(model.label)}.parquet", "wb") as fh:
            df.drop(columns=["thumbnail"], errors="ignore").to_parquet(fh, index=False)
        summary["heatmaps"] = _heatmaps(df, model.label, cfg.coverage.heatmaps, fs, root) if len(ok) else []
        out[model.label] = summary
        log.info("%s: attention coverage %s", model.label, {k: v for k, v in summary.items() if k != "heatmaps"})
    return out
