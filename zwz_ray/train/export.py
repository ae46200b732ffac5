"""The final Hugging Face export, written from one gathered copy of the weights.

Rank 0 gathers the full state dict from the FSDP2 shards onto its CPU and writes it straight to
safetensors (sharded past ``MAX_SHARD_BYTES``), cast tensor group by tensor group to the export
dtype, next to the source checkpoint's config, generation config and the processor: no second model
is built. Keys are renamed back to the checkpoint's original layout the way ``save_pretrained`` does
(``revert_weight_conversion``) and tied duplicates (``lm_head`` = ``embed_tokens``) are left out.
LoRA runs write the peft adapter (``adapter_config.json`` + ``adapter_model.safetensors``), the
merged model (W + scaling * B @ A folded into each adapted weight), or both. The directory loads
with ``AutoModelForImageTextToText`` (and vLLM); the adapter with ``peft``.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
from typing import Any

import torch
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

from zwz_ray import uris
from zwz_ray.logs import get_logger
from zwz_ray.models import resolve_model
from zwz_ray.train.config import DistillConfig
from zwz_ray.train.loading import load_student_processor
from zwz_ray.train.parallel import hf_model

log = get_logger(__name__)

MODEL_DIR, ADAPTER_DIR = "model", "adapter"
PEFT_PREFIX = "base_model.model."
MAX_SHARD_BYTES = 5 * 2**30  # the shard size Hugging Face's own uploads use


def put_dir(local: str, dest: str) -> None:
    """Replace ``dest`` (local path or fsspec URI) with the contents of ``local``."""
    if not uris.is_remote(dest):
        dest = uris.local_path(dest)
        if os.path.isdir(dest):
            shutil.rmtree(dest)
        os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
        shutil.copytree(local, dest)
        return
    fs, path = uris.filesystem(dest)
    if fs.exists(path):
        fs.rm(path, recursive=True)
    fs.put(local.rstrip("/") + "/", path, recursive=True)


def export_dtype(cfg: DistillConfig, device: torch.device) -> torch.dtype:
    if cfg.output.export_dtype != "auto":
        return getattr(torch, cfg.output.export_dtype)
    bf16 = cfg.trainer.precision == "bf16" or (cfg.trainer.precision == "auto" and device.type == "cuda")
    return torch.bfloat16 if bf16 else torch.float32


def gather_full_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Collective: the full (unsharded) state dict on rank 0's CPU; empty on other ranks."""
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def export_student(model: torch.nn.Module, cfg: DistillConfig, device: torch.device, rank: int) -> dict[str, str]:
    """Collective; rank 0 writes ``<output.dir>/model`` (and/or ``/adapter``) and returns the paths."""
    state = gather_full_state(model)
    if rank != 0:
        return {}
    source = resolve_model(cfg.student)
    written = {}
    with tempfile.TemporaryDirectory(prefix="zwz_export_") as tmp:
        if cfg.lora.enabled and cfg.lora.export in ("adapter", "both"):
            write_adapter(model, state, os.path.join(tmp, ADAPTER_DIR))
            written[ADAPTER_DIR] = uris.join(cfg.output.dir, ADAPTER_DIR)
        if not cfg.lora.enabled or cfg.lora.export in ("merged", "both"):
            if cfg.lora.enabled:
                state = merge_lora(model, state)
            local = os.path.join(tmp, MODEL_DIR)
            write_model(hf_model(model), state, local, export_dtype(cfg, device), source)
            save_processor(load_student_processor(cfg.student, cfg.data.min_pixels, cfg.data.max_pixels), local, source)
            written[MODEL_DIR] = uris.join(cfg.output.dir, MODEL_DIR)
        for name, dest in written.items():
            put_dir(os.path.join(tmp, name), dest)
    log.info("exported %s", ", ".join(f"{k} -> {v}" for k, v in written.items()))
    return written


def write_adapter(model: torch.nn.Module, state: dict[str, torch.Tensor], out: str) -> None:
    """The peft adapter as ``PeftModel.save_pretrained`` writes it, from the gathered state (kept fp32: it is small)."""
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    adapter = get_peft_model_state_dict(model, state_dict=state)
    os.makedirs(out, exist_ok=True)
    save_file({k: v.contiguous() for k, v in adapter.items()}, os.path.join(out, "adapter_model.safetensors"),
              metadata={"format": "pt"})
    config = copy.deepcopy(model.peft_config["default"])
    config.inference_mode = True
    config.save_pretrained(out)


def merge_lora(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Fold every adapter into its base weight (in place, fp32) and drop peft's key prefixes."""
    from peft.tuners.lora import LoraLayer

    for name, module in model.named_modules():
        if not isinstance(module, LoraLayer):
            continue
        if module.use_dora.get("default") or getattr(module, "fan_in_fan_out", False) or "default" not in module.lora_A:
            raise ValueError(f"cannot merge the adapter of {name}: only plain LoRA on linear layers is exported merged")
        a, b = state.pop(f"{name}.lora_A.default.weight"), state.pop(f"{name}.lora_B.default.weight")
        base = state[f"{name}.base_layer.weight"]
        base += module.scaling["default"] * (b.to(base.dtype) @ a.to(base.dtype))
    merged = {}
    for key, value in state.items():
        key = key.removeprefix(PEFT_PREFIX).replace(".base_layer.", ".")
        if ".lora_" in key:
            raise ValueError(f"unexpected adapter weight {key} left after merging")
        merged[key] = value
    return merged


def tied_duplicates(model: torch.nn.Module) -> set[str]:
    """Names under which a parameter appears a second time (the tied ``lm_head.weight``)."""
    every = {n for n, _ in model.named_parameters(remove_duplicate=False)}
    return every - {n for n, _ in model.named_parameters()}


def write_model(hf: Any, state: dict[str, torch.Tensor], out: str, dtype: torch.dtype, source: str) -> None:
    """Weights (from ``state``, consumed as they are written), config and generation config of a HF model."""
    from transformers import AutoConfig, GenerationConfig
    from transformers.core_model_loading import revert_weight_conversion

    # The student's own keys, as merge_lora leaves them (hf.state_dict() of a sharded model gathers nothing).
    expected = {k.replace(".base_layer.", ".") for k in hf.state_dict() if ".lora_" not in k}
    for key in tied_duplicates(hf):
        state.pop(key, None)
    unknown = sorted(set(state) - expected)
    missing = sorted(expected - set(state) - tied_duplicates(hf))
    if unknown or missing:
        raise RuntimeError(f"exported state does not match the student: missing {missing[:5]}, unexpected {unknown[:5]}")
    state = dict(revert_weight_conversion(hf, state))
    os.makedirs(out, exist_ok=True)
    write_safetensors(state, out, dtype)
    config = AutoConfig.from_pretrained(source)
    config.dtype = str(dtype).removeprefix("torch.")
    config.architectures = [type(hf).__name__]
    config.save_pretrained(out)
    try:
        GenerationConfig.from_pretrained(source).save_pretrained(out)
    except OSError:  # the source has none: the model's defaults apply when it is loaded
        pass


def write_safetensors(state: dict[str, torch.Tensor], out: str, dtype: torch.dtype) -> None:
    """``model.safetensors`` or ``model-0000i-of-0000n.safetensors`` + index; each group is cast just before it is written."""
    from safetensors.torch import save_file

    def cast(t: torch.Tensor) -> torch.Tensor:
        return (t.to(dtype) if t.is_floating_point() else t).contiguous()

    groups: list[list[str]] = [[]]
    size = 0
    for key, value in state.items():
        nbytes = value.numel() * (torch.empty((), dtype=dtype).element_size() if value.is_floating_point() else value.element_size())
        if groups[-1] and size + nbytes > MAX_SHARD_BYTES:
            groups.append([])
            size = 0
        groups[-1].append(key)
        size += nbytes
    if len(groups) == 1:
        save_file({k: cast(state.pop(k)) for k in groups[0]}, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
        return
    weight_map, total = {}, 0
    for i, keys in enumerate(groups, 1):
        name = f"model-{i:05d}-of-{len(groups):05d}.safetensors"
        tensors = {k: cast(state.pop(k)) for k in keys}
        total += sum(t.numel() * t.element_size() for t in tensors.values())
        save_file(tensors, os.path.join(out, name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(keys, name))
    with open(os.path.join(out, "model.safetensors.index.json"), "w", encoding="utf-8") as fh:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, fh, indent=2)


def save_processor(processor: Any, out: str, source_dir: str) -> None:
    """``processor.save_pretrained`` keeping the source's sub-processor types (e.g. the video processor)."""
    processor.save_pretrained(out)
    saved, original = os.path.join(out, "processor_config.json"), os.path.join(source_dir, "processor_config.json")
    if not (os.path.isfile(saved) and os.path.isfile(original)):
        return
    with open(saved, encoding="utf-8") as fh:
        config = json.load(fh)
    with open(original, encoding="utf-8") as fh:
        source = json.load(fh)
    for section, fields in source.items():
        if isinstance(fields, dict) and isinstance(config.get(section), dict):
            for key in (k for k in fields if k.endswith("_type")):
                config[section][key] = fields[key]
    with open(saved, "w", encoding="utf-8") as fh:
        json.dump(config, fh, indent=2, sort_keys=True)
