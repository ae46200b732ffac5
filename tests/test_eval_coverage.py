"""Attention coverage: cells under a box, which layer is read, and a tiny Qwen-VL model with a known box."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zwz_ray.config import ConfigError, from_dict, load_config
from zwz_ray.eval.config import CoverageConfig, EvalConfig
from zwz_ray.eval.coverage import _encode, attention_map, box_weights, coverage_of, decoder_layers, resolve_layer, summarize


def test_box_weights_partial_cells():
    w = box_weights([0, 0, 50, 50], (100, 100), (2, 2), cells="fraction")
    assert w.tolist() == [[1.0, 0.0], [0.0, 0.0]]
    w = box_weights([25, 0, 75, 100], (100, 100), (2, 2), cells="fraction")  # half of each column
    assert np.allclose(w, [[0.5, 0.5], [0.5, 0.5]])
    assert box_weights([-10, -10, 500, 500], (100, 100), (3, 4), cells="fraction").sum() == 12  # clamped to the image


def test_whole_cells_under_the_box():
    # a 4x4 grid on a 400x400 image: cells are 100 px; the box reaches 1 px into the cells right of and below it
    w = box_weights([150, 100, 301, 201], (400, 400), (4, 4))
    assert w.tolist() == [[0, 0, 0, 0], [0, 1, 1, 1], [0, 1, 1, 1], [0, 0, 0, 0]]
    # an edge exactly on a cell border does not take the next cell
    assert box_weights([100, 100, 200, 200], (400, 400), (4, 4)).sum() == 1
    # a box inside one cell takes that whole cell
    assert box_weights([110, 310, 120, 320], (400, 400), (4, 4)).tolist()[3] == [0, 1, 0, 0]
    grid = np.arange(16, dtype=float).reshape(4, 4) / 120.0  # sums to 1
    c = coverage_of(grid, [150, 100, 301, 201], (400, 400))
    assert c["coverage"] == pytest.approx((5 + 6 + 7 + 9 + 10 + 11) / 120) and c["box_area"] == pytest.approx(6 / 16)
    fraction = coverage_of(grid, [150, 100, 301, 201], (400, 400), cells="fraction")["coverage"]
    assert fraction < c["coverage"]
    with pytest.raises(ValueError, match="covers no grid cell"):
        coverage_of(grid, [500, 500, 600, 600], (400, 400))


def test_layer_counts_from_one_at_the_reference_depth():
    assert resolve_layer(24, 36, 36) == 23  # the reference: layer 24 of Qwen3-VL-4B's 36
    assert resolve_layer(24, 36) == 23
    assert resolve_layer(24, 28, 36) == 18  # the same relative depth: 24/36 of 28 = 18.7 -> layer 19
    assert resolve_layer(24, 2, 36) == 0 and resolve_layer(24, 4, 36) == 2  # tiny models
    assert resolve_layer(-1, 28, 36) == 27 and resolve_layer(-1, 2) == 1 and resolve_layer(1, 28, 36) == 0
    assert resolve_layer(None, 36) == 18
    for layer, of in ((0, 36), (37, 36), (-37, 36), (5, None)):
        with pytest.raises(ValueError, match="out of range"):
            resolve_layer(layer, 4, of)


def test_coverage_config_defaults_are_the_reference():
    cfg = CoverageConfig()
    assert (cfg.layer, cfg.layer_of, cfg.prompt, cfg.max_pixels, cfg.cells, cfg.max_items) == (24, 36, "raw", 2048 * 1024, "whole", "all")
    assert from_dict(CoverageConfig, {"max_items": 12}).max_items == 12
    for bad, match in (({"layer": 0}, "counts from 1"), ({"layer": 40}, "outside"), ({"max_items": "some"}, "matches none")):
        with pytest.raises(ConfigError, match=match):
            from_dict(CoverageConfig, bad)
    cluster = load_config(EvalConfig, str(Path(__file__).parents[1] / "configs/evaluate/cluster.yaml")).coverage
    assert (cluster.layer, cluster.layer_of, cluster.max_items, cluster.max_pixels) == (24, 36, "all", 2048 * 1024)


def test_coverage_of_a_known_grid():
    grid = np.array([[0.1, 0.2], [0.3, 0.4]])
    c = coverage_of(grid, [50, 50, 100, 100], (100, 100))
    assert c["inside"] == pytest.approx(0.4) and c["outside"] == pytest.approx(0.6) and c["coverage"] == pytest.approx(0.4)
    assert summarize([0.2, 0.4], [0.1, 0.1])["lift_over_uniform"] == pytest.approx(3.0)


@pytest.fixture(scope="module", params=["tiny:qwen2_5_vl", "tiny:qwen3_vl"])
def tiny_vlm(request):
    from zwz_ray.models import load_vlm

    return load_vlm(request.param, device="cpu", dtype="float32", attn_implementation="eager")


def test_attention_coverage_on_tiny_model(tiny_vlm):
    model, processor = tiny_vlm
    image = Image.new("RGB", (320, 240), (90, 120, 160))
    image.paste((250, 20, 20), (200, 40, 260, 100))
    amap = attention_map(model, processor, image, "What colour is the square?", layer=-1)
    rows, cols = amap.grid.shape
    assert rows >= 2 and cols >= 2 and amap.layer_index == len(model.model.language_model.layers) - 1
    assert amap.grid.sum() == pytest.approx(1.0, abs=1e-6)
    assert (amap.grid >= 0).all() and 0 < amap.raw_mass <= 1 + 1e-6
    box = [200, 40, 260, 100]
    c = coverage_of(amap.grid, box, image.size)
    assert c["inside"] + c["outside"] == pytest.approx(c["total"])
    assert c["total"] == pytest.approx(1.0, abs=1e-6)
    assert 0.0 <= c["coverage"] <= 1.0
    whole = coverage_of(amap.grid, [0, 0, 320, 240], image.size)
    assert whole["coverage"] == pytest.approx(1.0)


def test_layer_out_of_range(tiny_vlm):
    model, processor = tiny_vlm
    with pytest.raises(ValueError, match="out of range"):
        attention_map(model, processor, Image.new("RGB", (64, 64)), "q", layer=99)


def test_reference_layer_and_raw_question_on_tiny_model(tiny_vlm):
    model, processor = tiny_vlm
    n_layers = len(decoder_layers(model))
    amap = attention_map(model, processor, Image.new("RGB", (128, 96), (10, 200, 30)), "What colour is the car?")
    assert amap.n_layers == n_layers and amap.layer_index == max(1, round(24 * n_layers / 36)) - 1
    image = Image.new("RGB", (64, 64))
    raw = processor.tokenizer.decode(_encode(processor, image, "What colour is the car?")["input_ids"][0])
    student = processor.tokenizer.decode(_encode(processor, image, "What colour is the car?", "student")["input_ids"][0])
    assert "What colour is the car?" in raw and len(student) > len(raw)
    assert raw.split("What colour is the car?")[1].startswith("<|im_end|>")  # nothing after the question
