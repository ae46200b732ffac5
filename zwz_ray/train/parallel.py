"""Making the student trainable across workers: LoRA or full tuning, FSDP2, activation checkpointing.

Sharding uses FSDP2 (``torch.distributed.fsdp.fully_shard``): one unit per decoder layer and per
vision block (the classes the model lists in ``_no_split_modules``) and one for the root. On CUDA
the process group is NCCL and parameters are computed in bf16 with fp32 gradient reduction; on
CPU it is gloo and everything stays fp32. Parameters become DTensors; grad clipping below works
on them. :mod:`zwz_ray.train.loading` builds the model on the meta device and shards it with
:func:`shard_model` before any weights exist, so that no worker holds a full copy.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor

from zwz_ray.logs import get_logger
from zwz_ray.train.config import LoraConfig, TrainerConfig

log = get_logger(__name__)

VISION_ATTRS = ("visual", "vision_tower", "vision_model")


def vision_tower(model: torch.nn.Module) -> torch.nn.Module | None:
    """The vision encoder of a Qwen-VL style model (``model.model.visual``), if any."""
    for module in (getattr(model, "model", None), model):
        for name in VISION_ATTRS:
            tower = getattr(module, name, None) if module is not None else None
            if isinstance(tower, torch.nn.Module):
                return tower
    return None


def freeze_vision(model: torch.nn.Module) -> None:
    tower = vision_tower(model)
    if tower is None:
        raise ValueError(f"{type(model).__name__} has no vision tower to freeze")
    tower.requires_grad_(False)


def apply_lora(model: torch.nn.Module, cfg: LoraConfig) -> torch.nn.Module:
    """Wrap ``model`` with peft adapters; only adapter weights stay trainable."""
    import peft

    exclude = None if cfg.include_vision else r".*\.(visual|vision_tower|vision_model)\..*"
    lora = peft.LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                           target_modules=list(cfg.target_modules), exclude_modules=exclude, bias="none")
    model = peft.get_peft_model(model, lora)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    log.info("LoRA r=%d alpha=%g on %s: %d of %d parameters trainable", cfg.rank, cfg.alpha, cfg.target_modules, trainable, total)
    return model


def hf_model(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model inside a peft wrapper (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def block_classes(model: torch.nn.Module) -> set[str]:
    names = getattr(hf_model(model), "_no_split_modules", None) or ()
    if not names:
        raise ValueError(f"{type(hf_model(model)).__name__} lists no _no_split_modules; cannot choose FSDP units")
    return set(names)


def mixed_precision(precision: str, device: torch.device) -> MixedPrecisionPolicy | None:
    """bf16 compute with fp32 reduction on GPU; none (fp32) on CPU."""
    use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    if not use_bf16:
        return None
    return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)


def make_mesh(device: torch.device) -> DeviceMesh:
    return init_device_mesh(device.type, (dist.get_world_size(),), mesh_dim_names=("dp",))


def shard_model(model: torch.nn.Module, cfg: TrainerConfig, device: torch.device) -> torch.nn.Module:
    """Activation checkpointing (optional), then FSDP2 over every block and the root."""
    if cfg.activation_checkpointing:
        hf_model(model).gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        hf_model(model).config.use_cache = False
    mesh = make_mesh(device)
    kwargs: dict[str, Any] = {"mesh": mesh, "reshard_after_forward": cfg.reshard_after_forward}
    policy = mixed_precision(cfg.precision, device)
    if policy is not None:
        kwargs["mp_policy"] = policy
    if cfg.fsdp_offload:
        kwargs["offload_policy"] = CPUOffloadPolicy()
    classes = block_classes(model)
    units = [m for m in model.modules() if type(m).__name__ in classes]
    for module in units:
        fully_shard(module, **kwargs)
    fully_shard(model, **kwargs)  # moves parameters and buffers to the mesh's device (CPU with offload)
    log.debug("FSDP2: %d block units + root on %s", len(units), mesh)
    return model


def trainable_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def clip_grad_norm(params: list[torch.nn.Parameter], max_norm: float) -> torch.Tensor:
    """Global L2 grad norm over sharded (DTensor) or plain gradients; clips when ``max_norm`` > 0."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    norm = torch.nn.utils.get_total_norm(grads, norm_type=2.0)
    if isinstance(norm, DTensor):
        norm = norm.full_tensor()
    if max_norm > 0:
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm)
    return norm
