"""Attention coverage: how much of the model's attention to the image falls inside the question's box.

One forward pass (transformers, eager attention) of a Qwen-VL model on the full image and
the raw question (or the student prompt). At one decoder layer we take the attention of the
last prompt token to the image tokens, average the heads, normalise it to sum to 1 and lay it
out on the merged patch grid (``image_grid_thw`` / ``spatial_merge_size``). Coverage = the
mass on the grid cells under the box (scaled to the grid) / the total mass (= 1).

As the reference measures it: layer 24 of 36 counted from 1 (:func:`resolve_layer` keeps that
relative depth on other models), the raw question, whole cells under the box (every cell the box
overlaps counts fully; ``cells="fraction"`` weights a cell by the share the box covers).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from zwz_ray.engines.base import as_pil
from zwz_ray.prompts import student_prompt

REFERENCE_LAYER, REFERENCE_DEPTH = 24, 36  # Qwen3-VL-4B: layer 24 (from 1) of its 36 decoder layers


@dataclass
class AttentionMap:
    grid: np.ndarray  # (rows, cols) attention over merged patches, sums to 1
    layer_index: int  # the decoder layer read, 0-based
    n_layers: int
    raw_mass: float  # attention mass on image tokens before normalisation (share of the whole row)


def decoder_layers(model: Any) -> Any:
    """The language model's decoder layers of a Qwen-VL model."""
    inner = getattr(model, "model", model)
    lm = getattr(inner, "language_model", None) or inner
    if not hasattr(lm, "layers"):
        raise ValueError(f"cannot find the decoder layers of {type(model).__name__}")
    return lm.layers


def resolve_layer(layer: int | None, n_layers: int, layer_of: int | None = None) -> int:
    """The 0-based index of the decoder layer to read.

    ``layer`` counts from 1; a negative one counts from the end (-1 = the last); None = the middle
    layer. With ``layer_of`` it is a layer of a ``layer_of``-deep model, mapped to the same relative
    depth of this one (``round(layer * n_layers / layer_of)``): 24 of 36 is index 23 of 36 layers and
    index 18 of 28. Without it, ``layer`` counts this model's own layers.
    """
    if layer is None:
        return n_layers // 2
    depth = layer_of or n_layers
    if layer == 0 or not -depth <= layer <= depth:
        raise ValueError(f"coverage layer {layer} is out of range for {depth} decoder layers (count from 1, or from -1 at the end)")
    number = layer if layer > 0 else depth + 1 + layer
    if layer_of:
        number = max(1, round(number * n_layers / layer_of))
    return number - 1


def _encode(processor: Any, image: Any, question: str, prompt: str = "raw") -> Any:
    text = question if prompt == "raw" else student_prompt(question)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
    prompt_text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return processor(text=[prompt_text], images=[image], return_tensors="pt")


def attention_map(model: Any, processor: Any, image: Any, question: str, layer: int | None = REFERENCE_LAYER,
                  layer_of: int | None = REFERENCE_DEPTH, prompt: str = "raw") -> AttentionMap:
    """Head-averaged attention of the last prompt token to the image, on the merged patch grid.

    ``layer`` / ``layer_of``: see :func:`resolve_layer`; ``prompt``: ``"raw"`` (the question as it is)
    or ``"student"`` (the question with the student prompt's answer-format line).
    """
    if prompt not in ("raw", "student"):
        raise ValueError(f"coverage prompt must be 'raw' or 'student', got {prompt!r}")
    image = as_pil(image)
    inputs = _encode(processor, image, question, prompt).to(model.device)
    layers = decoder_layers(model)
    index = resolve_layer(layer, len(layers), layer_of)
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
    return AttentionMap(grid=grid, layer_index=index, n_layers=len(layers), raw_mass=total / max(float(row.sum()), 1e-12))


def box_weights(box: list[float], image_size: tuple[int, int], grid_shape: tuple[int, int], cells: str = "whole") -> np.ndarray:
    """Weight of every grid cell under the pixel box (the box scaled to the grid).

    ``cells="whole"`` (the reference): 1 for every cell the box overlaps, however little, else 0.
    ``cells="fraction"``: the share of the cell the box covers.
    """
    if cells not in ("whole", "fraction"):
        raise ValueError(f"coverage cells must be 'whole' or 'fraction', got {cells!r}")
    width, height = image_size
    rows, cols = grid_shape
    x1, y1, x2, y2 = box
    gx1, gx2 = np.clip([x1 * cols / width, x2 * cols / width], 0, cols)
    gy1, gy2 = np.clip([y1 * rows / height, y2 * rows / height], 0, rows)
    cx = np.clip(np.minimum(np.arange(cols) + 1, gx2) - np.maximum(np.arange(cols), gx1), 0, 1)
    cy = np.clip(np.minimum(np.arange(rows) + 1, gy2) - np.maximum(np.arange(rows), gy1), 0, 1)
    if cells == "whole":  # a box edge exactly on a cell border does not reach into the next cell
        cx, cy = (cx > 0).astype(float), (cy > 0).astype(float)
    return np.outer(cy, cx)


def coverage_of(grid: np.ndarray, box: list[float], image_size: tuple[int, int], cells: str = "whole") -> dict[str, float]:
    """inside / outside / total attention mass and coverage = inside / total; a box on no cell is an error."""
    weights = box_weights(box, image_size, grid.shape, cells)
    if not weights.any():
        raise ValueError(f"box {list(box)} covers no grid cell of the {image_size[0]}x{image_size[1]} image")
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
    """Ray Data UDF (actor): attention coverage for items that have a bbox, one model.

    ``layer`` / ``layer_of`` as in :func:`resolve_layer`, ``prompt`` as in :func:`attention_map`,
    ``cells`` as in :func:`box_weights`; ``max_pixels`` bounds the image the model sees.
    """

    def __init__(self, model_ref: str, device: str = "cpu", dtype: str = "auto", layer: int | None = REFERENCE_LAYER,
                 min_pixels: int | None = None, max_pixels: int | None = None, layer_of: int | None = REFERENCE_DEPTH,
                 prompt: str = "raw", cells: str = "whole"):
        from zwz_ray.engines.hf import pick_device
        from zwz_ray.models import load_vlm

        self.model, self.processor = load_vlm(model_ref, device=pick_device(device), dtype=dtype, min_pixels=min_pixels,
                                              max_pixels=max_pixels, attn_implementation="eager")
        self.layer, self.layer_of, self.prompt, self.cells = layer, layer_of, prompt, cells

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
            amap = attention_map(self.model, self.processor, image, row["question"], self.layer, self.layer_of, self.prompt)
            stats = coverage_of(amap.grid, list(row["bbox"]), image.size, self.cells)
        except Exception as exc:  # noqa: BLE001 - one bad item is recorded, not fatal
            return {**base, "error": f"{type(exc).__name__}: {exc}"}
        # "layer" counts from 1, as the config does
        return {**base, **stats, "layer": amap.layer_index + 1, "n_layers": amap.n_layers, "image_mass": amap.raw_mass,
                "grid_rows": amap.grid.shape[0], "grid_cols": amap.grid.shape[1], "grid": amap.grid.flatten().tolist(),
                "bbox": list(row["bbox"])}
