"""Sharded loading and one-copy export: 2 FSDP2 workers over gloo in one Ray Train run.

Every case loads the student twice on the same workers, the former way (``trainer.load: full``) and
the sharded way, and compares logits on a fixed batch and the first steps' losses; the sharded load
records what it held (meta parameters until ``to_empty``, shard bytes about full/world). The LoRA
cases then export, while counting model constructions, and compare the exported folder's logits
(loaded with transformers / peft) against the trained, sharded model's.
"""

from __future__ import annotations

import io
import math
import os
import sys

import pytest
import torch
from PIL import Image, ImageDraw

MCQ = "What colour is the shape inside the red box? A. red B. blue C. green D. grey"
STEPS = 2
CASES = [  # (name, student, lora, export)
    ("qwen2_5_vl", "tiny:qwen2_5_vl", False, False),
    ("qwen2_5_vl_lora", "tiny:qwen2_5_vl", True, True),
    ("qwen3_vl", "tiny:qwen3_vl", False, True),
    ("qwen3_vl_lora", "tiny:qwen3_vl", True, False),
]


def rows(n: int) -> list[dict]:
    out = []
    for i in range(n):
        img = Image.new("RGB", (96, 80), (180 + 7 * i % 70, 200, 230))
        ImageDraw.Draw(img).rectangle([8 + 3 * i % 40, 8, 40 + 3 * i % 40, 44], outline=(255, 0, 0), width=3)
        buf = io.BytesIO()
        img.save(buf, "PNG")
        out.append({"id": f"r{i:03d}", "image": buf.getvalue(), "problem": MCQ, "answer": "ABCD"[i % 4]})
    return out


def case_config(out_dir: str, name: str, student: str, lora: bool, load: str, trainer: dict | None = None):
    from zwz_ray.config import from_dict
    from zwz_ray.train.config import DistillConfig

    return from_dict(DistillConfig, {
        "student": student,
        "data": {"path": None, "min_pixels": 3136, "max_pixels": 16384, "max_seq_len": 256, "shuffle_buffer": 0},
        "trainer": {"micro_batch_size": 2, "epochs": 1, "max_steps": STEPS, "precision": "fp32", "load": load,
                    "num_workers": 2, **(trainer or {})},
        "optim": {"lr": 1e-2},
        "lora": {"enabled": lora, "dropout": 0.0, "export": "both", "alpha": 64.0},
        "checkpoint": {"storage_path": os.path.join(out_dir, "runs"), "every_steps": 1000},
        "output": {"dir": os.path.join(out_dir, name), "tensorboard": False},
    })


def model_inputs(loop, row: dict, device) -> dict:
    from zwz_ray.train.objectives import MODEL_INPUTS

    batch = loop.objective.collate([loop.objective.encode(row)])
    return {k: batch[k].to(device) for k in MODEL_INPUTS if k in batch}


def logits_of(model, inputs: dict) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).logits.float().cpu()


def count_model_builds(fn):
    """Run ``fn`` while counting transformers models constructed (the export must build none)."""
    from transformers import PreTrainedModel

    built = []
    original = PreTrainedModel.__init__

    def counting(self, *args, **kwargs):
        built.append(type(self).__name__)
        original(self, *args, **kwargs)

    PreTrainedModel.__init__ = counting
    try:
        return fn(), built
    finally:
        PreTrainedModel.__init__ = original


def exported_logits(paths: dict, student: str, inputs: dict) -> dict[str, torch.Tensor]:
    import peft
    from transformers import AutoModelForImageTextToText

    from zwz_ray.models import resolve_model

    out = {"merged": logits_of(AutoModelForImageTextToText.from_pretrained(paths["model"]).eval(), inputs)}
    if "adapter" in paths:
        base = AutoModelForImageTextToText.from_pretrained(resolve_model(student))
        out["adapter"] = logits_of(peft.PeftModel.from_pretrained(base, paths["adapter"]).eval(), inputs)
    return out


def worker(config: dict) -> None:
    """Each Ray Train worker: every case, both loads; results into ``<out>/rank<r>.pt``."""
    import ray.train
    import ray.train.torch

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # this module travels by value; its helper does not
    from train_rows import ListRows

    from zwz_ray.train.loop import DistillLoop, WorkerContext

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    data = config["rows"]
    results = {}
    for name, student, lora, export in config["cases"]:
        for load in config["loads"]:
            cfg = case_config(config["out"], f"{name}_{load}", student, lora, load, config.get("trainer"))
            loop = DistillLoop(cfg, WorkerContext(rank, world, device), ListRows(data[rank::world], False, 0))
            loop.setup()
            inputs = model_inputs(loop, data[0], device)
            record = {"stats": loop.load_stats.to_dict(), "logits": logits_of(loop.model, inputs),
                      "param_dtypes": sorted({str(p.dtype) for p in loop.model.parameters()}),
                      "param_devices": sorted({p.to_local().device.type for p in loop.model.parameters()})}
            loop.train()
            record["losses"] = [r["loss"] for r in loop.metrics.history]
            if export and load == "sharded":
                record["trained_logits"] = logits_of(loop.model, inputs)
                paths, record["models_built"] = count_model_builds(loop.export)
                if rank == 0:
                    cpu_inputs = {k: v.cpu() for k, v in inputs.items()}
                    record["exported_logits"] = exported_logits(paths, student, cpu_inputs)
            loop.close()
            results[(name, load)] = record
    torch.save(results, os.path.join(config["out"], f"rank{rank}.pt"))


def run_workers(tmp_path, cases, loads, use_gpu: bool = False, trainer: dict | None = None, workers: int = 2):
    from ray import cloudpickle
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import the tests folder
    config = {"cases": cases, "loads": loads, "rows": rows(8), "out": str(tmp_path), "trainer": trainer}
    TorchTrainer(worker, train_loop_config=config,
                 scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu, resources_per_worker={"CPU": 1}),
                 run_config=RunConfig(storage_path=str(tmp_path / "ray"), name="sharded")).fit()
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(workers)]


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory, ray_session):
    return run_workers(tmp_path_factory.mktemp("sharded"), CASES, ["full", "sharded"])


@pytest.mark.parametrize("name", [c[0] for c in CASES])
def test_sharded_loading_equals_full_loading(two_workers, name):
    for rank, results in enumerate(two_workers):
        full, sharded = results[(name, "full")], results[(name, "sharded")]
        torch.testing.assert_close(sharded["logits"], full["logits"], atol=1e-6, rtol=0)
        assert len(sharded["losses"]) == STEPS and all(math.isfinite(x) for x in sharded["losses"])
        assert max(abs(a - b) for a, b in zip(full["losses"], sharded["losses"])) < 1e-6, rank
        assert sharded["param_dtypes"] == ["torch.float32"]  # fp32 master shards


@pytest.mark.parametrize("name", [c[0] for c in CASES])
def test_each_worker_holds_its_shards_only(two_workers, name):
    for rank, results in enumerate(two_workers):
        stats = results[(name, "sharded")]["stats"]
        assert stats["mode"] == "sharded" and stats["world_size"] == 2 and stats["rank"] == rank
        assert stats["meta_until_materialised"]  # no rank had parameter storage before to_empty
        # FSDP2 pads dim 0 to a multiple of the world size: a few rows more than half at most.
        assert 0.5 <= stats["local_bytes"] / stats["full_bytes"] < 0.52, stats
        assert stats["read_dtype"] == ("float32" if rank == 0 else "")
        assert results[(name, "full")]["stats"]["meta_until_materialised"] is False


@pytest.mark.parametrize("name", [c[0] for c in CASES if c[3]])
def test_export_writes_one_copy_that_loads_with_the_trained_weights(two_workers, name):
    for results in two_workers:
        assert results[(name, "sharded")]["models_built"] == []  # no second model, on any rank
    record = two_workers[0][(name, "sharded")]
    assert not torch.allclose(record["trained_logits"], record["logits"], atol=1e-3)  # training moved the weights
    for kind, logits in record["exported_logits"].items():
        torch.testing.assert_close(logits, record["trained_logits"], atol=1e-4, rtol=1e-4, msg=kind)


@pytest.mark.gpu
def test_gpu_bf16_compute_fp32_masters_offload(tmp_path, ray_session):
    """bf16 compute, fp32 master shards on the CPU (offload), activation checkpointing; 2 workers with 2 GPUs."""
    workers = 2 if torch.cuda.device_count() >= 2 else 1
    trainer = {"use_gpu": True, "precision": "bf16", "fsdp_offload": True, "activation_checkpointing": True,
               "num_workers": workers, "load_dtype": "bfloat16"}
    results = run_workers(tmp_path, [("gpu", "tiny:qwen2_5_vl", False, True)], ["full", "sharded"], use_gpu=True,
                          trainer=trainer, workers=workers)
    for res in results:
        sharded, full = res[("gpu", "sharded")], res[("gpu", "full")]
        assert sharded["param_dtypes"] == ["torch.float32"] and sharded["param_devices"] == ["cpu"]
        assert all(math.isfinite(x) for x in sharded["losses"])
        # A bf16 read of fp32 weights rounds them: close to the fp32 read, not equal.
        torch.testing.assert_close(sharded["logits"], full["logits"], atol=5e-2, rtol=5e-2)
