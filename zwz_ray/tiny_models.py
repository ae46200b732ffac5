"""Tiny offline models: random checkpoints with a trained byte-level BPE tokenizer, one builder per family.

``zwz_ray.models.resolve_model`` runs ``_TINY_BUILDERS[family](out, seed)`` once per
``tiny:<family>@<seed>`` reference and caches the result under ``<family>-s<seed>-v<BUILDER_VERSION>``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from zwz_ray.models import QWEN2_5_PIXELS, QWEN3_PIXELS, _inert_video_processor
from zwz_ray.sam3_pil import Sam3PilImageProcessor

# A small English corpus for the tiny tokenizers: objects, colours, numbers, letters, JSON, digits.
_CORPUS = """
The red cup is on the wooden table next to a blue bottle. A small green plant sits by the window.
There are three yellow books, two black pens and one white phone on the desk. The sign reads OPEN.
What colour is the car? The car is red. How many people are in the picture? There are five people.
What is written on the board? The board says EXIT 24. Which object is inside the red box? A clock.
Answer with the option's letter. A. red B. blue C. green D. yellow. The answer is A. The answer is B.
The answer is C. The answer is D. Options: (A) two (B) three (C) four (D) five. Answer: C
Colours: red, orange, yellow, green, blue, purple, pink, brown, black, white, grey, gray, silver, gold.
Materials: wood, metal, glass, plastic, paper, stone, fabric, leather, rubber, ceramic, concrete.
Shapes: round, square, circle, triangle, rectangle, oval, star, heart, arrow, cross, line, dot.
Objects: cup, mug, bottle, chair, table, lamp, clock, sign, car, bus, bike, tree, dog, cat, bird, boat,
book, phone, laptop, screen, window, door, flag, ball, hat, shoe, bag, box, plate, bowl, fork, knife,
spoon, person, man, woman, child, building, street, road, house, roof, wall, light, logo, label, letter.
Numbers: zero one two three four five six seven eight nine ten eleven twelve twenty hundred thousand.
Digits: 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 25 30 42 50 64 99 100 128 256 512 1000 2026.
Letters: A B C D E F G H I J K L M N O P Q R S T U V W X Y Z a b c d e f g h i j k l m n o p q r s t u v w x y z.
Spatial words: left, right, top, bottom, above, below, behind, in front of, next to, near, far, between.
Scene words: kitchen, office, street, park, beach, shop, room, garden, station, market, indoors, outdoors.
JSON: {"objects": ["red cup", "blue bottle"], "count": 3, "valid": true, "answer": "B", "score": 0.75}
[{"question": "What colour is the cup?", "answer": "red"}, {"question": "How many?", "answer": "2"}]
{"box": [12, 34, 56, 78], "label": "clock", "bbox_2d": [100, 200, 300, 400]} null false true
VALID: Yes. Reason: the object is unique. VALID: No. Reason: the answer is ambiguous.
Let me think step by step. The final answer is \\boxed{4}. <answer>A</answer> <answer>red</answer>
1. red cup 2. blue bottle 3. green plant 4. white sign 5. black cat - * : ; , . ! ? ' " ( ) [ ] { } < > / \\ | _ = + # @ % & $ ~
"""

_QWEN_SPECIALS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
_QWEN_ADDED = ["<tool_call>", "</tool_call>", "<think>", "</think>"]
_IDEFICS3_SPECIALS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<end_of_utterance>",
    "<|pad|>",
    "<fake_token_around_image>",
    "<image>",
    "<global-img>",
] + [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]
_CLIP_SPECIALS = ["<|startoftext|>", "<|endoftext|>"]

# ChatML for Qwen: content is a string or a list of text / image / video parts.
_QWEN_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' or part['type'] == 'image_url' -%}"
    "{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    "{%- elif part['type'] == 'video' -%}{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}"
    "{%- elif part['type'] == 'text' -%}{{- part['text'] -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

# Idefics3 style: "User:<image>text<end_of_utterance>\nAssistant:".
_IDEFICS3_CHAT_TEMPLATE = (
    "{{- '<|im_start|>' -}}"
    "{%- for message in messages -%}"
    "{{- message['role'] | capitalize -}}"
    "{%- if message['content'] is string -%}{{- ': ' + message['content'] -}}"
    "{%- else -%}"
    "{%- if message['content'] and message['content'][0]['type'] in ('image', 'image_url') -%}{{- ':' -}}"
    "{%- else -%}{{- ': ' -}}{%- endif -%}"
    "{%- for part in message['content'] -%}"
    "{%- if part['type'] in ('image', 'image_url') -%}{{- '<image>' -}}"
    "{%- elif part['type'] == 'text' -%}{{- part['text'] -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{- '<end_of_utterance>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- 'Assistant:' -}}{%- endif -%}"
)


def _train_tokenizer(
    special_tokens: list[str],
    *,
    vocab_size: int = 1024,
    chat_template: str | None = None,
    wrap: tuple[str, str] | None = None,
    **roles: str,
) -> Any:
    """A byte-level BPE fast tokenizer trained on ``_CORPUS``; special tokens take the first ids."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator([line for line in _CORPUS.splitlines() if line.strip()], trainer)
    if wrap:
        bos, eos = wrap
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A {eos}",
            pair=f"{bos} $A {eos} $B {eos}",
            special_tokens=[(bos, tokenizer.token_to_id(bos)), (eos, tokenizer.token_to_id(eos))],
        )
    else:
        tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, chat_template=chat_template, **roles)


def _qwen_tokenizer() -> Any:
    tokenizer = _train_tokenizer(
        _QWEN_SPECIALS,
        chat_template=_QWEN_CHAT_TEMPLATE,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
    )
    tokenizer.add_tokens(_QWEN_ADDED)
    return tokenizer


def _token_ids(tokenizer: Any, **names: str) -> dict[str, int]:
    return {field: tokenizer.convert_tokens_to_ids(token) for field, token in names.items()}


def _qwen_vl_ids(tokenizer: Any) -> dict[str, int]:
    return _token_ids(
        tokenizer,
        image_token_id="<|image_pad|>",
        video_token_id="<|video_pad|>",
        vision_start_token_id="<|vision_start|>",
        vision_end_token_id="<|vision_end|>",
    )


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
    torch.manual_seed(seed)
    model = model_factory()
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.pad_token_id = model.config.get_text_config().pad_token_id
    model.save_pretrained(out)
    processor.save_pretrained(out)


def _build_qwen2_5_vl(out: Path, seed: int) -> None:
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessorPil,
    )

    tokenizer = _qwen_tokenizer()
    text = _text_dims(tokenizer)
    text["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [8, 12, 12]}
    vision = dict(
        depth=2,
        hidden_size=128,
        intermediate_size=256,
        num_heads=2,
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
        window_size=112,
        fullatt_block_indexes=[1],
        out_hidden_size=text["hidden_size"],
    )
    config = Qwen2_5_VLConfig(
        text_config=text, vision_config=vision, tie_word_embeddings=True, **_qwen_vl_ids(tokenizer)
    )
    min_pixels, max_pixels = QWEN2_5_PIXELS
    image_processor = Qwen2VLImageProcessorPil(
        size={"shortest_edge": min_pixels, "longest_edge": max_pixels},
        patch_size=14,
        merge_size=2,
        temporal_patch_size=2,
    )
    video_processor = _inert_video_processor(
        dict(
            patch_size=14,
            merge_size=2,
            temporal_patch_size=2,
            size={"shortest_edge": min_pixels, "longest_edge": max_pixels},
        )
    )
    processor = Qwen2_5_VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=_QWEN_CHAT_TEMPLATE,
    )
    _save(out, seed, lambda: Qwen2_5_VLForConditionalGeneration(config), processor)
    _patch_processor_config(out, "video_processor", video_processor_type="Qwen2VLVideoProcessor")


def _build_qwen3_vl(out: Path, seed: int) -> None:
    from transformers import Qwen2VLImageProcessorPil, Qwen3VLConfig, Qwen3VLForConditionalGeneration, Qwen3VLProcessor

    tokenizer = _qwen_tokenizer()
    text = _text_dims(tokenizer)
    text["head_dim"] = 64
    text["rope_parameters"] = {
        "rope_type": "default",
        "rope_theta": 10000.0,
        "mrope_section": [12, 10, 10],
        "mrope_interleaved": True,
    }
    vision = dict(
        depth=2,
        hidden_size=128,
        intermediate_size=256,
        num_heads=2,
        patch_size=16,
        spatial_merge_size=2,
        temporal_patch_size=2,
        num_position_embeddings=64,
        deepstack_visual_indexes=[0],
        out_hidden_size=text["hidden_size"],
    )
    config = Qwen3VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=True, **_qwen_vl_ids(tokenizer))
    min_pixels, max_pixels = QWEN3_PIXELS
    image_processor = Qwen2VLImageProcessorPil(
        size={"shortest_edge": min_pixels, "longest_edge": max_pixels},
        patch_size=16,
        merge_size=2,
        temporal_patch_size=2,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    video_processor = _inert_video_processor(
        dict(
            patch_size=16,
            merge_size=2,
            temporal_patch_size=2,
            size={"shortest_edge": min_pixels, "longest_edge": max_pixels},
        )
    )
    processor = Qwen3VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=_QWEN_CHAT_TEMPLATE,
    )
    _save(out, seed, lambda: Qwen3VLForConditionalGeneration(config), processor)
    _patch_processor_config(out, "video_processor", video_processor_type="Qwen3VLVideoProcessor")


def _build_text(out: Path, seed: int) -> None:
    from transformers import Qwen3Config, Qwen3ForCausalLM

    tokenizer = _qwen_tokenizer()
    config = Qwen3Config(**_text_dims(tokenizer), head_dim=64, tie_word_embeddings=True)
    _save(out, seed, lambda: Qwen3ForCausalLM(config), tokenizer)


def _build_idefics3(out: Path, seed: int) -> None:
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessorPil,
        Idefics3Processor,
    )

    tokenizer = _train_tokenizer(
        _IDEFICS3_SPECIALS,
        chat_template=_IDEFICS3_CHAT_TEMPLATE,
        bos_token="<|im_start|>",
        eos_token="<end_of_utterance>",
        pad_token="<|pad|>",
        extra_special_tokens={"image_token": "<image>"},
    )
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
        chat_template=_IDEFICS3_CHAT_TEMPLATE,
    )
    _save(out, seed, lambda: Idefics3ForConditionalGeneration(config), processor)


def _build_sam3(out: Path, seed: int) -> None:
    from transformers import Sam3Config, Sam3Model, Sam3Processor

    tokenizer = _train_tokenizer(
        _CLIP_SPECIALS,
        wrap=("<|startoftext|>", "<|endoftext|>"),
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
    )
    ids = _token_ids(
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


_TINY_BUILDERS: dict[str, Callable[[Path, int], None]] = {
    "qwen2_5_vl": _build_qwen2_5_vl,
    "qwen3_vl": _build_qwen3_vl,
    "text": _build_text,
    "idefics3": _build_idefics3,
    "sam3": _build_sam3,
}
