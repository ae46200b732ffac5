"""The vLLM weight sync on CPU for real (vLLM's CPU build), and the colocated engine on a GPU.

FSDP2 shards -> ``full_tensor()`` per parameter (:func:`zwz_ray.train.rollout.full_weights`) ->
vLLM's in-place ``reload_weights`` (:func:`zwz_ray.train.rollout_vllm.load_weights`): zeroing a
layer in the sharded policy and syncing changes vLLM's greedy output; syncing the real weights
brings it back exactly. Sleep mode, ``external_launcher`` and Qwen-VL under vLLM need CUDA.
"""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


def greedy(llm, prompt) -> tuple[list[int], list[float]]:
    from vllm import SamplingParams

    (out,) = llm.generate([prompt], SamplingParams(temperature=0.0, max_tokens=8, logprobs=0), use_tqdm=False)
    sample = out.outputs[0]
    return list(sample.token_ids), [lp[t].logprob for lp, t in zip(sample.logprobs, sample.token_ids)]


def sharded(ref: str):
    import torch.distributed as dist
    from transformers import AutoModelForCausalLM

    from zwz_ray.models import load_vlm, resolve_model
    from zwz_ray.train.config import TrainerConfig
    from zwz_ray.train.parallel import shard_model

    assert dist.is_initialized()  # vLLM's in-process engine set up a one-process group; FSDP2 shards over it
    model = AutoModelForCausalLM.from_pretrained(resolve_model(ref)) if ref == "tiny:text" else load_vlm(ref)[0]
    return shard_model(model, TrainerConfig(precision="fp32"), torch.device("cpu"))


@pytest.mark.parametrize("ref", ["tiny:text", "tiny:idefics3"])
def test_fsdp2_weights_sync_into_vllm(ref):
    from torch.distributed.tensor import DTensor, distribute_tensor

    from zwz_ray.config import EngineConfig
    from zwz_ray.engines import build_engine
    from zwz_ray.train.rollout import full_weights
    from zwz_ray.train.rollout_vllm import load_weights

    engine = build_engine(EngineConfig(backend="vllm", model=ref, max_model_len=1024, kv_cache_memory_bytes=64 << 20,
                                       enforce_eager=True, dtype="float32"))
    llm = engine.llm
    image = Image.new("RGB", (200, 150), (30, 160, 60))
    tokenizer = llm.get_tokenizer()
    if ref == "tiny:text":
        prompt = {"prompt": "red cup blue bottle 3 4 5"}
    else:
        text = tokenizer.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]}],
                                             tokenize=False, add_generation_prompt=True)
        prompt = {"prompt": text, "multi_modal_data": {"image": image}}
    before = greedy(llm, prompt)
    model = sharded(ref)
    params = dict(model.named_parameters())
    assert all(isinstance(p, DTensor) for p in params.values())
    original = {n: p.detach().full_tensor().clone() for n, p in params.items()}
    layer = [n for n in params if ".layers.1." in n]  # the last decoder (and vision encoder) layer
    with torch.no_grad():
        for name in layer:
            params[name].zero_()
    load_weights(llm, full_weights(model, torch.device("cpu")))
    zeroed = greedy(llm, prompt)
    assert zeroed[0] != before[0] or max(abs(a - b) for a, b in zip(zeroed[1], before[1])) > 1e-2
    got = llm.apply_model(lambda m: [float(p.detach().abs().sum()) for n, p in m.named_parameters() if ".layers.1." in n])[0]
    assert got and max(got) == 0.0  # vLLM's fused layers (qkv_proj, gate_up_proj) were written too
    with torch.no_grad():
        for name in layer:
            params[name].copy_(distribute_tensor(original[name], params[name].device_mesh, params[name].placements))
    load_weights(llm, full_weights(model, torch.device("cpu")))
    after = greedy(llm, prompt)
    assert after[0] == before[0]
    torch.testing.assert_close(torch.tensor(after[1]), torch.tensor(before[1]), atol=1e-4, rtol=0)
    engine.close()


@pytest.mark.gpu
def test_colocated_vllm_rollouts_on_gpu(tmp_path, ray_session):
    """external_launcher + sleep mode + Qwen2.5-VL under vLLM: two RL steps on one GPU worker."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from test_grpo import rows

    from zwz_ray.config import from_dict
    from zwz_ray.train import run_distill
    from zwz_ray.train.config import DistillConfig

    (tmp_path / "rows").mkdir()
    pq.write_table(pa.Table.from_pylist(rows(8)), tmp_path / "rows" / "part-0.parquet")
    cfg = from_dict(DistillConfig, {
        "student": "tiny:qwen2_5_vl", "data": {"path": str(tmp_path / "rows"), "min_pixels": 3136, "max_pixels": 16384},
        "trainer": {"objective": "grpo", "use_gpu": True, "precision": "bf16", "max_steps": 2, "micro_batch_size": 4,
                    "controller_poll_s": 0.1},
        "optim": {"lr": 1e-4},
        "grpo": {"rollout_batch_prompts": 4, "mini_batch_prompts": 2,
                 "rollout": {"engine": "vllm", "n": 4, "max_response_tokens": 16, "max_prompt_tokens": 1024, "kv_cache_memory_bytes": 1 << 28,
                             "enforce_eager": True}},
        "checkpoint": {"storage_path": str(tmp_path / "runs"), "run_name": "vllm"},
        "output": {"dir": str(tmp_path / "out"), "tensorboard": False}})
    result = run_distill(cfg)
    assert result.steps == 2 and all(r["updates"] == 2 * r["step"] for r in result.history)
    assert all(r["response_len_max"] <= 16 and r["rollout_s"] > 0 for r in result.history)
    assert json.loads((tmp_path / "out" / "model" / "config.json").read_text())["dtype"] == "bfloat16"
