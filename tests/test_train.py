"""Distillation: SFT encoding, the loop in-process, and Ray Train runs (FSDP2 x2, crash + resume, export)."""

from __future__ import annotations

import io
import json
import math
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw
from train_rows import ListRows

from zwz_ray.config import from_dict
from zwz_ray.train.config import DistillConfig
from zwz_ray.train.data import StepBatches
from zwz_ray.train.examples import IGNORE_INDEX, Dropped
from zwz_ray.train.optim import lr_factor

ROOT = Path(__file__).resolve().parents[1]
LAPTOP = str(ROOT / "configs" / "distill" / "laptop.yaml")
MCQ = "What colour is the shape inside the red box? A. red B. blue C. green D. grey"
LOSS_TOL = 1e-4  # float32 on CPU: FSDP2 over 2 workers reduces gradients in another order than 1 worker


def png(i: int, size=(96, 80)) -> bytes:
    img = Image.new("RGB", size, (180 + 7 * i % 70, 200, 230))
    ImageDraw.Draw(img).rectangle([8 + 3 * i % 40, 8, 40 + 3 * i % 40, 44], outline=(255, 0, 0), width=3)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def good_rows(n: int) -> list[dict]:
    return [{"id": f"r{i:03d}", "image": png(i), "problem": MCQ, "answer": "ABCD"[i % 4]} for i in range(n)]


def bad_rows() -> list[dict]:
    return [{"id": "x_missing", "image": None, "problem": MCQ, "answer": "A"},
            {"id": "x_corrupt", "image": b"\x89PNG\r\n\x1a\n-broken-", "problem": MCQ, "answer": "A"},
            {"id": "x_empty", "image": png(1), "problem": MCQ, "answer": "  "},
            {"id": "x_long", "image": png(2), "problem": "why " * 400 + MCQ, "answer": "B"}]


def config(tmp_path, name="run", student="tiny:qwen2_5_vl", **sections) -> DistillConfig:
    base = {"student": student,
            "data": {"path": str(tmp_path / "rows"), "min_pixels": 3136, "max_pixels": 16384, "max_seq_len": 256,
                     "shuffle_buffer": 8},
            "trainer": {"micro_batch_size": 2, "epochs": 2, "precision": "fp32", "log_every": 5, "controller_poll_s": 0.1},
            "optim": {"lr": 1e-3},
            "checkpoint": {"storage_path": str(tmp_path / "runs"), "run_name": name, "every_steps": 3},
            "output": {"dir": str(tmp_path / name), "tensorboard": False}}
    for key, values in sections.items():
        base[key] = {**base.get(key, {}), **values}
    return from_dict(DistillConfig, base)


# --------------------------------------------------------------------------- encoding (no model training)


@pytest.fixture(scope="module")
def processor():
    from zwz_ray.models import load_vlm

    return load_vlm("tiny:qwen2_5_vl", min_pixels=3136, max_pixels=16384)[1]


def test_labels_cover_the_answer_only(processor):
    from zwz_ray.train.examples import SFTEncoder

    ex = SFTEncoder(processor, 256, 1 << 20)({"id": "a", "image": png(0), "problem": MCQ, "answer": "B"})
    answer = ex.labels[ex.labels != IGNORE_INDEX]
    assert processor.tokenizer.decode(answer) == "<answer>B</answer><|im_end|>"
    image_id = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert (ex.input_ids == image_id).sum() > 0 and (ex.labels[ex.input_ids == image_id] == IGNORE_INDEX).all()
    assert ex.labels[-len(answer):].tolist() == ex.input_ids[-len(answer):].tolist()


def test_bad_rows_are_dropped_with_a_reason(processor):
    from zwz_ray.train.examples import SFTEncoder

    encode = SFTEncoder(processor, 256, 1 << 20)
    reasons = []
    for row in bad_rows():
        with pytest.raises(Dropped) as err:
            encode(row)
        reasons.append(err.value.reason)
    assert reasons == ["missing_image", "bad_image", "empty_answer", "too_long"]
    with pytest.raises(ValueError, match="lack the column"):
        encode({"id": "a", "question": MCQ, "image": png(0), "answer": "A"})


def test_resumed_batches_continue_the_same_order(processor):
    from zwz_ray.train.objectives import SFTObjective

    obj = SFTObjective(processor, 256)
    rows = good_rows(7) + bad_rows()

    def stream(skip_after: int | None):
        sb = StepBatches(ListRows(rows, True, 3), obj.encode, obj.collate, 2, 1)
        sb.start_epoch(1)
        ids = [sb.next_step()[0]["ids"] for _ in range(2)]
        if skip_after is not None:  # a new worker resumes from the data position
            pos, drops = sb.rows_consumed, dict(sb.drops)
            sb = StepBatches(ListRows(rows, True, 3), obj.encode, obj.collate, 2, 1)
            sb.start_epoch(1, skip_rows=pos)
            sb.drops.update(drops)
        while (step := sb.next_step()) is not None:
            ids.append(step[0]["ids"])
        return ids

    assert stream(None) == stream(2) and len(stream(None)) == 3


def test_lr_schedules():
    cfg = from_dict(DistillConfig, {"optim": {"schedule": "cosine", "warmup_steps": 2, "min_lr_ratio": 0.1}}).optim
    assert [lr_factor(s, cfg, 12) for s in (0, 1)] == [0.5, 1.0]
    assert lr_factor(2, cfg, 12) == pytest.approx(1.0) and lr_factor(12, cfg, 12) == pytest.approx(0.1)
    assert lr_factor(7, cfg, 12) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    constant = from_dict(DistillConfig, {}).optim
    assert constant.lr == 1e-5 and constant.weight_decay == 0.01 and constant.grad_clip == 1.0
    assert lr_factor(100, constant, None) == 1.0


# --------------------------------------------------------------------------- the loop in-process (gloo, 1 worker)




def run_in_process(cfg: DistillConfig, rows: list[dict]):
    from zwz_ray.train.loop import DistillLoop, WorkerContext

    loop = DistillLoop(cfg, WorkerContext(0, 1, torch.device("cpu")), ListRows(rows, True, 0))
    loop.setup()
    before = {n: p.detach().full_tensor().clone() for n, p in loop.model.named_parameters()}
    loop.train()
    after = {n: p.detach().full_tensor() for n, p in loop.model.named_parameters()}
    trainable = {n for n, p in loop.model.named_parameters() if p.requires_grad}
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    return loop, trainable, changed


def test_full_finetune_overfits_and_updates_every_parameter(tmp_path, process_group):
    cfg = config(tmp_path, trainer={"epochs": 8, "grad_accum_steps": 2}, optim={"lr": 5e-3})
    loop, trainable, changed = run_in_process(cfg, good_rows(4))
    losses = [r["loss"] for r in loop.metrics.history]
    assert len(losses) == 8 and losses[-1] < 0.5 * losses[0]
    assert trainable == {n for n, _ in loop.model.named_parameters()} and changed == trainable
    assert all(math.isfinite(r["grad_norm"]) and r["samples"] == 4 for r in loop.metrics.history)


def test_lora_updates_adapters_only_and_exports_both(tmp_path, process_group):
    cfg = config(tmp_path, trainer={"epochs": 3}, lora={"enabled": True, "export": "both", "dropout": 0.0})
    loop, trainable, changed = run_in_process(cfg, good_rows(4))
    assert trainable and all("lora_" in n for n in trainable)
    assert changed == trainable  # every adapter weight moved, no base weight did
    assert not any("visual" in n for n in trainable)  # adapters stay in the language model by default
    paths = loop.export()
    import peft
    from transformers import AutoModelForImageTextToText

    from zwz_ray.models import resolve_model

    merged = AutoModelForImageTextToText.from_pretrained(paths["model"]).eval()
    base = AutoModelForImageTextToText.from_pretrained(resolve_model("tiny:qwen2_5_vl"))
    adapted = peft.PeftModel.from_pretrained(base, paths["adapter"]).eval()
    batch = loop.objective.collate([loop.objective.encode(good_rows(1)[0])])
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "pixel_values", "image_grid_thw", "mm_token_type_ids")}
    with torch.no_grad():
        torch.testing.assert_close(merged(**inputs).logits, adapted(**inputs).logits, atol=1e-4, rtol=1e-4)


def test_qwen3_vl_with_frozen_vision_and_activation_checkpointing(tmp_path, process_group):
    from transformers import AutoModelForImageTextToText

    cfg = config(tmp_path, student="tiny:qwen3_vl", data={"max_pixels": 128 * 128},
                 trainer={"epochs": 1, "freeze_vision": True, "activation_checkpointing": True})
    loop, trainable, changed = run_in_process(cfg, good_rows(4))
    assert len(loop.metrics.history) == 2 and all(math.isfinite(r["loss"]) for r in loop.metrics.history)
    assert not any(".visual." in n for n in trainable) and changed == trainable
    exported = AutoModelForImageTextToText.from_pretrained(loop.export()["model"])
    assert type(exported).__name__ == "Qwen3VLForConditionalGeneration"


def test_too_few_rows_fail_before_training(tmp_path):
    """Counted from the parquet footers before Ray starts (tests/test_startup.py checks no Ray starts)."""
    from zwz_ray.config import ConfigError
    from zwz_ray.train import run_distill

    write_rows(tmp_path, good_rows(1))
    with pytest.raises(ConfigError, match="data.path: .* holds 1 rows, fewer than one global batch"):
        run_distill(config(tmp_path))


# --------------------------------------------------------------------------- Ray Train (real Ray, tiny model)


def write_rows(tmp_path, rows: list[dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "rows").mkdir(exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "rows" / "part-0.parquet")


def losses(result) -> list[float]:
    return [r["loss"] for r in result.history]


def train_worker_pids() -> list[int]:
    """Pids of the live Ray Train workers of this test session's Ray instance (its GCS actor table; other
    Ray instances on the machine are never looked at)."""
    from ray._private.state import actors

    return [a["Pid"] for a in actors().values() if a["ActorClassName"] == "RayTrainWorker" and a["State"] == "ALIVE" and a["Pid"]]


class KillAfterFirstCheckpoint(threading.Thread):
    """SIGKILLs one Train worker process as soon as the run's first checkpoint is committed: its directory
    exists and Ray Train's checkpoint manager has recorded it (a directory still being uploaded would not be
    restored from). A dead process is the real fault; nothing in the product knows it is being tested."""

    def __init__(self, run_dir: Path, timeout_s: float = 600):
        super().__init__(daemon=True)
        self.run_dir, self.timeout_s = run_dir, timeout_s
        self.killed: int | None = None
        self.checkpoint: str | None = None

    def committed(self) -> str | None:
        snapshot = self.run_dir / "checkpoint_manager_snapshot.json"
        dirs = sorted(p.name for p in self.run_dir.glob("checkpoint_0*") if p.is_dir()) if self.run_dir.is_dir() else []
        text = snapshot.read_text() if dirs and snapshot.exists() else ""
        return next((d for d in dirs if d in text), None)

    def run(self) -> None:
        deadline = time.time() + self.timeout_s
        while time.time() < deadline and self.checkpoint is None:
            self.checkpoint = self.committed()
            time.sleep(0.02)
        pids = train_worker_pids() if self.checkpoint else []
        if pids:
            self.killed = pids[-1]
            os.kill(self.killed, signal.SIGKILL)

    def __enter__(self) -> KillAfterFirstCheckpoint:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.join(timeout=5)
        assert self.killed is not None, f"no worker was killed (first checkpoint: {self.checkpoint})"


def test_two_fsdp_workers_match_one_worker(tmp_path, process_group, ray_session):
    """Same global batch (8 rows = the whole data set, so row order cannot matter): one worker with micro
    batch 4 x accum 2 (the same loop in this process) vs two FSDP2 workers on Ray with 2 x accum 2. One of
    the two workers is killed once the checkpoint of step 2 is committed; the run resumes from it."""
    import ray

    from zwz_ray.train import run_distill

    rows = good_rows(8)
    common = {"epochs": 4, "grad_accum_steps": 2}
    one, _, _ = run_in_process(config(tmp_path, "one", trainer={**common, "micro_batch_size": 4}), rows)
    with KillAfterFirstCheckpoint(tmp_path / "runs" / "two"):
        two = run_distill(config(tmp_path, "two", trainer={**common, "num_workers": 2},
                                 checkpoint={"every_steps": 2, "max_failures": 1}, output={"export": False}),
                          dataset=ray.data.from_items(rows))
    ref = one.metrics.history
    assert len(ref) == len(two.history) == 4 and ref[-1]["loss"] < ref[0]["loss"]
    assert max(abs(a["loss"] - b["loss"]) for a, b in zip(ref, two.history)) < LOSS_TOL
    assert max(abs(a["grad_norm"] - b["grad_norm"]) for a, b in zip(ref, two.history)) < 1e-3
    assert all(r["samples"] == 8 for r in two.history)
    summary = json.loads((tmp_path / "two" / "distill_summary.json").read_text())
    assert summary["resumed_from_step"] == 2 and summary["num_workers"] == 2


@pytest.fixture(scope="module")
def reference(tmp_path_factory, ray_session):
    """An uninterrupted 1-worker run over 10 good and 4 bad rows, through the CLI entry point."""
    from pipelines.distill import main

    tmp_path = tmp_path_factory.mktemp("ref")
    write_rows(tmp_path, good_rows(10) + bad_rows())
    assert main(["--config", LAPTOP, *overrides(tmp_path, "reference", "output.tensorboard=true")]) == 0
    out = tmp_path / "reference"
    return tmp_path, json.loads((out / "distill_summary.json").read_text()), out


def overrides(tmp_path, name: str, *extra: str) -> list[str]:
    cfg = config(tmp_path, name)
    sets = [f"data.path={cfg.data.path}", "data.min_pixels=3136", "data.max_pixels=16384", "data.max_seq_len=256",
            "data.shuffle_buffer=8", "trainer.num_workers=1", "trainer.micro_batch_size=2", "trainer.epochs=2",
            "trainer.max_steps=null", "optim.lr=0.001", "optim.schedule=cosine", "optim.warmup_steps=2",
            f"checkpoint.storage_path={cfg.checkpoint.storage_path}", f"checkpoint.run_name={name}",
            "checkpoint.every_steps=3", "checkpoint.max_failures=0", f"output.dir={cfg.output.dir}",
            "output.tensorboard=false", "trainer.controller_poll_s=0.1"]
    return [x for s in [*sets, *extra] for x in ("--set", s)]


def exported_state(path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path / "model" / "model.safetensors"))


def assert_same_run(summary: dict, out, reference) -> None:
    _, ref_summary, ref_out = reference
    ref_hist = [json.loads(line) for line in (ref_out / "metrics.jsonl").read_text().splitlines()]
    hist = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in hist] == [r["step"] for r in ref_hist]
    assert max(abs(a["loss"] - b["loss"]) for a, b in zip(hist, ref_hist)) < 1e-6
    assert max(abs(a["lr"] - b["lr"]) for a, b in zip(hist, ref_hist)) == 0
    ref_state, state = exported_state(ref_out), exported_state(out)
    assert state.keys() == ref_state.keys()
    assert all(torch.allclose(state[k], ref_state[k], atol=1e-6) for k in state)
    assert summary["dropped"] == ref_summary["dropped"]


def test_reference_run_counts_bad_rows_and_exports_a_loadable_model(reference):
    from transformers import AutoModelForImageTextToText

    from zwz_ray.models import load_processor
    from zwz_ray.train.examples import chat_messages

    tmp_path, summary, out = reference
    assert summary["steps"] == 10 and summary["final_loss"] < summary["first_loss"]
    assert summary["dropped"] == {"missing_image": 1, "bad_image": 1, "empty_problem": 0, "empty_answer": 1,
                                  "too_long": 1, "encode_error": 0}
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["dropped"] == 4 and {"loss", "lr", "grad_norm", "tokens_per_s", "samples_per_s"} <= set(last)
    assert (out / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    model = AutoModelForImageTextToText.from_pretrained(str(out / "model")).eval()
    proc = load_processor(str(out / "model"))
    text = proc.apply_chat_template(chat_messages(MCQ), tokenize=False, add_generation_prompt=True)
    inputs = proc(text=[text], images=[Image.open(io.BytesIO(png(3)))], return_tensors="pt")
    generated = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert generated.shape[1] == inputs["input_ids"].shape[1] + 4


def test_crash_is_retried_from_the_last_checkpoint(reference):
    from pipelines.distill import main

    tmp_path = reference[0]
    name = "crash"
    with KillAfterFirstCheckpoint(tmp_path / "runs" / name):
        assert main(["--config", LAPTOP, *overrides(tmp_path, name, "checkpoint.max_failures=1")]) == 0
    summary = json.loads((tmp_path / name / "distill_summary.json").read_text())
    assert summary["resumed_from_step"] == 3  # checkpoint at 3, worker killed, retried from 3
    assert_same_run(summary, tmp_path / name, reference)


def test_rerun_with_the_same_name_resumes_a_failed_job(reference):
    from pipelines.distill import main

    tmp_path = reference[0]
    name = "rerun"
    with KillAfterFirstCheckpoint(tmp_path / "runs" / name), pytest.raises(Exception, match="(?i)worker|actor|died"):
        main(["--config", LAPTOP, *overrides(tmp_path, name)])  # max_failures 0: the job fails
    assert (tmp_path / "runs" / name / "checkpoint_000003").is_dir()
    assert not (tmp_path / name / "distill_summary.json").exists()
    assert main(["--config", LAPTOP, *overrides(tmp_path, name)]) == 0
    summary = json.loads((tmp_path / name / "distill_summary.json").read_text())
    assert summary["resumed_from_step"] == 3
    assert_same_run(summary, tmp_path / name, reference)


@pytest.mark.gpu
def test_gpu_bf16_offload_and_activation_checkpointing(tmp_path, ray_session):
    """The cluster recipe in small: NCCL, bf16 mixed precision, FSDP2 CPU offload, activation checkpointing."""
    from zwz_ray.train import run_distill

    write_rows(tmp_path, good_rows(8))
    result = run_distill(config(tmp_path, "gpu", trainer={"use_gpu": True, "precision": "bf16", "fsdp_offload": True,
                                                          "activation_checkpointing": True, "epochs": 2}))
    assert result.steps == 8 and all(math.isfinite(loss) for loss in losses(result))
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    assert json.loads((tmp_path / "gpu" / "model" / "config.json").read_text())["dtype"] == "bfloat16"
