"""Recorded losses: the tiny student on fixed rows, fixed seed, two FSDP2 workers over gloo, real Ray Train.

"The loss went down" misses silent numerical changes (a label shifted by one token, a different loss
normalisation, a prompt edit); comparing the first steps against recorded values to 1e-4 does not.
A deliberate change (a new prompt, a new tiny-model builder) re-records them:

    python tests/test_train_recorded.py --record      # rewrites tests/golden/losses/sft_tiny.json
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

GOLDEN = Path(__file__).resolve().parent / "golden" / "losses" / "sft_tiny.json"
TOL = 1e-4
STEPS = 4
COLOURS = {"A": (220, 30, 30), "B": (30, 60, 220), "C": (30, 170, 60), "D": (120, 120, 120)}
PROBLEM = "What colour is the shape inside the red box? A. red B. blue C. green D. grey"


def rows(n: int = 8) -> list[dict]:
    """Fixed rows: a coloured square inside a red box on a pale background; the answer is its colour's letter."""
    out = []
    for i in range(n):
        letter = "ABCD"[i % 4]
        img = Image.new("RGB", (112, 84), (235, 235 - 5 * i, 220))
        draw = ImageDraw.Draw(img)
        x = 10 + 9 * i
        draw.rectangle([x, 20, x + 24, 44], fill=COLOURS[letter])
        draw.rectangle([x - 4, 16, x + 28, 48], outline=(255, 0, 0), width=2)
        buf = io.BytesIO()
        img.save(buf, "PNG")
        out.append({"id": f"g{i}", "image": buf.getvalue(), "problem": PROBLEM, "answer": letter})
    return out


def config(tmp: Path):
    from zwz_ray.config import from_dict
    from zwz_ray.train import DistillConfig

    return from_dict(DistillConfig, {
        "student": "tiny:qwen2_5_vl",
        "data": {"path": None, "min_pixels": 3136, "max_pixels": 12544, "max_seq_len": 256, "shuffle_buffer": 0},
        "trainer": {"num_workers": 2, "micro_batch_size": 1, "grad_accum_steps": 1, "epochs": 1, "max_steps": STEPS,
                    "precision": "fp32", "seed": 0, "controller_poll_s": 0.1},
        "optim": {"lr": 1e-3, "schedule": "constant"},
        "checkpoint": {"storage_path": str(tmp / "runs"), "run_name": "recorded", "every_steps": 1000},
        "output": {"dir": str(tmp / "out"), "export": False, "tensorboard": False},
    })


def recorded_run(tmp: Path) -> list[dict]:
    import ray

    from zwz_ray.models import resolve_model
    from zwz_ray.train import run_distill

    # Build the tiny student here, once: a builder inside a Train worker runs under torch.distributed, where
    # transformers' save_pretrained writes weights on rank 0 only.
    resolve_model("tiny:qwen2_5_vl")
    result = run_distill(config(tmp), dataset=ray.data.from_items(rows()))
    return [{"step": r["step"], "loss": r["loss"], "grad_norm": r["grad_norm"]} for r in result.history]


def test_first_losses_match_the_recording(tmp_path, ray_session):
    golden = json.loads(GOLDEN.read_text())
    history = recorded_run(tmp_path)
    assert [r["step"] for r in history] == [r["step"] for r in golden["steps"]] == list(range(1, STEPS + 1))
    for got, want in zip(history, golden["steps"]):
        assert got["loss"] == pytest.approx(want["loss"], abs=TOL), f"step {got['step']}: loss {got['loss']} vs recorded {want['loss']}"
        assert got["grad_norm"] == pytest.approx(want["grad_norm"], abs=1e-3)


def record() -> None:
    import os
    import tempfile

    os.environ.setdefault("ZWZ_CACHE_DIR", os.path.join(tempfile.gettempdir(), "zwz_ray_test_cache"))
    from zwz_ray.config import RayConfig
    from zwz_ray.runtime import init_ray

    init_ray(RayConfig(num_cpus=4, progress_bars=False, log_to_driver=False))
    with tempfile.TemporaryDirectory() as tmp:
        history = recorded_run(Path(tmp))
    GOLDEN.parent.mkdir(parents=True, exist_ok=True)
    GOLDEN.write_text(json.dumps({"command": "python tests/test_train_recorded.py --record", "steps": history}, indent=2) + "\n")
    print(f"recorded {len(history)} steps into {GOLDEN}")


if __name__ == "__main__":
    if sys.argv[1:] != ["--record"]:
        sys.exit(__doc__)
    record()
