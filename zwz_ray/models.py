"""Model references and loaders: HF ids, local or remote checkpoints, and tiny offline models.

A model reference is one of
  * ``tiny:<family>`` or ``tiny:<family>@<seed>``: a small random model generated offline
    (config + byte-level BPE tokenizer + image processor), cached on disk and then loaded
    exactly like a real checkpoint;
  * a local directory holding a saved checkpoint;
  * a remote URI (``s3://``, ``gs://``, ...) copied once into the cache with fsspec;
  * anything else is a Hugging Face hub id handed to transformers unchanged.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from zwz_ray.sam3_pil import Sam3PilImageProcessor

BUILDER_VERSION = 1
TINY_PREFIX = "tiny:"
TINY_FAMILIES: tuple[str, ...] = ("qwen2_5_vl", "qwen3_vl", "text", "idefics3", "sam3")
VLM_FAMILIES: tuple[str, ...] = ("qwen2_5_vl", "qwen3_vl", "idefics3")

# Pixel limits of the tiny Qwen image processors: 4..256 merged vision tokens per image.
QWEN2_5_PIXELS = (56 * 56 * 4, 448 * 448)
QWEN3_PIXELS = (64 * 64 * 4, 512 * 512)


# --------------------------------------------------------------------------------------------
# References and the cache
# --------------------------------------------------------------------------------------------


def is_tiny(ref: str) -> bool:
    """True for ``tiny:<family>[@seed]`` references."""
    return isinstance(ref, str) and ref.startswith(TINY_PREFIX)


def parse_tiny(ref: str) -> tuple[str, int]:
    """Split ``tiny:<family>[@seed]`` into (family, seed); unknown families list the known ones."""
    body = ref[len(TINY_PREFIX) :]
    family, _, seed = body.partition("@")
    if family not in TINY_FAMILIES:
        raise ValueError(
            f"unknown tiny model family {family!r} in {ref!r}; "
            f"known families: {', '.join(TINY_FAMILIES)} (write e.g. 'tiny:qwen2_5_vl@0')"
        )
    try:
        return family, int(seed) if seed else 0
    except ValueError:
        raise ValueError(f"bad seed {seed!r} in {ref!r}: expected an integer, e.g. 'tiny:{family}@1'") from None


def cache_root(cache_dir: str | None = None) -> Path:
    """Where built or downloaded models live: the argument, $ZWZ_CACHE_DIR, or ~/.cache/zwz_ray/models."""
    root = cache_dir or os.environ.get("ZWZ_CACHE_DIR") or os.path.join("~", ".cache", "zwz_ray", "models")
    return Path(root).expanduser()


def _is_remote(ref: str) -> bool:
    return "://" in ref and not ref.startswith("file://")


def resolve_model(ref: str, cache_dir: str | None = None) -> str:
    """Turn a model reference into something ``from_pretrained`` accepts (usually a local dir)."""
    if is_tiny(ref):
        family, seed = parse_tiny(ref)
        target = cache_root(cache_dir) / f"{family}-s{seed}-v{BUILDER_VERSION}"
        from zwz_ray.tiny_models import _TINY_BUILDERS  # lazy: tiny_models imports this module

        return str(_build_once(target, lambda out: _TINY_BUILDERS[family](out, seed)))
    if ref.startswith("file://"):
        ref = ref[len("file://") :]
    if _is_remote(ref):
        name = hashlib.sha1(ref.encode()).hexdigest()[:16]
        target = cache_root(cache_dir) / "remote" / f"{Path(ref.rstrip('/')).name}-{name}"
        return str(_build_once(target, lambda out: _download(ref, out)))
    if os.path.isdir(os.path.expanduser(ref)):
        return os.path.expanduser(ref)
    return ref


def _build_once(target: Path, build: Callable[[Path], None]) -> Path:
    """Run ``build`` into a temp dir and rename it to ``target``; a file lock makes concurrent callers wait."""
    from filelock import FileLock

    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if target.is_dir():
            return target
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            build(tmp)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _download(uri: str, out: Path) -> None:
    """Copy a remote checkpoint directory into ``out`` with fsspec."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(uri)
    if not fs.exists(path):
        raise FileNotFoundError(f"remote model {uri!r} does not exist")
    fs.get(path.rstrip("/") + "/", str(out), recursive=True)


def _config_dict(path: str) -> dict:
    config_file = Path(path) / "config.json"
    if config_file.is_file():
        return json.loads(config_file.read_text())
    from transformers import AutoConfig

    return _from_pretrained(AutoConfig, path).to_dict()


def model_family(ref_or_dir: str) -> str:
    """The family of a reference: 'qwen2_5_vl', 'qwen3_vl', 'idefics3', 'text', 'sam3', or config.model_type."""
    if is_tiny(ref_or_dir):
        return parse_tiny(ref_or_dir)[0]
    config = _config_dict(resolve_model(ref_or_dir))
    model_type = config.get("model_type", "")
    if model_type in VLM_FAMILIES or model_type in ("sam3", "owlv2"):
        return model_type
    if any(arch.endswith("ForCausalLM") for arch in config.get("architectures") or []):
        return "text"
    return model_type


def resolve_dtype(dtype: str | torch.dtype, device: str) -> torch.dtype:
    """``"auto"``: bfloat16 on a CUDA device that supports it, else float32; names map to torch dtypes."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        cuda = str(device).startswith("cuda") and torch.cuda.is_available()
        return torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float32
    names = {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "fp32": "float32", "float": "float32"}
    value = getattr(torch, names.get(dtype, dtype), None)
    if not isinstance(value, torch.dtype) or not value.is_floating_point:
        raise ValueError(f"unknown dtype {dtype!r}; use auto, bfloat16, float16 or float32")
    return value


# --------------------------------------------------------------------------------------------
# Loaders
# --------------------------------------------------------------------------------------------


def _from_pretrained(cls: Any, path: str, **kwargs: Any) -> Any:
    """``cls.from_pretrained`` with a clear message when a hub id cannot be reached."""
    try:
        return cls.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as err:
        if os.path.isdir(path):
            raise
        raise OSError(
            f"could not load {path!r} with {cls.__name__}: {err}\n"
            "If this is a Hugging Face id, check the name and network access (or HF_HUB_OFFLINE and the "
            f"local HF cache); for offline work use a local directory or a tiny model ({TINY_PREFIX}<family>, "
            f"families: {', '.join(TINY_FAMILIES)})."
        ) from err


def _prepare_for_generation(tokenizer: Any) -> Any:
    """Left padding and a pad token, as batched generation needs."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def apply_pixel_limits(processor: Any, min_pixels: int | None, max_pixels: int | None) -> Any:
    """Bound the pixels per image of a VLM processor (Qwen: size edges; Idefics3: longest edge)."""
    image_processor = processor.image_processor
    size = dict(image_processor.size or {})
    if "shortest_edge" in size and "longest_edge" in size:
        if min_pixels is not None:
            size["shortest_edge"] = min_pixels
        if max_pixels is not None:
            size["longest_edge"] = max_pixels
    elif max_pixels is not None and "longest_edge" in size:
        tile = dict(getattr(image_processor, "max_image_size", None) or {}).get("longest_edge", 1)
        size["longest_edge"] = max(tile, int(max_pixels**0.5) // tile * tile)
    image_processor.size = size
    for name, value in (("min_pixels", min_pixels), ("max_pixels", max_pixels)):
        if value is not None and hasattr(image_processor, name):
            setattr(image_processor, name, value)
    return processor


def load_vlm(
    ref: str,
    *,
    device: str = "cpu",
    dtype: str = "auto",
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    attn_implementation: str | None = None,
) -> tuple[Any, Any]:
    """Load a vision-language model (eval mode) and its processor with pixel limits and left padding."""
    from transformers import AutoModelForImageTextToText

    path = resolve_model(ref)
    kwargs: dict[str, Any] = {"dtype": resolve_dtype(dtype, device)}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    model = _from_pretrained(AutoModelForImageTextToText, path, **kwargs).to(device).eval()
    processor = load_processor(path)
    _prepare_for_generation(processor.tokenizer)
    return model, apply_pixel_limits(processor, min_pixels, max_pixels)


def load_text_model(ref: str, *, device: str = "cpu", dtype: str = "auto") -> tuple[Any, Any]:
    """Load a causal language model (eval mode) and its tokenizer with left padding."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model(ref)
    model = _from_pretrained(AutoModelForCausalLM, path, dtype=resolve_dtype(dtype, device)).to(device).eval()
    return model, _prepare_for_generation(_from_pretrained(AutoTokenizer, path))


def load_grounding(ref: str, *, device: str = "cpu") -> tuple[Any, Any]:
    """Load a text-prompted grounding model (SAM3 or another AutoModel detector) and its processor."""
    from transformers import AutoModel

    path = resolve_model(ref)
    model = _from_pretrained(AutoModel, path).to(device).eval()
    return model, load_processor(path)


def load_processor(path: str) -> Any:
    """``AutoProcessor.from_pretrained``, rebuilt from its parts when torchvision is missing.

    Without torchvision, transformers cannot create video processors (required by the Qwen-VL
    processors) nor the SAM3 image processor; the processor is then assembled from the PIL image
    processor (``Sam3PilImageProcessor`` for SAM3), the tokenizer and an inert video processor.
    """
    from transformers import AutoProcessor

    try:
        return AutoProcessor.from_pretrained(path)
    except (ImportError, AttributeError, ValueError) as err:
        if _has_torchvision():
            raise OSError(f"could not load a processor from {path!r}: {err}") from err
    return _processor_without_torchvision(path)


def _has_torchvision() -> bool:
    import importlib.util

    return importlib.util.find_spec("torchvision") is not None


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _processor_without_torchvision(path: str) -> Any:
    import transformers
    from transformers import AutoImageProcessor, AutoTokenizer

    if not os.path.isdir(path):  # a hub id: its small config files from the hub or the local HF cache
        from huggingface_hub import snapshot_download

        path = snapshot_download(path, allow_patterns=["*.json", "*.jinja", "*.txt"])
    root = Path(path)
    config = _read_json(root / "processor_config.json")
    name = (
        config.get("processor_class")
        or _read_json(root / "preprocessor_config.json").get("processor_class")
        or _read_json(root / "tokenizer_config.json").get("processor_class")
    )
    processor_class = getattr(transformers, name or "", None)
    if processor_class is None:
        raise OSError(f"no processor class recorded in {path!r}; cannot assemble a processor without torchvision")
    parts: dict[str, Any] = {"tokenizer": _from_pretrained(AutoTokenizer, path)}
    if name == "Sam3Processor":
        image_config = config.get("image_processor") or _read_json(root / "preprocessor_config.json")
        parts["image_processor"] = Sam3PilImageProcessor(**image_config)
    else:
        parts["image_processor"] = _from_pretrained(AutoImageProcessor, path)
    if "video_processor" in processor_class.get_attributes():
        video_config = config.get("video_processor") or _read_json(root / "video_preprocessor_config.json")
        parts["video_processor"] = _inert_video_processor(video_config)
    template = root / "chat_template.jinja"
    if template.is_file() and "chat_template" in inspect.signature(processor_class.__init__).parameters:
        parts["chat_template"] = template.read_text()
    extra = {k: v for k, v in config.items() if k in inspect.signature(processor_class.__init__).parameters}
    return processor_class(**{**extra, **parts})


def _inert_video_processor(video_config: dict) -> Any:
    """A ``BaseVideoProcessor`` carrying the saved settings; it stands in where torchvision is missing."""
    import transformers.processing_utils as processing_utils
    from transformers.video_processing_utils import BaseVideoProcessor, VideoProcessorMixin

    # transformers only exports VideoProcessorMixin with torchvision; processors type-check against it.
    if not hasattr(processing_utils.transformers_module, "VideoProcessorMixin"):
        processing_utils.transformers_module.VideoProcessorMixin = VideoProcessorMixin
    settings = {k: v for k, v in video_config.items() if k != "video_processor_type"}
    return BaseVideoProcessor(**settings)


def __getattr__(name: str) -> Any:
    """Keep the tiny builders' private names (``_TINY_BUILDERS``, ``_build_*``, ...) reachable from here."""
    if name.startswith("_") and not name.startswith("__"):
        from zwz_ray import tiny_models

        if hasattr(tiny_models, name):
            return getattr(tiny_models, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BUILDER_VERSION",
    "QWEN2_5_PIXELS",
    "QWEN3_PIXELS",
    "TINY_FAMILIES",
    "VLM_FAMILIES",
    "Sam3PilImageProcessor",
    "apply_pixel_limits",
    "cache_root",
    "is_tiny",
    "load_grounding",
    "load_processor",
    "load_text_model",
    "load_vlm",
    "model_family",
    "parse_tiny",
    "resolve_dtype",
    "resolve_model",
]
