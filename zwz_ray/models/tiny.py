"""Tiny offline models: random checkpoints with a trained byte-level BPE tokenizer, one builder per family.

``zwz_ray.models.resolve_model`` runs ``build(family, out, seed)`` once per ``tiny:<family>@<seed>``
reference and caches the result under ``<family>-s<seed>-v<BUILDER_VERSION>``. A build is a pure
function of (family, seed, BUILDER_VERSION): tests/test_models.py pins the bytes of every saved file,
because the laptop configs' relaxed thresholds are tuned to these exact models. Change a builder's
output only together with BUILDER_VERSION.

Imports of torch and transformers happen inside the builders, so that ``import zwz_ray.models`` stays
light (the package's reference parsing needs only ``TINY_FAMILIES`` from here).
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from zwz_ray.models.tiny_tokenizers import (
    IDEFICS3_CHAT_TEMPLATE,
    QWEN_CHAT_TEMPLATE,
    clip_tokenizer,
    idefics3_tokenizer,
    qwen_tokenizer,
    qwen_vl_ids,
    token_ids,
)

BUILDER_VERSION = 1


def _text_dims(tokenizer: Any) -> dict[str, Any]:
    """Shared text-decoder sizes: 2 layers, hidden 128, 2 heads of 64 (vLLM CPU needs head_dim >= 32)."""
    return dict(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=4096,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def _save(out: Path, seed: int, model_factory: Callable[[], Any], processor: Any) -> None:
    """Create the model under ``torch.manual_seed(seed)`` and save model + processor/tokenizer to ``out``."""
    import torch

    torch.manual_seed(seed)
    model = model_factory()
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.pad_token_id = model.config.get_text_config().pad_token_id
    model.save_pretrained(out)
    processor.save_pretrained(out)


@dataclass(frozen=True)
class QwenVLSpec:
    """What differs between the tiny Qwen2.5-VL and Qwen3-VL: transformers class names, patch size,
    pixel limits, and the family-specific text, vision and image-processor settings."""

    config_class: str
    model_class: str
    processor_class: str
    video_processor_type: str
    patch_size: int
    pixels: tuple[int, int]  # (min, max) pixels per image: 4..256 merged vision tokens
    text: dict = field(default_factory=dict)
    vision: dict = field(default_factory=dict)
    image: dict = field(default_factory=dict)


QWEN_VL_SPECS: dict[str, QwenVLSpec] = {
    "qwen2_5_vl": QwenVLSpec(
        config_class="Qwen2_5_VLConfig",
        model_class="Qwen2_5_VLForConditionalGeneration",
        processor_class="Qwen2_5_VLProcessor",
        video_processor_type="Qwen2VLVideoProcessor",
        patch_size=14,
        pixels=(56 * 56 * 4, 448 * 448),
        text={"rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [8, 12, 12]}},
        vision={"window_size": 112, "fullatt_block_indexes": [1]},
    ),
    "qwen3_vl": QwenVLSpec(
        config_class="Qwen3VLConfig",
        model_class="Qwen3VLForConditionalGeneration",
        processor_class="Qwen3VLProcessor",
        video_processor_type="Qwen3VLVideoProcessor",
        patch_size=16,
        pixels=(64 * 64 * 4, 512 * 512),
        text={
            "head_dim": 64,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 10000.0,
                "mrope_section": [12, 10, 10],
                "mrope_interleaved": True,
            },
        },
        vision={"num_position_embeddings": 64, "deepstack_visual_indexes": [0]},
        image={"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]},
    ),
}


def _build_qwen_vl(spec: QwenVLSpec, out: Path, seed: int) -> None:
    """A 2-layer Qwen-VL (vision tower + text decoder) with its image, video and chat processors."""
    import transformers
    from transformers import Qwen2VLImageProcessorPil

    from zwz_ray.models.processors import inert_video_processor

    tokenizer = qwen_tokenizer()
    # Copies: transformers may normalise config dicts in place, and a spec must serve every build alike.
    spec = copy.deepcopy(spec)
    text = {**_text_dims(tokenizer), **spec.text}
    vision = dict(
        depth=2,
        hidden_size=128,
        intermediate_size=256,
        num_heads=2,
        patch_size=spec.patch_size,
        spatial_merge_size=2,
        temporal_patch_size=2,
        out_hidden_size=text["hidden_size"],
        **spec.vision,
    )
    config_class = getattr(transformers, spec.config_class)
    config = config_class(text_config=text, vision_config=vision, tie_word_embeddings=True, **qwen_vl_ids(tokenizer))
    min_pixels, max_pixels = spec.pixels
    patches = dict(patch_size=spec.patch_size, merge_size=2, temporal_patch_size=2)
    size = {"shortest_edge": min_pixels, "longest_edge": max_pixels}
    image_processor = Qwen2VLImageProcessorPil(size=size, **patches, **spec.image)
    video_processor = inert_video_processor(dict(**patches, size=dict(size)))
    processor = getattr(transformers, spec.processor_class)(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=QWEN_CHAT_TEMPLATE,
    )
    model_class = getattr(transformers, spec.model_class)
    _save(out, seed, lambda: model_class(config), processor)
    _patch_processor_config(out, "video_processor", video_processor_type=spec.video_processor_type)


def _build_text(out: Path, seed: int) -> None:
    from transformers import Qwen3Config, Qwen3ForCausalLM

    tokenizer = qwen_tokenizer()
    config = Qwen3Config(**_text_dims(tokenizer), head_dim=64, tie_word_embeddings=True)
    _save(out, seed, lambda: Qwen3ForCausalLM(config), tokenizer)


def _build_idefics3(out: Path, seed: int) -> None:
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessorPil,
        Idefics3Processor,
    )

    tokenizer = idefics3_tokenizer()
    text = _text_dims(tokenizer)
    text.update(model_type="llama", head_dim=64, bos_token_id=tokenizer.bos_token_id, tie_word_embeddings=False)
    tile, patch, scale = 64, 16, 2
    vision = dict(
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=tile,
        patch_size=patch,
    )
    config = Idefics3Config(
        text_config=text,
        vision_config=vision,
        scale_factor=scale,
        tie_word_embeddings=False,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        pad_token_id=tokenizer.pad_token_id,
    )
    image_processor = Idefics3ImageProcessorPil(
        size={"longest_edge": 2 * tile},
        max_image_size={"longest_edge": tile},
        do_image_splitting=True,
    )
    processor = Idefics3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_len=(tile // patch) ** 2 // scale**2,
        chat_template=IDEFICS3_CHAT_TEMPLATE,
    )
    _save(out, seed, lambda: Idefics3ForConditionalGeneration(config), processor)


def _build_sam3(out: Path, seed: int) -> None:
    from transformers import Sam3Config, Sam3Model, Sam3Processor

    from zwz_ray.models.processors import Sam3PilImageProcessor

    tokenizer = clip_tokenizer()
    ids = token_ids(
        tokenizer, bos_token_id="<|startoftext|>", eos_token_id="<|endoftext|>", pad_token_id="<|endoftext|>"
    )
    side = 112  # 8 x 8 patches of 14 px
    config = Sam3Config(
        vision_config=dict(
            backbone_config=dict(
                hidden_size=64,
                intermediate_size=128,
                num_hidden_layers=2,
                num_attention_heads=2,
                image_size=side,
                patch_size=14,
                window_size=4,
                global_attn_indexes=[1],
                pretrain_image_size=side // 2,
            ),
            fpn_hidden_size=32,
            backbone_feature_sizes=[[32, 32], [16, 16], [8, 8]],
        ),
        text_config=dict(
            model_type="clip_text_model",
            vocab_size=len(tokenizer),
            hidden_size=64,
            intermediate_size=128,
            projection_dim=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=32,
            **ids,
        ),
        geometry_encoder_config=dict(hidden_size=32, num_layers=1, num_attention_heads=2, intermediate_size=64),
        detr_encoder_config=dict(hidden_size=32, num_layers=1, num_attention_heads=2, intermediate_size=64),
        detr_decoder_config=dict(
            hidden_size=32, num_layers=1, num_queries=16, num_attention_heads=2, intermediate_size=64
        ),
        mask_decoder_config=dict(hidden_size=32, num_attention_heads=2),
    )
    image_processor = Sam3PilImageProcessor(size={"height": side, "width": side})
    processor = Sam3Processor(image_processor=image_processor, tokenizer=tokenizer)
    _save(out, seed, lambda: Sam3Model(config), processor)
    # Saved under the stock class name so that machines with torchvision load transformers' own processor.
    _patch_processor_config(
        out,
        "image_processor",
        image_processor_type="Sam3ImageProcessor",
        mask_size={"height": 32, "width": 32},
        do_resize=True,
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        do_convert_rgb=True,
        resample=2,
    )


def _patch_processor_config(out: Path, section: str, **fields: Any) -> None:
    """Update one sub-processor's entry in a saved processor_config.json."""
    path = out / "processor_config.json"
    config = json.loads(path.read_text())
    config.setdefault(section, {}).update(fields)
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


BUILDERS: dict[str, Callable[[Path, int], None]] = {
    "qwen2_5_vl": partial(_build_qwen_vl, QWEN_VL_SPECS["qwen2_5_vl"]),
    "qwen3_vl": partial(_build_qwen_vl, QWEN_VL_SPECS["qwen3_vl"]),
    "text": _build_text,
    "idefics3": _build_idefics3,
    "sam3": _build_sam3,
}
TINY_FAMILIES: tuple[str, ...] = tuple(BUILDERS)


def build(family: str, out: Path, seed: int) -> None:
    """Write the tiny ``family`` model for ``seed`` into the (empty) directory ``out``.

    Inside an initialised torch.distributed process group (a Ray Train worker), transformers'
    ``save_pretrained`` writes weights on rank 0 only, so a build won by another rank's file lock would
    leave a processor-only directory in the cache. There the build runs in a fresh Python process."""
    if _in_process_group():
        build_in_subprocess(family, out, seed)
    else:
        BUILDERS[family](out, seed)


def _in_process_group() -> bool:
    dist = sys.modules.get("torch.distributed")
    return bool(dist is not None and dist.is_available() and dist.is_initialized())


def build_in_subprocess(family: str, out: Path, seed: int) -> None:
    """``build`` in a new interpreter that sees the caller's import path."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    cmd = [sys.executable, "-m", "zwz_ray.models.tiny", family, str(out), str(seed)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"building tiny:{family}@{seed} failed in a subprocess:\n{done.stderr[-2000:]}")


if __name__ == "__main__":
    build(sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]))
