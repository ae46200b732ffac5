"""Loaders: a model reference in, an eval-mode model and its processor or tokenizer out.

torch and transformers are imported when a model is loaded, not when ``zwz_ray.models`` is imported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from zwz_ray.models.references import from_pretrained, resolve_model

if TYPE_CHECKING:
    import torch


def resolve_dtype(dtype: str | torch.dtype, device: str) -> torch.dtype:
    """``"auto"``: bfloat16 on a CUDA device that supports it, else float32; names map to torch dtypes."""
    import torch

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


def load_processor(path: str) -> Any:
    """``AutoProcessor.from_pretrained``, assembled from its parts when torchvision is missing
    (see ``zwz_ray.models.processors``)."""
    from transformers import AutoProcessor

    from zwz_ray.models.processors import has_torchvision, processor_without_torchvision

    try:
        return AutoProcessor.from_pretrained(path)
    except (ImportError, AttributeError, ValueError) as err:
        if has_torchvision():
            raise OSError(f"could not load a processor from {path!r}: {err}") from err
    return processor_without_torchvision(path)


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
    model = from_pretrained(AutoModelForImageTextToText, path, **kwargs).to(device).eval()
    processor = load_processor(path)
    _prepare_for_generation(processor.tokenizer)
    return model, apply_pixel_limits(processor, min_pixels, max_pixels)


def load_text_model(ref: str, *, device: str = "cpu", dtype: str = "auto") -> tuple[Any, Any]:
    """Load a causal language model (eval mode) and its tokenizer with left padding."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model(ref)
    model = from_pretrained(AutoModelForCausalLM, path, dtype=resolve_dtype(dtype, device)).to(device).eval()
    return model, _prepare_for_generation(from_pretrained(AutoTokenizer, path))


def load_grounding(ref: str, *, device: str = "cpu") -> tuple[Any, Any]:
    """Load a text-prompted grounding model (SAM3 or another AutoModel detector) and its processor."""
    from transformers import AutoModel

    path = resolve_model(ref)
    model = from_pretrained(AutoModel, path).to(device).eval()
    return model, load_processor(path)
