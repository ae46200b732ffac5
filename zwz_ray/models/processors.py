"""Processors that work without torchvision: the SAM3 PIL image processor, an inert video processor,
and the assembly of a saved processor from its parts.

Without torchvision, transformers can create neither video processors (which the Qwen-VL processors
require) nor the SAM3 image processor. A leaf of ``zwz_ray.models``: it imports no other module of
the package.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
from pathlib import Path
from typing import Any

import torch
from transformers.image_processing_base import ImageProcessingMixin


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


def inert_video_processor(video_config: dict) -> Any:
    """A ``BaseVideoProcessor`` carrying the saved settings; it stands in where torchvision is missing."""
    import transformers.processing_utils as processing_utils
    from transformers.video_processing_utils import BaseVideoProcessor, VideoProcessorMixin

    # transformers only exports VideoProcessorMixin with torchvision; processors type-check against it.
    if not hasattr(processing_utils.transformers_module, "VideoProcessorMixin"):
        processing_utils.transformers_module.VideoProcessorMixin = VideoProcessorMixin
    settings = {k: v for k, v in video_config.items() if k != "video_processor_type"}
    return BaseVideoProcessor(**settings)


def has_torchvision() -> bool:
    return importlib.util.find_spec("torchvision") is not None


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def processor_without_torchvision(path: str) -> Any:
    """Assemble the processor saved at ``path`` (a local dir or hub id) from its PIL image processor
    (``Sam3PilImageProcessor`` for SAM3), its tokenizer and an inert video processor."""
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
    parts: dict[str, Any] = {"tokenizer": AutoTokenizer.from_pretrained(path)}
    if name == "Sam3Processor":
        image_config = config.get("image_processor") or _read_json(root / "preprocessor_config.json")
        parts["image_processor"] = Sam3PilImageProcessor(**image_config)
    else:
        parts["image_processor"] = AutoImageProcessor.from_pretrained(path)
    if "video_processor" in processor_class.get_attributes():
        video_config = config.get("video_processor") or _read_json(root / "video_preprocessor_config.json")
        parts["video_processor"] = inert_video_processor(video_config)
    accepted = inspect.signature(processor_class.__init__).parameters
    template = root / "chat_template.jinja"
    if template.is_file() and "chat_template" in accepted:
        parts["chat_template"] = template.read_text()
    extra = {k: v for k, v in config.items() if k in accepted}
    return processor_class(**{**extra, **parts})
