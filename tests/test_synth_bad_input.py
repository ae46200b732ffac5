"""Bad input never crashes synthesis: each case becomes a recorded drop reason or a clear start-up error."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from synth_rows import new_row

from pipelines.synthesize import main
from zwz_ray.config import load_config
from zwz_ray.images import ImageInputError, encode_image
from zwz_ray.synth.columns import to_table
from zwz_ray.synth.config import CropConfig, InputConfig, OverlayConfig, SynthConfig
from zwz_ray.synth.run import run_synthesis
from zwz_ray.synth.stages import ImagePool, MicroCrop, Overlay

SIZE = (1300, 1250)


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def _noise(size=SIZE, mode="RGB", cell=1) -> Image.Image:
    """Random pixels (``cell`` > 1: random blocks, which compress well)."""
    rng = np.random.default_rng(0)
    small = rng.integers(0, 255, (size[1] // cell + 1, size[0] // cell + 1, 3), dtype=np.uint8)
    img = Image.fromarray(small, "RGB").resize((small.shape[1] * cell, small.shape[0] * cell), Image.Resampling.NEAREST)
    return img.crop((0, 0, *size)).convert(mode)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    good = _png(_noise(cell=50))
    cmyk = io.BytesIO()
    _noise(mode="CMYK", cell=50).save(cmyk, "JPEG")
    grey16 = Image.fromarray((np.arange(SIZE[0] * SIZE[1]) % 65536).astype(np.uint16).reshape(SIZE[1], SIZE[0]))
    assert grey16.mode.startswith("I;16")
    cases = {
        "empty.png": b"",
        "truncated.png": good[: len(good) // 2],
        "text.jpg": b"this is not an image at all\n" * 10,
        "bomb.png": _png(Image.new("L", (2600, 2600))),  # 6.8 M pixels > input.max_pixels below
        "tiny.png": _png(Image.new("RGB", (100, 100))),
        "huge_file.png": _png(_noise((1500, 1400))),  # > input.max_bytes below
        "cmyk.jpg": cmyk.getvalue(),
        "rgba.png": _png(_noise(mode="RGBA", cell=50)),
        "palette.png": _png(_noise(cell=50).convert("P")),
        "grey16.png": _png(grey16),
        "good.png": good,
    }
    for name, data in cases.items():
        (d / name).write_bytes(data)
    return d


EXPECTED = {"empty.png": "empty_file", "truncated.png": "truncated", "text.jpg": "not_an_image",
            "bomb.png": "decompression_bomb", "tiny.png": "too_small", "huge_file.png": "too_large",
            "missing.png": "not_found"}
FINE = ["cmyk.jpg", "rgba.png", "palette.png", "grey16.png", "good.png"]


def test_every_bad_image_is_a_recorded_drop(files):
    cfg = InputConfig(max_pixels=5_000_000, max_bytes=3_000_000)
    assert len((files / "huge_file.png").read_bytes()) > cfg.max_bytes
    names = list(EXPECTED) + FINE
    out = ImagePool(cfg)(to_table([new_row(str(files / n)) for n in names])).to_pylist()
    reasons = {n: r["drop_reason"] for n, r in zip(names, out)}
    assert {n: reasons[n] for n in EXPECTED} == EXPECTED
    assert all(r["drop_stage"] == "image_pool" and r["drop_detail"] is not None for r in out[: len(EXPECTED)])
    assert {n: reasons[n] for n in FINE} == dict.fromkeys(FINE)
    assert all((r["image_width"], r["image_height"]) == SIZE for r in out[len(EXPECTED):])


def test_unusual_modes_flow_through_crop_and_overlay(files):
    rows = []
    for i, name in enumerate(FINE):
        row = {**new_row(str(files / name)), "image_width": SIZE[0], "image_height": SIZE[1], "object_index": i,
               "grounding_box": [100.0, 100.0, 300.0, 260.0], "question": "What is it?", "question_index": 0}
        rows.append(row)
    cropped = MicroCrop(CropConfig(), InputConfig())(to_table(rows))
    out = Overlay(OverlayConfig(), InputConfig())(cropped).to_pylist()
    for row in out:
        assert row["drop_stage"] is None
        crop, overlay = Image.open(io.BytesIO(row["crop"])), Image.open(io.BytesIO(row["image"]))
        assert (crop.mode, crop.size) == ("RGB", (400, 320))
        assert (overlay.mode, overlay.size) == ("RGB", SIZE)


def synth_config(tmp_path, *paths):
    return load_config(SynthConfig, None, [f"input.paths={list(map(str, paths))}", f"output.dir={tmp_path / 'out'}"])


def test_missing_paths_fail_at_start_up(tmp_path):
    with pytest.raises(ImageInputError, match="nowhere"):
        run_synthesis(synth_config(tmp_path, tmp_path / "nowhere"))
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(ImageInputError, match="no images"):
        run_synthesis(synth_config(tmp_path, tmp_path / "empty_dir"))
    assert not (tmp_path / "out").exists()


def test_cli_reports_input_errors(tmp_path, capsys):
    sets = [f"input.paths=[{tmp_path / 'nowhere'}]", "input.generate_demo=false", f"output.dir={tmp_path / 'out'}"]
    assert main([a for s in sets for a in ("--set", s)]) == 2
    assert "image path not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--set", "consensus.threshold=2"])


def test_an_image_that_vanishes_mid_run_is_a_drop(tmp_path):
    path = tmp_path / "gone.png"
    path.write_bytes(encode_image(_noise(), "PNG"))
    row = {**new_row(str(path)), "image_width": SIZE[0], "image_height": SIZE[1], "object_index": 0,
           "grounding_box": [10.0, 10.0, 50.0, 50.0]}
    path.unlink()
    (out,) = MicroCrop(CropConfig(), InputConfig())(to_table([row])).to_pylist()
    assert (out["drop_stage"], out["drop_reason"]) == ("crop", "source_unreadable")
