"""The final Hugging Face export: ``save_pretrained`` of the trained student and its processor.

Rank 0 gathers the full state dict from the FSDP2 shards, loads it into a fresh copy of the
student on CPU and saves it. LoRA runs export the merged model, the peft adapter, or both.
The directory loads with ``AutoModelForImageTextToText`` (and vLLM); the adapter with ``peft``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any

import torch
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

from zwz_ray.logs import get_logger
from zwz_ray.models import load_vlm, resolve_model
from zwz_ray.train.config import DistillConfig
from zwz_ray.train.parallel import apply_lora

log = get_logger(__name__)

MODEL_DIR, ADAPTER_DIR = "model", "adapter"


def join_uri(base: str, name: str) -> str:
    return f"{base.rstrip('/')}/{name}"


def is_remote(uri: str) -> bool:
    return "://" in uri and not uri.startswith("file://")


def put_dir(local: str, dest: str) -> None:
    """Replace ``dest`` (local path or fsspec URI) with the contents of ``local``."""
    if not is_remote(dest):
        dest = dest.removeprefix("file://")
        if os.path.isdir(dest):
            shutil.rmtree(dest)
        os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
        shutil.copytree(local, dest)
        return
    import fsspec

    fs, path = fsspec.core.url_to_fs(dest)
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
    fresh, processor = load_vlm(cfg.student, device="cpu", dtype="float32",
                                min_pixels=cfg.data.min_pixels, max_pixels=cfg.data.max_pixels)
    if cfg.lora.enabled:
        fresh = apply_lora(fresh, cfg.lora)
    load_exact(fresh, state)
    dtype = export_dtype(cfg, device)
    written = {}
    with tempfile.TemporaryDirectory(prefix="zwz_export_") as tmp:
        for name, target in _targets(cfg, fresh, dtype):
            local = os.path.join(tmp, name)
            target().save_pretrained(local)
            if name == MODEL_DIR:
                save_processor(processor, local, resolve_model(cfg.student))
            dest = join_uri(cfg.output.dir, name)
            put_dir(local, dest)
            written[name] = dest
    log.info("exported %s", ", ".join(f"{k} -> {v}" for k, v in written.items()))
    return written


def _targets(cfg: DistillConfig, model: Any, dtype: torch.dtype) -> list[tuple[str, Any]]:
    """What to save, in order: for LoRA the adapter (kept in fp32, it is small) before merging in fp32."""
    if not cfg.lora.enabled:
        return [(MODEL_DIR, lambda: model.to(dtype))]
    out = []
    if cfg.lora.export in ("adapter", "both"):
        out.append((ADAPTER_DIR, lambda: model))
    if cfg.lora.export in ("merged", "both"):
        out.append((MODEL_DIR, lambda: model.merge_and_unload().to(dtype)))
    return out


def load_exact(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a full state dict; only weights tied to another key may be absent."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {n for n, p in model.named_parameters(remove_duplicate=False)} - {n for n, _ in model.named_parameters()}
    missing = [k for k in missing if k not in tied]
    if missing or unexpected:
        raise RuntimeError(f"exported state does not match the student: missing {missing[:5]}, unexpected {unexpected[:5]}")


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
