"""Model references, loaders, processors and tiny offline models.

    from zwz_ray.models import load_vlm
    model, processor = load_vlm("tiny:qwen2_5_vl@0", max_pixels=128 * 128)

Modules, each importing only those above it (a DAG; see tests/test_models.py):
  processors       SAM3 PIL image processor, inert video processor, assembly without torchvision (leaf)
  tiny_tokenizers  byte-level BPE tokenizers and chat templates of the tiny models (leaf)
  tiny             one builder per tiny family (``tiny:<family>@<seed>``), BUILDER_VERSION
  references       reference kinds (tiny, local dir, remote URI, hub id), resolution, cache, family
  loaders          load_vlm, load_text_model, load_grounding, load_processor, dtypes, pixel limits

Importing this package loads neither torch nor transformers; the loaders import them when called.
"""

from zwz_ray.models.loaders import (
    apply_pixel_limits,
    load_grounding,
    load_processor,
    load_text_model,
    load_vlm,
    resolve_dtype,
)
from zwz_ray.models.references import (
    TINY_PREFIX,
    VLM_FAMILIES,
    cache_root,
    is_tiny,
    model_family,
    parse_tiny,
    resolve_model,
)
from zwz_ray.models.tiny import BUILDER_VERSION, TINY_FAMILIES

__all__ = [
    "BUILDER_VERSION",
    "TINY_FAMILIES",
    "TINY_PREFIX",
    "VLM_FAMILIES",
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
