"""The GRPO arithmetic, free of models and processes: group advantages, the clipped policy loss, KL.

Values follow EasyR1 / verl (``verl/trainer/core_algos.py``): advantages are
``(r - group mean) / (group std + eps)`` with the unbiased std (``torch.std``); the policy loss is
PPO's clipped ratio with asymmetric clips (low 0.2, high 0.3 in the paper's recipe), the dual clip
(3.0) bounding the loss of negative-advantage tokens, and the log-ratio clamped (+-20) before
``exp``. Every function works on the response tokens of a batch flattened into one vector; the
caller divides the returned *sums* by the token (or sequence) count of the whole mini-batch across
all workers, so that the mean is over the global batch whatever the number of workers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def group_advantages(rewards: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """(groups, n) rewards -> (groups, n) advantages; a group of equal rewards gets zeros."""
    if rewards.dim() != 2 or rewards.size(1) < 2:
        raise ValueError(f"rewards must be (groups, n >= 2), got {tuple(rewards.shape)}")
    rewards = rewards.double()
    mean = rewards.mean(dim=1, keepdim=True)
    std = rewards.std(dim=1, keepdim=True)  # unbiased, as EasyR1
    return ((rewards - mean) / (std + eps)).float()


@dataclass
class PolicyLossTerms:
    """Sums over the given tokens (divide by the global count for means)."""

    loss_sum: torch.Tensor  # differentiable
    clip_high: int  # tokens whose ratio was clipped at 1 + clip_high (positive advantage)
    clip_low: int  # tokens clipped at 1 - clip_low (negative advantage)
    clip_dual: int  # negative-advantage tokens bounded by the dual clip
    ratio_sum: float


def clipped_policy_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, weights: torch.Tensor,
                        clip_low: float, clip_high: float, dual_clip: float | None, log_ratio_clamp: float) -> PolicyLossTerms:
    """PPO clipped surrogate per token, weighted and summed.

    ``weights`` carry the aggregation: 1 per token for token-mean, 1 / (response length) for
    seq-mean-token-mean. Clip fractions count tokens (unweighted).
    """
    log_ratio = torch.clamp(logp - old_logp, -log_ratio_clamp, log_ratio_clamp)
    ratio = torch.exp(log_ratio)
    loss1 = -advantages * ratio
    loss2 = -advantages * torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    clipped = torch.maximum(loss1, loss2)
    if dual_clip is not None:
        bounded = torch.minimum(clipped, -advantages * dual_clip)
        per_token = torch.where(advantages < 0, bounded, clipped)
        dual = int(((advantages < 0) & (clipped > -advantages * dual_clip)).sum())
    else:
        per_token, dual = clipped, 0
    with torch.no_grad():
        high = int(((advantages > 0) & (ratio > 1.0 + clip_high)).sum())
        low = int(((advantages < 0) & (ratio < 1.0 - clip_low)).sum())
    return PolicyLossTerms((per_token * weights).sum(), high, low, dual, float(ratio.detach().sum()))


def low_var_kl(logp: torch.Tensor, ref_logp: torch.Tensor, clamp: float = 10.0) -> torch.Tensor:
    """Per-token k3 estimator of KL(policy || reference): exp(ref - logp) - (ref - logp) - 1, clamped."""
    diff = ref_logp - logp
    return torch.clamp(torch.exp(diff) - diff - 1.0, -clamp, clamp)


def token_weights(lengths: list[int], mode: str) -> torch.Tensor:
    """Weights of the flattened response tokens for the loss aggregation ``mode``."""
    if mode == "token-mean":
        return torch.ones(sum(lengths))
    if mode == "seq-mean-token-mean":
        return torch.cat([torch.full((n,), 1.0 / n) for n in lengths])
    raise ValueError(f"unknown loss aggregation {mode!r}; use token-mean or seq-mean-token-mean")


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Per-position entropy of softmax(logits) (last dim)."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)
