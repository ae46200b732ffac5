"""Colocated vLLM rollouts (GPU): one in-process ``vllm.LLM`` per Ray Train worker, as EasyR1 and TRL do.

Each worker builds its engine with ``distributed_executor_backend="external_launcher"`` (vLLM joins
the torch.distributed environment Ray Train already set up; tensor parallel size 1, so every worker
is an independent replica), dummy weights, sleep mode, the training processor's pixel limits and a
KV cache sized by ``grpo.rollout.kv_cache_memory_bytes`` or ``gpu_memory_utilization``. Every RL step:

  1. wake the weights, 2. stream the FSDP2 parameters into the model (:func:`load_weights`:
  ``full_tensor()`` per parameter in bf16, LoRA merged, into vLLM's in-place ``reload_weights``),
  3. wake the KV cache, 4. generate, 5. clear the multimodal caches and sleep (level 2: the weights
  are re-sent next step anyway, so nothing is kept on the host).

:func:`load_weights` is tested on CPU with the CPU build of vLLM (tiny Qwen3 text and Idefics3
models). Sleep mode, ``external_launcher`` and Qwen-VL under vLLM are CUDA-only and covered by a
GPU-marked test. Responses of sample ``i`` of prompt ``p`` use ``SamplingParams(seed=sample_seed(...))``,
never the rank; image placeholder tokens get a -100 logit bias.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from zwz_ray.logs import get_logger
from zwz_ray.models import model_family, resolve_model
from zwz_ray.train.grpo_batch import chunks
from zwz_ray.train.rollout import Group, Prompt, banned_token_ids, full_weights, sample_seed

log = get_logger(__name__)

BAN = -100.0  # vLLM's logit_bias range is [-100, 100]; -100 leaves an image token no probability


def load_weights(llm: Any, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
    """Load (Hugging Face name, tensor) pairs into a running ``vllm.LLM`` in place, then drop what the
    old weights computed: cached prefixes and the multimodal encoder outputs."""
    llm.collective_rpc("reload_weights", kwargs={"weights_iterator": iter(weights), "is_checkpoint_format": True})
    llm.llm_engine.reset_encoder_cache()  # the scheduler's view and the runner's cache, together
    llm.reset_prefix_cache()


class VLLMRollout:
    """The ``vllm`` rollout engine (sync / generate / release / close, as :class:`~zwz_ray.train.rollout.HFRollout`)."""

    def __init__(self, cfg: Any, processor: Any, device: torch.device):
        from vllm import LLM

        r = cfg.grpo.rollout
        self.cfg, self.rollout, self.processor, self.device = cfg, r, processor, device
        path = resolve_model(cfg.student)
        kwargs: dict[str, Any] = dict(
            model=path, tokenizer=path, dtype="bfloat16", load_format="dummy", seed=r.seed,
            distributed_executor_backend="external_launcher", tensor_parallel_size=1,
            enable_sleep_mode=r.sleep_mode, gpu_memory_utilization=r.gpu_memory_utilization,
            max_model_len=r.max_prompt_tokens + r.max_response_tokens, max_num_batched_tokens=r.max_num_batched_tokens,
            enforce_eager=r.enforce_eager, limit_mm_per_prompt={"image": 1},
        )
        if r.kv_cache_memory_bytes:
            kwargs["kv_cache_memory_bytes"] = r.kv_cache_memory_bytes
        if model_family(path) in ("qwen2_5_vl", "qwen3_vl"):
            kwargs["mm_processor_kwargs"] = {"min_pixels": cfg.data.min_pixels, "max_pixels": cfg.data.max_pixels}
        self.llm = LLM(**kwargs)
        self.bias = {}
        self.asleep = False
        self._sleep()

    def _sleep(self) -> None:
        if self.rollout.sleep_mode and not self.asleep:
            self.llm.sleep(level=2)
            self.asleep = True

    def sync(self, policy: torch.nn.Module) -> None:
        """Collective: wake the weights, stream the policy in, wake the KV cache."""
        if self.asleep:
            self.llm.wake_up(tags=["weights"])
        load_weights(self.llm, full_weights(policy, self.device, torch.bfloat16))
        if self.asleep:
            self.llm.wake_up(tags=["kv_cache"])
            self.asleep = False
        if not self.bias:
            self.bias = {i: BAN for i in banned_token_ids(policy)}

    def generate(self, prompts: list[Prompt], epoch: int) -> list[Group]:
        from vllm import SamplingParams

        r, groups = self.rollout, []
        for part in chunks(prompts, r.generate_batch_prompts):
            requests = [{"prompt": p.text, "multi_modal_data": {"image": p.image}} for p in part for _ in range(r.n)]
            params = [SamplingParams(n=1, temperature=r.temperature, top_p=r.top_p, max_tokens=r.max_response_tokens,
                                     seed=sample_seed(r.seed, epoch, p.id, i), logit_bias=self.bias or None)
                      for p in part for i in range(r.n)]
            outputs = self.llm.generate(requests, params, use_tqdm=False)
            for k, p in enumerate(part):
                outs = [o.outputs[0] for o in outputs[k * r.n:(k + 1) * r.n]]
                groups.append(Group(p, [torch.tensor(list(o.token_ids), dtype=torch.long) for o in outs],
                                    [o.finish_reason == "length" for o in outs], [o.text for o in outs]))
        return groups

    def release(self) -> None:
        """Free the GPU for training: clear the per-image processor cache, sleep."""
        self.llm.reset_mm_cache()
        self._sleep()

    def close(self) -> None:
        self.llm = None
