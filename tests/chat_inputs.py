"""Inputs several engine tests send: a small two-colour image and a bounded yes/no verdict schema."""

from __future__ import annotations

from PIL import Image

VERDICT = {
    "type": "object",
    "properties": {"valid": {"enum": ["Yes", "No"]}, "reason": {"type": "string", "maxLength": 30}},
    "required": ["valid", "reason"],
}


def two_colour_image(color=(200, 40, 40)) -> Image.Image:
    """A 160 x 120 image of ``color`` with a blue square."""
    img = Image.new("RGB", (160, 120), color)
    img.paste((20, 20, 200), (40, 30, 90, 80))
    return img
