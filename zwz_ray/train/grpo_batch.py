"""Responses as training inputs: one prompt + response sequence per sample, packed into micro-batches.

A micro-batch right-pads ``prompt ids + response ids`` of a few samples (the prompt's image
placeholders are already expanded, so image tokens always match ``pixel_values``), and a forward
returns the log-probability of every response token under ``softmax(logits / temperature)`` (the
distribution the rollout sampled from), flattened sample after sample, plus per-token entropy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from zwz_ray.train.examples import IGNORE_INDEX
from zwz_ray.train.grpo_loss import entropy_from_logits
from zwz_ray.train.rollout import Prompt


@dataclass
class Sample:
    """One response with what the update needs."""

    prompt: Prompt
    response: torch.Tensor  # (R,) token ids
    advantage: float
    old_logp: torch.Tensor | None = None  # (R,)
    ref_logp: torch.Tensor | None = None

    @property
    def length(self) -> int:
        return len(self.response)


def chunks(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def pack(samples: list[Sample], pad_token_id: int) -> dict[str, Any]:
    """Right-padded model inputs plus ``labels`` (response tokens, IGNORE_INDEX elsewhere)."""
    seqs = [torch.cat([s.prompt.input_ids, s.response]) for s in samples]
    longest = max(len(x) for x in seqs)
    n = len(samples)
    input_ids = torch.full((n, longest), pad_token_id, dtype=torch.long)
    labels = torch.full((n, longest), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((n, longest), dtype=torch.long)
    has_mm = samples[0].prompt.mm_token_type_ids is not None
    mm = torch.zeros((n, longest), dtype=torch.long) if has_mm else None
    for i, (s, seq) in enumerate(zip(samples, seqs)):
        p = len(s.prompt.input_ids)
        input_ids[i, :len(seq)], attention_mask[i, :len(seq)] = seq, 1
        labels[i, p:len(seq)] = s.response
        if mm is not None:
            mm[i, :p] = s.prompt.mm_token_type_ids
    batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels,
             "pixel_values": torch.cat([s.prompt.pixel_values for s in samples])}
    if samples[0].prompt.image_grid_thw is not None:
        batch["image_grid_thw"] = torch.cat([s.prompt.image_grid_thw for s in samples])
    if mm is not None:
        batch["mm_token_type_ids"] = mm
    return batch


def response_logprobs(model: torch.nn.Module, batch: dict[str, Any], temperature: float,
                      with_entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs of the response tokens (flattened in sample order) and optionally their entropies."""
    labels = batch["labels"]
    # Logits only where the next token is a response token: responses sit at each row's end.
    positions = (labels[:, 1:] != IGNORE_INDEX).any(dim=0).nonzero().squeeze(1)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = model(**inputs, logits_to_keep=positions, use_cache=False).logits.float()
    if temperature > 0:
        logits = logits / temperature
    targets = labels[:, positions + 1]
    mask = targets != IGNORE_INDEX
    logp = torch.log_softmax(logits, dim=-1).gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    entropy = entropy_from_logits(logits.detach())[mask] if with_entropy else None
    return logp[mask], entropy


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
