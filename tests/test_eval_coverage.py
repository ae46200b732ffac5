"""Attention coverage on a tiny Qwen-VL model with a known box."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from zwz_ray.eval.coverage import attention_map, box_weights, coverage_of, summarize


def test_box_weights_partial_cells():
    w = box_weights([0, 0, 50, 50], (100, 100), (2, 2))
    assert w.tolist() == [[1.0, 0.0], [0.0, 0.0]]
    w = box_weights([25, 0, 75, 100], (100, 100), (2, 2))  # half of each column
    assert np.allclose(w, [[0.5, 0.5], [0.5, 0.5]])
    assert box_weights([-10, -10, 500, 500], (100, 100), (3, 4)).sum() == 12  # clamped to the image


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
    assert rows >= 2 and cols >= 2 and amap.layer == len(model.model.language_model.layers) - 1
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
