"""Attention coverage: how much of the model's attention to the image falls inside the question's box.

One forward pass (transformers, eager attention) of a Qwen-VL model on the full image and
the student prompt. At one decoder layer we take the attention of the last prompt token to
the image tokens, average the heads, normalise it to sum to 1 and lay it out on the merged
patch grid (``image_grid_thw`` / ``spatial_merge_size``). Coverage = the mass inside the box
(scaled to the grid, partial cells weighted by their overlap) / the total mass (= 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from zwz_ray.engines.base import as_pil
from zwz_ray.prompts import student_prompt


@dataclass
class AttentionMap:
    grid: np.ndarray  # (rows, cols) attention over merged patches, sums to 1
    layer: int
    raw_mass: float  # attention mass on image tokens before normalisation (share of the whole row)


def decoder_layers(model: Any) -> Any:
    """The language model's decoder layers of a Qwen-VL model."""
    inner = getattr(model, "model", model)
    lm = getattr(inner, "language_model", None) or inner
    if not hasattr(lm, "layers"):
        raise ValueError(f"cannot find the decoder layers of {type(model).__name__}")
    return lm.layers


def _layer_index(layer: int | None, n_layers: int) -> int:
    index = n_layers // 2 if layer is None else layer
    index = index + n_layers if index < 0 else index
    if not 0 <= index < n_layers:
        raise ValueError(f"coverage layer {layer} is out of range for a model with {n_layers} decoder layers")
    return index


def _encode(processor: Any, image: Any, question: str) -> Any:
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": student_prompt(question)}]}]
    prompt = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return processor(text=[prompt], images=[image], return_tensors="pt")


def attention_map(model: Any, processor: Any, image: Any, question: str, layer: int | None = None) -> AttentionMap:
    """Head-averaged attention of the last prompt token to the image, on the merged patch grid."""
    image = as_pil(image)
    inputs = _encode(processor, image, question).to(model.device)
    layers = decoder_layers(model)
    index = _layer_index(layer, len(layers))
    captured: dict[str, torch.Tensor] = {}

    def hook(_module, _args, output):
        weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
        if weights is not None:
            captured["w"] = weights[0, :, -1, :].float().detach()  # (heads, keys) for the last query

    handle = layers[index].self_attn.register_forward_hook(hook)
    try:
        with torch.inference_mode():
            model(**inputs, use_cache=False)
    finally:
        handle.remove()
    if "w" not in captured:
        raise RuntimeError("no attention weights captured; load the model with attn_implementation='eager'")
    row = captured["w"].mean(0).cpu()
    image_pos = (inputs["input_ids"][0] == model.config.image_token_id).nonzero().flatten().cpu()
    t, h, w = (int(v) for v in inputs["image_grid_thw"][0])
    merge = int(getattr(processor.image_processor, "merge_size", 2))
    rows, cols = h // merge, w // merge
    if len(image_pos) != t * rows * cols:
        raise RuntimeError(f"{len(image_pos)} image tokens do not fill a {t}x{rows}x{cols} grid")
    mass = row[image_pos].numpy().astype(np.float64).reshape(t, rows, cols).sum(0)
    total = float(mass.sum())
    grid = mass / total if total > 0 else np.full_like(mass, 1.0 / mass.size)
    return AttentionMap(grid=grid, layer=index, raw_mass=total / max(float(row.sum()), 1e-12))


def box_weights(box: list[float], image_size: tuple[int, int], grid_shape: tuple[int, int]) -> np.ndarray:
    """Fraction of every grid cell covered by the pixel box (the box scaled to the grid)."""
    width, height = image_size
    rows, cols = grid_shape
    x1, y1, x2, y2 = box
    gx1, gx2 = np.clip([x1 * cols / width, x2 * cols / width], 0, cols)
    gy1, gy2 = np.clip([y1 * rows / height, y2 * rows / height], 0, rows)
    cx = np.clip(np.minimum(np.arange(cols) + 1, gx2) - np.maximum(np.arange(cols), gx1), 0, 1)
    cy = np.clip(np.minimum(np.arange(rows) + 1, gy2) - np.maximum(np.arange(rows), gy1), 0, 1)
    return np.outer(cy, cx)


def coverage_of(grid: np.ndarray, box: list[float], image_size: tuple[int, int]) -> dict[str, float]:
    """inside / outside / total attention mass and coverage = inside / total."""
    weights = box_weights(box, image_size, grid.shape)
    total = float(grid.sum())
    inside = float((grid * weights).sum())
    area = float(weights.sum() / weights.size)
    return {"inside": inside, "outside": total - inside, "total": total,
            "coverage": inside / total if total > 0 else 0.0, "box_area": area}


def summarize(values: list[float], areas: list[float]) -> dict[str, float]:
    """Mean/median coverage and the mean box area (what uniform attention would score)."""
    if not values:
        return {"n": 0}
    arr = np.asarray(values)
    return {"n": len(values), "mean": float(arr.mean()), "median": float(np.median(arr)), "min": float(arr.min()),
            "max": float(arr.max()), "mean_box_area": float(np.mean(areas)),
            "lift_over_uniform": float(arr.mean() / max(np.mean(areas), 1e-12))}


class CoverageScorer:
    """Ray Data UDF (actor): attention coverage for items that have a bbox, one model."""

    def __init__(self, model_ref: str, device: str = "cpu", dtype: str = "auto", layer: int | None = None,
                 min_pixels: int | None = None, max_pixels: int | None = None):
        from zwz_ray.engines.hf import pick_device
        from zwz_ray.models import load_vlm

        self.model, self.processor = load_vlm(model_ref, device=pick_device(device), dtype=dtype, min_pixels=min_pixels,
                                              max_pixels=max_pixels, attn_implementation="eager")
        self.layer = layer

    def __call__(self, batch):
        out = []
        for row in batch.to_dict("records"):
            out.append(self.score(row))
        import pandas as pd

        return pd.DataFrame(out)

    def score(self, row: dict) -> dict:
        base = {"id": row["id"], "category": row.get("category"), "error": None}
        try:
            image = as_pil(row["image"])
            amap = attention_map(self.model, self.processor, image, row["question"], self.layer)
            stats = coverage_of(amap.grid, list(row["bbox"]), image.size)
        except Exception as exc:  # noqa: BLE001 - one bad item is recorded, not fatal
            return {**base, "error": f"{type(exc).__name__}: {exc}"}
        return {**base, **stats, "layer": amap.layer, "image_mass": amap.raw_mass, "grid_rows": amap.grid.shape[0],
                "grid_cols": amap.grid.shape[1], "grid": amap.grid.flatten().tolist(), "bbox": list(row["bbox"])}
