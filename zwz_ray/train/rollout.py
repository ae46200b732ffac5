"""GRPO rollouts: prompts from kept rows, the policy's weights streamed out of FSDP2, the ``hf`` engine.

Design of the ``hf`` engine. FSDP2 needs every worker to run the same collectives, but workers
sample responses of different lengths; generating with the sharded policy would need a shared stop.
Instead each worker keeps an *unsharded inference copy* of the student and, at the start of every
RL step, receives the current weights into it (:func:`full_weights`: ``full_tensor()`` per
parameter, in the same order on every worker, LoRA merged). Generation is then local and free of
collectives. The same stream feeds vLLM's ``load_weights`` in :mod:`zwz_ray.train.rollout_vllm`,
so CPU tests exercise the sync path the GPU engine uses. The cost is one more copy of the weights
per worker: fine for small students; large ones use the vllm engine.

Sampling is seeded per response: sample ``i`` of prompt ``p`` in epoch ``e`` draws from its own
generator seeded by :func:`sample_seed` (never by the worker's rank), so the same prompt yields the
same responses on any worker, with any number of workers. With ``grpo.rollout.hf_batch_prompts: 1``
(each prompt's ``n`` responses in a ``generate`` call of their own) the draws are bit-identical;
batching several prompts (left-padded) is faster, and padding and batch shape may then change the
logits' last bits and, rarely, a draw. Sampling happens in a logits processor
(temperature, top_p, then one draw per row) and ``generate`` runs greedy over its output; image and
video placeholder tokens are masked out, so the model never emits one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch.distributed.tensor import DTensor

from zwz_ray.prompts import grpo_prompt
from zwz_ray.replies import detect_mcq
from zwz_ray.train.examples import Dropped, read_row
from zwz_ray.train.grpo_config import RolloutConfig
from zwz_ray.train.parallel import hf_model

# Config attributes naming multimodal placeholder tokens; a sampled one would break the next forward.
MM_TOKEN_ATTRS = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id", "image_token_index")


@dataclass
class Prompt:
    """One kept row, rendered and encoded once for rollouts and for the training forwards."""

    id: str
    problem: str
    answer: str
    is_mcq: bool
    options: dict[str, str]
    text: str  # the rendered chat prompt (vLLM expands the image itself)
    image: Any  # PIL image
    input_ids: torch.Tensor  # (P,), image placeholders expanded
    pixel_values: torch.Tensor
    image_grid_thw: torch.Tensor | None = None
    mm_token_type_ids: torch.Tensor | None = None

    @property
    def question_type(self) -> str:
        return "mcq" if self.is_mcq else "open"

    def row(self) -> dict:
        return {"id": self.id, "problem": self.problem, "answer": self.answer, "is_mcq": self.is_mcq,
                "options": self.options, "question_type": self.question_type}


@dataclass
class Group:
    """The ``n`` responses of one prompt."""

    prompt: Prompt
    responses: list[torch.Tensor]  # token ids, the end-of-turn token included when emitted
    truncated: list[bool]
    texts: list[str] = field(default_factory=list)


class RolloutEngine(Protocol):
    """What the recipe asks of a rollout engine (``hf`` here, ``vllm`` in rollout_vllm).

    A disaggregated engine (rollout actors on their own GPUs) fits the same four calls: ``sync``
    would send the stream of :func:`full_weights` through vLLM's weight transfer API
    (``WeightTransferConfig`` / ``send_weights()``) from rank 0 instead of loading it locally.
    """

    def sync(self, policy: torch.nn.Module) -> None:
        """Collective (every worker calls it): make the engine sample from the policy's current weights."""

    def generate(self, prompts: list[Prompt], epoch: int) -> list[Group]:
        """The ``n`` responses of each prompt, seeded by prompt id and sample index (local, no collectives)."""

    def release(self) -> None:
        """The step's rollouts are done: free what training needs (e.g. vLLM sleeps)."""

    def close(self) -> None: ...


def chat(problem: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": grpo_prompt(problem)}]}]


class PromptEncoder:
    """Row -> :class:`Prompt` with the training processor (same pixel limits as the rollouts); never truncates."""

    def __init__(self, processor: Any, max_prompt_tokens: int, max_image_bytes: int):
        self.processor, self.max_prompt_tokens, self.max_image_bytes = processor, max_prompt_tokens, max_image_bytes

    def __call__(self, row: dict) -> Prompt:
        problem, answer, image = read_row(row, self.max_image_bytes)
        try:
            text = self.processor.apply_chat_template(chat(problem), tokenize=False, add_generation_prompt=True)
            enc = self.processor(text=[text], images=[image], return_tensors="pt")
        except Exception as exc:  # noqa: BLE001 - one bad row must not stop training
            raise Dropped("encode_error", f"{type(exc).__name__}: {exc}") from exc
        ids = enc["input_ids"][0]
        if len(ids) > self.max_prompt_tokens:
            raise Dropped("too_long", f"prompt of {len(ids)} tokens > grpo.rollout.max_prompt_tokens {self.max_prompt_tokens}")
        is_mcq, options = detect_mcq(problem, answer)
        mm = enc.get("mm_token_type_ids")
        return Prompt(str(row.get("id")), problem, answer, is_mcq, options, text, image, ids, enc["pixel_values"],
                      enc.get("image_grid_thw"), mm[0] if mm is not None else None)


def sample_seed(seed: int, epoch: int, prompt_id: str, index: int) -> int:
    """The seed of one response: a function of the prompt and the sample, not of the worker."""
    digest = hashlib.sha256(f"{seed}:{epoch}:{prompt_id}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def banned_token_ids(model: torch.nn.Module) -> list[int]:
    """Multimodal placeholder tokens of the model's config (and its text config)."""
    config = hf_model(model).config
    ids = {getattr(c, a) for c in (config, config.get_text_config()) for a in MM_TOKEN_ATTRS if isinstance(getattr(c, a, None), int)}
    return sorted(ids)


def end_token_ids(processor: Any, model: torch.nn.Module) -> list[int]:
    ids = {processor.tokenizer.eos_token_id}
    gen = getattr(hf_model(model), "generation_config", None)
    eos = getattr(gen, "eos_token_id", None)
    ids.update(eos if isinstance(eos, list) else [eos])
    return sorted(i for i in ids if i is not None)


# --------------------------------------------------------------------------- the weight stream


def _full(p: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The whole parameter (collective for a DTensor); parameters offloaded to CPU go via the device."""
    p = p.detach()
    if isinstance(p, DTensor):
        if p.device.type != device.type:
            p = p.to(device)
        return p.full_tensor()
    return p


def full_weights(model: torch.nn.Module, device: torch.device, dtype: torch.dtype | None = None) -> Iterator[tuple[str, torch.Tensor]]:
    """Collective: (Hugging Face name, full tensor) for every parameter of the student, LoRA merged.

    Every worker must consume the whole stream (each tensor is an all-gather); the order is the
    module order, identical on every worker.
    """
    base = hf_model(model)
    lora_prefixes: list[str] = []
    seen: set[int] = set()
    for name, module in base.named_modules():
        if any(name.startswith(prefix) for prefix in lora_prefixes):
            continue
        if isinstance(getattr(module, "lora_A", None), torch.nn.ModuleDict) and hasattr(module, "base_layer"):
            lora_prefixes.append(name + ".")
            yield from _merged_lora(name, module, device, dtype)
            continue
        for pname, p in module.named_parameters(recurse=False):
            if id(p) in seen:  # tied weights travel once
                continue
            seen.add(id(p))
            tensor = _full(p, device)
            yield f"{name}.{pname}" if name else pname, tensor.to(dtype) if dtype else tensor


def _merged_lora(name: str, module: Any, device: torch.device, dtype: torch.dtype | None) -> Iterator[tuple[str, torch.Tensor]]:
    weight = _full(module.base_layer.weight, device).clone()
    for adapter in module.active_adapters:
        a, b = _full(module.lora_A[adapter].weight, device), _full(module.lora_B[adapter].weight, device)
        weight += (b @ a).to(weight.dtype) * module.scaling[adapter]
    yield f"{name}.weight", weight.to(dtype) if dtype else weight
    bias = getattr(module.base_layer, "bias", None)
    if bias is not None:
        yield f"{name}.bias", _full(bias, device).to(dtype) if dtype else _full(bias, device)


# --------------------------------------------------------------------------- the hf engine


def _sampling_processor(generators: list[torch.Generator], temperature: float, top_p: float, banned: list[int]) -> Any:
    from transformers import LogitsProcessor

    class SeededSampling(LogitsProcessor):
        """One draw per row from its own generator; greedy decoding then takes exactly that token."""

        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            scores = scores.float()
            if banned:
                scores[:, banned] = float("-inf")
            if temperature == 0:
                choice = scores.argmax(-1)
            else:
                probs = torch.softmax(scores / temperature, dim=-1)
                if top_p < 1.0:
                    probs = nucleus(probs, top_p)
                choice = torch.stack([torch.multinomial(probs[i], 1, generator=g)[0] for i, g in enumerate(generators)])
            out = torch.full_like(scores, float("-inf"))
            out[torch.arange(len(choice)), choice] = 0.0
            return out

    return SeededSampling()


def nucleus(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose mass reaches ``top_p``; renormalise."""
    sorted_p, order = probs.sort(dim=-1, descending=True)
    outside = sorted_p.cumsum(-1) - sorted_p >= top_p
    sorted_p = sorted_p.masked_fill(outside, 0.0)
    kept = torch.zeros_like(probs).scatter(-1, order, sorted_p)
    return kept / kept.sum(-1, keepdim=True)


class HFRollout:
    """transformers ``generate`` on a per-worker unsharded copy of the policy."""

    def __init__(self, copy: torch.nn.Module, processor: Any, cfg: RolloutConfig, device: torch.device):
        self.model = copy.to(device).eval().requires_grad_(False)
        self.processor, self.cfg, self.device = processor, cfg, device
        self.params = dict(self.model.named_parameters(remove_duplicate=False))
        self.banned = banned_token_ids(copy)
        self.ends = end_token_ids(processor, copy)

    def sync(self, policy: torch.nn.Module) -> None:
        """Collective: copy the policy's current weights into the inference copy."""
        loaded = set()
        with torch.no_grad():
            for name, tensor in full_weights(policy, self.device):
                target = self.params.get(name)
                if target is None:
                    raise KeyError(f"the inference copy has no parameter {name!r}")
                target.copy_(tensor)
                loaded.add(name)
        missing = {n for n, p in self.model.named_parameters()} - loaded
        if missing:
            raise RuntimeError(f"weight sync left {len(missing)} parameters unset, e.g. {sorted(missing)[:3]}")

    def release(self) -> None:
        """Nothing to free between steps (the copy stays in memory)."""

    @torch.no_grad()
    def generate(self, prompts: list[Prompt], epoch: int) -> list[Group]:
        size = self.cfg.hf_batch_prompts
        return [g for i in range(0, len(prompts), size) for g in self._groups(prompts[i:i + size], epoch)]

    def _groups(self, prompts: list[Prompt], epoch: int) -> list[Group]:
        """One ``generate`` call for the ``n`` responses of each prompt, prompts left-padded to one length."""
        from transformers import GenerationConfig

        n, c = self.cfg.n, self.cfg
        pad = self.processor.tokenizer.pad_token_id
        pad = pad if pad is not None else self.ends[0]
        width = max(len(p.input_ids) for p in prompts)
        rows = [(p, i) for p in prompts for i in range(n)]
        gens = [torch.Generator(device=self.device).manual_seed(sample_seed(c.seed, epoch, p.id, i)) for p, i in rows]
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        mm = torch.zeros((len(rows), width), dtype=torch.long) if prompts[0].mm_token_type_ids is not None else None
        for k, (p, _) in enumerate(rows):
            input_ids[k, width - len(p.input_ids):], attention[k, width - len(p.input_ids):] = p.input_ids, 1
            if mm is not None:
                mm[k, width - len(p.input_ids):] = p.mm_token_type_ids
        inputs = {"input_ids": input_ids, "attention_mask": attention,
                  "pixel_values": torch.cat([p.pixel_values for p, _ in rows])}
        if prompts[0].image_grid_thw is not None:
            inputs["image_grid_thw"] = torch.cat([p.image_grid_thw for p, _ in rows])
        if mm is not None:
            inputs["mm_token_type_ids"] = mm
        gen_cfg = GenerationConfig(do_sample=False, max_new_tokens=c.max_response_tokens, eos_token_id=self.ends, pad_token_id=pad)
        out = self.model.generate(**{k: v.to(self.device) for k, v in inputs.items()}, generation_config=gen_cfg,
                                  logits_processor=[_sampling_processor(gens, c.temperature, c.top_p, self.banned)])
        groups = []
        for j, p in enumerate(prompts):
            responses, truncated = [], []
            for row in out[j * n:(j + 1) * n, width:].cpu():
                ends = [i for i, t in enumerate(row.tolist()) if t in self.ends]
                responses.append(row[: ends[0] + 1] if ends else row)
                truncated.append(not ends)
            texts = [self.processor.tokenizer.decode(r, skip_special_tokens=True) for r in responses]
            groups.append(Group(p, responses, truncated, texts))
        return groups

    def close(self) -> None:
        self.model = None
