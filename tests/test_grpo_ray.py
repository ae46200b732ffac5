"""GRPO on real Ray Train, two FSDP2 workers over gloo: the CLI learns; 2 x 4 prompts == 1 x 8; kill and resume.

Sizes are tiny on purpose (56 x 56 images, 8-token responses, n = 4): Ray Train runs are slow on 2 cores.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import psutil
import pytest
import torch
from test_grpo import rows

from zwz_ray.config import from_dict
from zwz_ray.train.config import DistillConfig

ROOT = Path(__file__).resolve().parents[1]
GRPO_LAPTOP = str(ROOT / "configs" / "distill" / "grpo_laptop.yaml")
DIGITS = f"{Path(__file__).with_name('test_grpo.py')}:digit_share"  # a reward a random tiny model can learn
LEARN_STEPS, MARGIN = 16, 0.2


def write_rows(path: Path, data: list[dict]) -> str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(data), path / "part-0.parquet")
    return str(path)


def history(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def exported(out: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(out / "model" / "model.safetensors"))


# --------------------------------------------------------------------------- the CLI on grpo_laptop.yaml


@pytest.fixture(scope="module")
def learning(tmp_path_factory, ray_session):
    """``python -m pipelines.distill --config configs/distill/grpo_laptop.yaml``, sized down, with the digit reward."""
    from pipelines.distill import main

    tmp = tmp_path_factory.mktemp("grpo_cli")
    sets = [f"data.path={write_rows(tmp / 'rows', rows(8))}", "data.min_pixels=3136", "data.max_pixels=3136",
            f"trainer.max_steps={LEARN_STEPS}", "trainer.epochs=100", "trainer.micro_batch_size=8", "trainer.controller_poll_s=0.1",
            "optim.lr=0.003", "grpo.rollout.max_response_tokens=8", "grpo.logprob_micro_batch=8", f"grpo.reward.function={DIGITS}",
            f"checkpoint.storage_path={tmp / 'runs'}", "checkpoint.every_steps=8", f"output.dir={tmp / 'out'}"]
    assert main(["--config", GRPO_LAPTOP, *[x for s in sets for x in ("--set", s)]]) == 0
    return tmp / "out"


def test_cli_reward_rises_and_every_parameter_changes(learning):
    from zwz_ray.models import load_vlm

    h = history(learning)
    rewards = [r["reward_mean"] for r in h]
    first, last = sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5
    print(f"digit-share reward per RL step: {[round(x, 3) for x in rewards]}")
    assert len(h) == LEARN_STEPS and last > first + MARGIN, rewards
    assert [r["updates"] for r in h] == [2 * r["step"] for r in h]  # 4 prompts per step in updates of 2
    assert all(r["samples"] == 16 and r["response_len_max"] <= 8 for r in h)
    keys = {"reward_std", "accuracy", "zero_variance_groups", "response_len_mean", "truncated_frac", "clipfrac_high",
            "clipfrac_low", "entropy", "pg_loss", "grad_norm", "rollout_s", "logprob_s", "update_s", "tokens_per_s"}
    assert keys <= set(h[-1])
    summary = json.loads((learning / "distill_summary.json").read_text())
    assert summary["objective"] == "grpo" and summary["num_workers"] == 2 and summary["steps"] == LEARN_STEPS
    assert (learning / "reward.png").read_bytes()[:4] == b"\x89PNG"
    assert list((learning / "tensorboard").glob("events.out.tfevents.*"))
    from transformers import AutoModelForImageTextToText

    initial = load_vlm("tiny:qwen2_5_vl")[0].state_dict()
    trained = AutoModelForImageTextToText.from_pretrained(str(learning / "model")).state_dict()
    unchanged = [k for k in trained if torch.equal(trained[k], initial[k])]
    assert trained.keys() == initial.keys() and not unchanged, unchanged


# --------------------------------------------------------------------------- equivalence and exact resume




def config(tmp: Path, name: str, workers: int, **trainer) -> DistillConfig:
    """8 prompts per RL step in ONE update (which prompts share an update must not depend on the split); each
    prompt's responses generated on their own (``hf_batch_prompts: 1``), so draws are bit-identical across splits."""
    return from_dict(DistillConfig, {
        "student": "tiny:qwen2_5_vl", "data": {"path": str(tmp / "rows"), "min_pixels": 3136, "max_pixels": 3136, "shuffle_buffer": 8},
        "trainer": {"objective": "grpo", "num_workers": workers, "max_steps": 4, "epochs": 10, "micro_batch_size": 4,
                    "precision": "fp32", "controller_poll_s": 0.1, **trainer},
        "optim": {"lr": 3e-3},
        "grpo": {"rollout_batch_prompts": 8, "mini_batch_prompts": 8, "logprob_micro_batch": 8,
                 "rollout": {"n": 4, "max_response_tokens": 8, "hf_batch_prompts": 1}, "reward": {"function": DIGITS}},
        "checkpoint": {"storage_path": str(tmp / "runs"), "run_name": name, "every_steps": 2, "max_failures": 1},
        "output": {"dir": str(tmp / name), "tensorboard": False}})


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, ray_session):
    from zwz_ray.train import run_distill

    tmp = tmp_path_factory.mktemp("grpo_pair")
    write_rows(tmp / "rows", rows(8))
    run_distill(config(tmp, "two", 2))
    return tmp


def test_two_workers_by_four_prompts_equal_one_worker_by_eight(uninterrupted, process_group):
    from train_rows import ListRows

    from zwz_ray.train.grpo import GRPORecipe
    from zwz_ray.train.loop import WorkerContext

    one = GRPORecipe(config(uninterrupted, "one", 1), WorkerContext(0, 1, torch.device("cpu")), ListRows(rows(8), True, 0))
    one.setup()
    one.train()
    ref, two = one.metrics.history, history(uninterrupted / "two")
    assert len(ref) == len(two) == 4
    for a, b in zip(ref, two):  # the same responses (seeds from prompt id and sample index), so the same rewards
        assert (a["response_len_mean"], a["samples"]) == (b["response_len_mean"], b["samples"])
        assert a["reward_mean"] == pytest.approx(b["reward_mean"], abs=1e-9)
        assert abs(a["loss"] - b["loss"]) < 1e-5 and abs(a["grad_norm"] - b["grad_norm"]) < 1e-4
        assert abs(a["entropy"] - b["entropy"]) < 1e-4
    assert ref[0]["grad_norm"] > 0


def kill_a_worker_once_registered(run_dir: Path, checkpoint: str, killed: list) -> None:
    """From outside the run: SIGKILL one Ray Train worker process of this test's Ray instance as soon as
    Ray Train has registered ``checkpoint`` (its manager snapshot names it), so the retry resumes there."""
    snapshot = run_dir / "checkpoint_manager_snapshot.json"
    deadline = time.time() + 600
    while time.time() < deadline and not killed:
        if snapshot.exists() and checkpoint in snapshot.read_text(errors="ignore"):
            for proc in psutil.Process(os.getpid()).children(recursive=True):
                try:
                    if "RayTrainWorker" in " ".join(proc.cmdline()):
                        os.kill(proc.pid, signal.SIGKILL)
                        killed.append(proc.pid)
                        return
                except psutil.Error:
                    continue
        time.sleep(0.05)


def test_killed_worker_resumes_exactly(uninterrupted):
    from zwz_ray.train import run_distill

    killed: list[int] = []
    watcher = threading.Thread(target=kill_a_worker_once_registered,
                               args=(uninterrupted / "runs" / "killed", "checkpoint_000002", killed), daemon=True)
    watcher.start()
    result = run_distill(config(uninterrupted, "killed", 2))
    watcher.join(timeout=1)
    assert killed, "no Ray Train worker was killed"
    summary = json.loads((uninterrupted / "killed" / "distill_summary.json").read_text())
    assert summary["resumed_from_step"] == 2 and result.steps == 4
    ref, got = history(uninterrupted / "two"), history(uninterrupted / "killed")
    assert [r["step"] for r in got] == [1, 2, 3, 4]
    for a, b in zip(ref, got):
        assert a["reward_mean"] == pytest.approx(b["reward_mean"], abs=1e-9) and a["lr"] == b["lr"]
        assert abs(a["loss"] - b["loss"]) < 1e-6 and abs(a["grad_norm"] - b["grad_norm"]) < 1e-6
    ref_state, state = exported(uninterrupted / "two"), exported(uninterrupted / "killed")
    assert all(torch.allclose(state[k], ref_state[k], atol=1e-6) for k in ref_state)


# --------------------------------------------------------------------------- the reward judge, served once


def judge_config(judge: dict, **reward) -> DistillConfig:
    return from_dict(DistillConfig, {"trainer": {"objective": "grpo"}, "grpo": {"reward": {"judge": judge, **reward}}})


def test_the_reward_judge_is_served_once_for_every_worker(ray_session):
    """The driver's deployment (``served_judge``) answers every worker's Reward, with the decisions of a judge
    loaded in the worker itself, and is deleted afterwards; actors mode, an endpoint or a function start nothing."""
    from ray import serve
    from test_grpo import OPEN_ROW

    from zwz_ray.engines.served import ServedEngine
    from zwz_ray.train.reward import Reward
    from zwz_ray.train.run import served_judge

    tiny = {"backend": "hf", "model": "tiny:text", "device": "cpu", "dtype": "float32"}
    cfg = judge_config(tiny, judge_max_tokens=16)
    asks = ([OPEN_ROW], [["<answer>a small flock</answer>", "<answer>several</answer>", "<answer>five</answer>"]])
    local = Reward(cfg.grpo.reward).score(*asks)  # the judge loaded here (serving.mode: actors does this per worker)
    with served_judge(cfg) as served:
        (ref,) = served.values()
        assert ref.app.startswith("zwz-distill-tiny-text-") and ref.app in serve.status().applications
        workers = [Reward(cfg.grpo.reward, served=served) for _ in range(2)]
        scores = [w.score(*asks) for w in workers]
    engines = [w.judge().engine for w in workers]
    assert all(isinstance(e, ServedEngine) for e in engines) and [e.stats.calls for e in engines] == [2, 2]
    assert sum(e.stats.loads for e in engines) == 1  # one replica, one load, for both workers
    assert scores[0] == scores[1] == local
    assert [s.rule for s in local[0]][2] == "normalized" and {s.rule for s in local[0][:2]} <= {"llm_judge", "error"}
    assert not [n for n in serve.status().applications if n.startswith("zwz-distill-")]
    endpoint = {"backend": "openai", "model": "judge", "base_url": "http://127.0.0.1:9/v1"}
    for other in (judge_config(tiny, serving={"mode": "actors"}), judge_config(endpoint),
                  judge_config(tiny, function=DIGITS)):
        with served_judge(other) as nothing:
            assert nothing == {}
