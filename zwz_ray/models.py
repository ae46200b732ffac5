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
from transformers.image_processing_base import ImageProcessingMixin

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


class Sam3PilImageProcessor(ImageProcessingMixin):
    """SAM3 image pre/post-processing with PIL and torch only (the maths of transformers' Sam3ImageProcessor)."""

    model_input_names = ["pixel_values"]

    def __init__(
        self, size: dict | None = None, image_mean: list | None = None, image_std: list | None = None, **_: Any
    ):
        super().__init__()
        self.size = dict(size or {"height": 1008, "width": 1008})
        self.image_mean = list(image_mean or (0.5, 0.5, 0.5))
        self.image_std = list(image_std or (0.5, 0.5, 0.5))

    def __call__(self, images: Any, segmentation_maps: Any = None, return_tensors: Any = None, **_: Any) -> Any:
        return self.preprocess(images, return_tensors=return_tensors)

    def preprocess(self, images: Any, return_tensors: Any = None, **_: Any) -> Any:
        """Resize to ``size`` (bilinear), scale to [0, 1], normalise; returns pixel_values and original_sizes."""
        import numpy as np
        from PIL import Image
        from transformers import BatchFeature

        images = images if isinstance(images, (list, tuple)) else [images]
        mean = np.asarray(self.image_mean, dtype=np.float32)
        std = np.asarray(self.image_std, dtype=np.float32)
        pixels, sizes = [], []
        for image in images:
            image = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
            image = image.convert("RGB")
            sizes.append([image.height, image.width])
            resized = image.resize((self.size["width"], self.size["height"]), Image.BILINEAR)
            array = (np.asarray(resized, dtype=np.float32) / 255.0 - mean) / std
            pixels.append(array.transpose(2, 0, 1))
        data = {"pixel_values": np.stack(pixels), "original_sizes": sizes}
        return BatchFeature(data=data, tensor_type=return_tensors)

    @staticmethod
    def _scores(outputs: Any) -> torch.Tensor:
        scores = outputs.pred_logits.sigmoid()
        if outputs.presence_logits is not None:
            scores = scores * outputs.presence_logits.sigmoid()
        return scores

    @staticmethod
    def _scale(boxes: torch.Tensor, target_sizes: Any) -> torch.Tensor:
        sizes = torch.as_tensor([list(s) for s in target_sizes], dtype=boxes.dtype, device=boxes.device)
        height, width = sizes.unbind(1)
        return boxes * torch.stack([width, height, width, height], dim=1)[:, None, :]

    def post_process_object_detection(self, outputs: Any, threshold: float = 0.3, target_sizes: Any = None):
        """Per image: {'scores', 'boxes' (x1, y1, x2, y2; pixels when target_sizes (h, w) are given)}."""
        return [
            {"scores": r["scores"], "boxes": r["boxes"]}
            for r in self.post_process_instance_segmentation(outputs, threshold, 0.5, target_sizes, masks=False)
        ]

    def post_process_instance_segmentation(
        self,
        outputs: Any,
        threshold: float = 0.3,
        mask_threshold: float = 0.5,
        target_sizes: Any = None,
        masks: bool = True,
    ) -> list[dict]:
        """Per image: {'scores', 'boxes', 'masks'} for instances scoring above ``threshold``."""
        scores, boxes = self._scores(outputs), outputs.pred_boxes
        if target_sizes is not None:
            if len(target_sizes) != len(scores):
                raise ValueError("pass one target size per image")
            boxes = self._scale(boxes, target_sizes)
        results = []
        for index, (image_scores, image_boxes) in enumerate(zip(scores, boxes)):
            keep = image_scores > threshold
            result = {"scores": image_scores[keep], "boxes": image_boxes[keep]}
            if masks:
                probs = outputs.pred_masks[index][keep].sigmoid()
                if target_sizes is not None and len(probs):
                    size = tuple(int(v) for v in target_sizes[index])
                    probs = torch.nn.functional.interpolate(probs[None], size=size, mode="bilinear")[0]
                result["masks"] = (probs > mask_threshold).long()
            results.append(result)
        return results


# --------------------------------------------------------------------------------------------
# Tiny offline models
# --------------------------------------------------------------------------------------------

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
