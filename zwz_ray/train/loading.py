"""Loading the student onto the workers without a full copy per worker (``trainer.load``).

``load_student(ref, trainer, lora, device, ...)`` is the one entry point of both recipes (SFT and
GRPO). It must be called by every worker of an initialised process group, after
``torch.manual_seed`` (the same seed on every worker: LoRA adapters are initialised from it), and
returns a :class:`Student` (model, processor, load statistics).

``sharded`` (default; the pattern torchtune, verl and NeMo-RL share):
  1. rank 0 reads the checkpoint on CPU in ``trainer.load_dtype`` ("auto": the checkpoint's own
     dtype, lossless, half the memory of fp32 for a bf16 checkpoint) and takes its state dict;
  2. every rank builds the same model on the meta device (config from the same reference, fp32),
     freezes the vision tower and applies LoRA if asked, then activation checkpointing and FSDP2
     (``parallel.shard_model``: every decoder layer and vision block, then the root);
  3. ``to_empty`` gives each rank storage for its own shards only; ``set_model_state_dict(...,
     full_state_dict=True, broadcast_from_rank0=True)`` broadcasts one tensor at a time from
     rank 0, and each rank copies its slice into its fp32 shard (a bf16 read is upcast here);
  4. non-persistent buffers (rotary ``inv_freq``, which no state dict holds) are broadcast from
     rank 0's real model, and tied weights (``lm_head`` = ``embed_tokens``) are checked to be tied.
  Peak host memory: rank 0 one full copy in the read dtype plus its shards; every other rank its
  shards (about full/world) plus one tensor in flight.

``full`` (the former path, kept for comparison and the memory benchmark): every rank loads the whole
model in fp32 and shards it afterwards.

The master shards are fp32 either way; on GPU, ``trainer.precision`` computes in bf16 through
FSDP2's mixed-precision policy.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict
from torch.distributed.tensor import DTensor

from zwz_ray.logs import get_logger
from zwz_ray.models import apply_pixel_limits, load_processor, resolve_model
from zwz_ray.train import parallel
from zwz_ray.train.config import LoraConfig, TrainerConfig

log = get_logger(__name__)


@dataclass
class LoadStats:
    """What loading did on this worker (measured on the tensors, not the process)."""

    mode: str
    rank: int
    world_size: int
    read_dtype: str  # the dtype rank 0 read the checkpoint in ("" on other ranks of a sharded load)
    full_bytes: int  # all parameters of the model at their full size (fp32 masters)
    local_bytes: int  # the parameter storage this worker holds after loading (its shards)
    meta_until_materialised: bool  # every parameter was on the meta device until ``to_empty``
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Student:
    model: torch.nn.Module  # FSDP2-sharded (peft-wrapped with LoRA), in train mode
    processor: Any
    stats: LoadStats


def load_student_processor(ref: str, min_pixels: int | None = None, max_pixels: int | None = None) -> Any:
    """The student's processor as ``load_vlm`` gives it (pixel limits, left padding, a pad token)."""
    processor = apply_pixel_limits(load_processor(resolve_model(ref)), min_pixels, max_pixels)
    tokenizer = processor.tokenizer
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return processor


def load_student(ref: str, trainer: TrainerConfig, lora: LoraConfig, device: torch.device, *,
                 min_pixels: int | None = None, max_pixels: int | None = None) -> Student:
    """Collective: the sharded, trainable student on every worker (see the module docstring)."""
    start = time.perf_counter()
    rank, world = dist.get_rank(), dist.get_world_size()
    processor = load_student_processor(ref, min_pixels, max_pixels)
    if trainer.load == "full":
        model, read_dtype, on_meta = _load_full(ref, trainer, lora, device), "float32", False
    else:
        model, read_dtype, on_meta = _load_sharded(ref, trainer, lora, device, rank)
    model.train()
    stats = LoadStats(trainer.load, rank, world, read_dtype, *parameter_bytes(model), on_meta, time.perf_counter() - start)
    log.info("student loaded (%s) on worker %d: %.1f of %.1f MiB of parameters local, %.1f s", trainer.load, rank,
             stats.local_bytes / 2**20, stats.full_bytes / 2**20, stats.seconds)
    return Student(model, processor, stats)


def trainable_student(model: torch.nn.Module, trainer: TrainerConfig, lora: LoraConfig) -> torch.nn.Module:
    """Freeze the vision tower and add LoRA adapters as configured (on a real or a meta model)."""
    if trainer.freeze_vision:
        parallel.freeze_vision(model)
    return parallel.apply_lora(model, lora) if lora.enabled else model


def _load_full(ref: str, trainer: TrainerConfig, lora: LoraConfig, device: torch.device) -> torch.nn.Module:
    model = _read_checkpoint(ref, torch.float32)
    return parallel.shard_model(trainable_student(model, trainer, lora), trainer, device)


def _load_sharded(ref: str, trainer: TrainerConfig, lora: LoraConfig, device: torch.device,
                  rank: int) -> tuple[torch.nn.Module, str, bool]:
    full_state: dict[str, torch.Tensor] = {}
    buffers: dict[str, torch.Tensor] = {}
    read_dtype = ""
    if rank == 0:
        # Read first, in the same order as the full path, so that LoRA's random init draws the same numbers.
        real = trainable_student(_read_checkpoint(ref, trainer.load_dtype), trainer, lora)
        read_dtype = str(next(real.parameters()).dtype).removeprefix("torch.")
        full_state = real.state_dict()
        buffers = {name: buf for name, buf in real.named_buffers()}
        del real  # the tensors live on in full_state until they have been broadcast
    with torch.device("meta"):
        model = trainable_student(_build_skeleton(ref), trainer, lora)
    model = parallel.shard_model(model, trainer, device)
    on_meta = all(p.is_meta for p in model.parameters())
    # With CPU offload FSDP2 keeps the sharded parameters on the CPU and brings them to the GPU per unit.
    model.to_empty(device="cpu" if trainer.fsdp_offload else device)
    for module in model.modules():  # buffers are used in place by the forward pass: they live on the device
        for name, buf in module._buffers.items():
            if buf is not None and buf.device != device:
                module._buffers[name] = buf.to(device)
    set_model_state_dict(model, full_state, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
    full_state.clear()
    _broadcast_buffers(model, buffers, set(model.state_dict()))
    check_tied(model)
    return model, read_dtype, on_meta


def _read_checkpoint(ref: str, dtype: str | torch.dtype) -> torch.nn.Module:
    from transformers import AutoModelForImageTextToText

    # "auto": the dtype stored in the checkpoint (no rounding, half the memory of fp32 for bf16 weights).
    return AutoModelForImageTextToText.from_pretrained(resolve_model(ref), dtype=dtype).to("cpu")


def _build_skeleton(ref: str) -> torch.nn.Module:
    """The student with the checkpoint's architecture, fp32 parameters, no storage (under a meta device)."""
    from transformers import AutoConfig, AutoModelForImageTextToText

    config = AutoConfig.from_pretrained(resolve_model(ref))
    return AutoModelForImageTextToText.from_config(config, dtype=torch.float32)


def _broadcast_buffers(model: torch.nn.Module, rank0_buffers: dict[str, torch.Tensor], in_state: set[str]) -> None:
    """Collective: the buffers no state dict carries (rotary ``inv_freq``) from rank 0's real model."""
    for name, buf in model.named_buffers():
        if name in in_state:
            continue
        if dist.get_rank() == 0:
            buf.copy_(rank0_buffers[name])
        dist.broadcast(buf, src=0)


def check_tied(model: torch.nn.Module) -> None:
    """The output embedding must still share its parameter with the input embedding when the config ties them."""
    hf = parallel.hf_model(model)
    if not getattr(hf.config.get_text_config(), "tie_word_embeddings", False):
        return
    out, inp = hf.get_output_embeddings(), hf.get_input_embeddings()
    if out is not None and out.weight is not inp.weight:
        raise RuntimeError(f"{type(hf).__name__}: lm_head is no longer tied to the input embedding after loading")


def parameter_bytes(model: torch.nn.Module) -> tuple[int, int]:
    """(full, local) bytes of the model's parameters: global shapes vs the shards held here."""
    full = local = 0
    for p in model.parameters():
        full += p.numel() * p.element_size()
        held = p.to_local() if isinstance(p, DTensor) else p
        local += 0 if held.is_meta else held.numel() * held.element_size()
    return full, local
