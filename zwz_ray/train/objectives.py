"""What a training step optimises.

The loop owns data order, sharding, normalisation across micro batches and workers, and the
optimizer. An :class:`Objective` owns the rest: turning rows into examples, collating them,
an optional per-step preparation (GRPO will sample rollouts and score rewards there) and the
loss as a *sum* over target tokens plus their count, so that the loop can average over every
target token of the global batch (token-level averaging, as in the paper's recipe).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from zwz_ray.train.examples import IGNORE_INDEX, Example, SFTEncoder, collate

MODEL_INPUTS = ("input_ids", "attention_mask", "pixel_values", "image_grid_thw", "mm_token_type_ids")


@dataclass
class LossTerms:
    loss_sum: torch.Tensor  # summed over target tokens, differentiable
    num_targets: int


class Objective(ABC):
    """A training objective plugged into the distillation loop."""

    name = "objective"

    @abstractmethod
    def encode(self, row: dict) -> Example:
        """Row -> example; raise ``Dropped(reason)`` for a row that must be skipped."""

    @abstractmethod
    def collate(self, examples: list[Example]) -> dict[str, Any]:
        """Examples -> one micro batch (tensors plus ``num_samples``/``num_tokens``/``num_targets``)."""

    def prepare_step(self, model: torch.nn.Module, micro_batches: list[dict]) -> list[dict]:
        """Hook run on every worker before the step's forward passes (e.g. rollouts and rewards)."""
        return micro_batches

    @abstractmethod
    def loss(self, model: torch.nn.Module, batch: dict[str, Any]) -> LossTerms:
        """Forward one micro batch and return the summed token loss and its token count."""


class SFTObjective(Objective):
    """Cross-entropy on the teacher's answer tokens; prompt and image tokens are masked."""

    name = "sft"

    def __init__(self, processor: Any, max_seq_len: int, max_image_bytes: int = 64 * 1024 * 1024):
        self.encoder = SFTEncoder(processor, max_seq_len, max_image_bytes)
        tok = processor.tokenizer
        self.pad_token_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    def encode(self, row: dict) -> Example:
        return self.encoder(row)

    def collate(self, examples: list[Example]) -> dict[str, Any]:
        return collate(examples, self.pad_token_id)

    def loss(self, model: torch.nn.Module, batch: dict[str, Any]) -> LossTerms:
        labels = batch["labels"]
        # Logits only where a next token is a target: the answer sits at the end of each row.
        positions = (labels[:, 1:] != IGNORE_INDEX).any(dim=0).nonzero().squeeze(1)
        inputs = {k: batch[k] for k in MODEL_INPUTS if k in batch}
        out = model(**inputs, logits_to_keep=positions, use_cache=False)
        logits = out.logits.float()
        targets = labels[:, positions + 1]
        loss_sum = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1),
                                   ignore_index=IGNORE_INDEX, reduction="sum")
        return LossTerms(loss_sum, int((targets != IGNORE_INDEX).sum()))


def make_objective(name: str, processor: Any, data_cfg: Any) -> Objective:
    """The objective named in ``trainer.objective``."""
    if name == "sft":
        return SFTObjective(processor, data_cfg.max_seq_len, data_cfg.max_image_bytes)
    raise ValueError(f"unknown objective {name!r}; available: sft")
