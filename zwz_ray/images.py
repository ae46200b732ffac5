"""Safe image I/O over fsspec and box geometry for Region-to-Image Distillation.

Everything here is a pure function of its inputs: no model code, no global state.
Bad input never escapes as a raw PIL/OS error: listing problems raise ``ImageInputError``
and unreadable or undecodable images raise ``ImageDecodeError`` whose ``reason`` is a short
machine-readable code that pipelines record as a drop reason.

Boxes are ``(x1, y1, x2, y2)`` in pixels (ints or floats), x to the right, y downwards.
"""

from __future__ import annotations

import glob as _glob
import io
import math
import warnings
from collections.abc import Iterable, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageOps, UnidentifiedImageError

from zwz_ray import uris

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tiff", ".tif", ".webp")
DEFAULT_MAX_PIXELS = 178_956_970  # Pillow's own hard limit (2 x Image.MAX_IMAGE_PIXELS)
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
OVERLAY_EXPAND_FRAC = 0.05  # the paper expands the box by 5% per side before drawing it
OVERLAY_WIDTH = 5
OVERLAY_COLOR = (255, 0, 0)

Box = Sequence[float]

# Magic numbers of the formats we list; used to tell "damaged image" from "not an image".
_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM",
               b"II*\x00", b"MM\x00*")


class ImageInputError(ValueError):
    """A path given as image input does not exist or cannot be listed."""


class ImageDecodeError(ValueError):
    """An image could not be read or decoded; ``reason`` is a short code.

    Codes: ``empty_file``, ``not_an_image``, ``truncated``, ``corrupt``,
    ``decompression_bomb``, ``unsupported_mode``, ``too_large``, ``not_found``, ``read_error``.
    """

    def __init__(self, reason: str, detail: str = ""):
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


# ---------------------------------------------------------------------------- listing


def _has_image_ext(path: str) -> bool:
    return path.lower().endswith(IMAGE_EXTENSIONS)


def _list_one(entry: str) -> list[str]:
    fs, path = uris.filesystem(entry)
    if _glob.has_magic(path):
        matches = fs.glob(path)
        if not matches:
            raise ImageInputError(f"image path not found: {entry!r} matches nothing")
    elif fs.exists(path):
        matches = [path]
    else:
        raise ImageInputError(f"image path not found: {entry!r}")
    files: list[str] = []
    for match in matches:
        files.extend(fs.find(match) if fs.isdir(match) else [match])
    images = [f for f in files if _has_image_ext(f)]
    return [uris.display(fs, f, like=entry) for f in images]


def list_images(paths: Iterable[str]) -> list[str]:
    """Image files under ``paths`` (folders recursively, files, globs, fsspec URIs).

    Sorted and de-duplicated. A path that does not exist (or a glob matching nothing)
    raises ``ImageInputError`` naming it; an existing path without images adds nothing.
    Paths come back in the form of the entry they were found under (``zwz_ray.uris.display``): remote
    URIs with their scheme (``memory:///a/b.png``), local paths absolute.
    """
    if isinstance(paths, str):
        paths = [paths]
    found: set[str] = set()
    for entry in paths:
        found.update(_list_one(str(entry)))
    return sorted(found)


def read_bytes(uri: str, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """Read a whole file (local path or fsspec URI), refusing files over ``max_bytes``."""
    try:
        fs, path = uris.filesystem(uri)
        size = fs.size(path)
        if size is not None and size > max_bytes:
            raise ImageDecodeError("too_large", f"{uri} is {size} bytes > {max_bytes}")
        with fs.open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except ImageDecodeError:
        raise
    except FileNotFoundError as e:
        raise ImageDecodeError("not_found", str(uri)) from e
    except (OSError, ValueError) as e:
        raise ImageDecodeError("read_error", f"{uri}: {e}") from e
    if len(data) > max_bytes:
        raise ImageDecodeError("too_large", f"{uri} is over {max_bytes} bytes")
    return data


# ---------------------------------------------------------------------------- decoding


def _open_header(data: bytes) -> Image.Image:
    """Open lazily (header only), classifying every failure."""
    if not data:
        raise ImageDecodeError("empty_file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:
        raise ImageDecodeError("decompression_bomb", str(e)) from e
    except UnidentifiedImageError as e:
        reason = "corrupt" if _looks_like_image(data) else "not_an_image"
        raise ImageDecodeError(reason, "cannot identify image") from e
    except Exception as e:  # noqa: BLE001 - plugins raise many types on bad headers
        raise _classify(e) from e


def _looks_like_image(data: bytes) -> bool:
    is_webp = data[:4] == b"RIFF" and data[8:12] == b"WEBP"
    return is_webp or data.startswith(_SIGNATURES)


def _classify(exc: Exception) -> ImageDecodeError:
    text = str(exc)
    if isinstance(exc, Image.DecompressionBombError):
        return ImageDecodeError("decompression_bomb", text)
    if isinstance(exc, EOFError) or "truncated" in text.lower():
        return ImageDecodeError("truncated", text)
    if isinstance(exc, MemoryError):
        return ImageDecodeError("decompression_bomb", "out of memory while decoding")
    return ImageDecodeError("corrupt", f"{type(exc).__name__}: {text}")


def probe_size(data: bytes) -> tuple[int, int]:
    """``(width, height)`` read from the header, without decoding the pixels."""
    img = _open_header(data)
    return int(img.width), int(img.height)


def decode_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode bytes to an RGB image, refusing more than ``max_pixels`` pixels.

    The pixel count is checked from the header before any pixel is decoded. Transparent
    images are composited on white, 16-bit grey is scaled to 8 bits, animated images give
    their first frame and EXIF orientation is applied. Pillow's own guard
    (``2 * Image.MAX_IMAGE_PIXELS``) still applies above ``max_pixels``; it is never changed.
    """
    img = _open_header(data)
    width, height = img.size
    if width <= 0 or height <= 0:
        raise ImageDecodeError("corrupt", f"bad size {width}x{height}")
    if width * height > max_pixels:
        raise ImageDecodeError("decompression_bomb", f"{width}x{height} > {max_pixels} pixels")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img.load()  # first frame only for animated images
            img = _apply_exif(img)
            return to_rgb(img)
    except ImageDecodeError:
        raise
    except Exception as e:  # noqa: BLE001 - classify every decoder failure
        raise _classify(e) from e


def _apply_exif(img: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - a broken EXIF block should not lose the image
        return img


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB (transparency composited on white)."""
    mode = img.mode
    if mode == "RGB" and "transparency" not in img.info:
        return img
    try:
        if mode.startswith("I") or mode == "F":
            return Image.fromarray(_to_uint8(np.asarray(img)), "L").convert("RGB")
        if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
            return _on_white(img)
        return img.convert("RGB")
    except ValueError as e:  # Pillow: "conversion from X to Y not supported"
        raise ImageDecodeError("unsupported_mode", f"{mode}: {e}") from e


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    """Scale 16/32-bit or float grey to 0..255."""
    arr = arr.astype(np.float32)
    lo, hi = float(arr.min()), float(arr.max())
    if lo >= 0 and hi <= 255:
        scaled = arr
    elif lo >= 0 and hi <= 65535:
        scaled = arr / 257.0
    else:
        scaled = (arr - lo) * (255.0 / max(hi - lo, 1e-12))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _on_white(img: Image.Image) -> Image.Image:
    rgba = img.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def encode_image(img: Image.Image, fmt: str = "PNG", quality: int = 95) -> bytes:
    """Encode to PNG or JPEG bytes (JPEG input is converted to RGB first)."""
    fmt = fmt.upper()
    fmt = "JPEG" if fmt == "JPG" else fmt
    if fmt not in ("PNG", "JPEG"):
        raise ValueError(f"unsupported output format {fmt!r}; use PNG or JPEG")
    buf = io.BytesIO()
    if fmt == "JPEG":
        if img.mode not in ("RGB", "L"):
            img = to_rgb(img)
        img.save(buf, "JPEG", quality=quality)
    else:
        img.save(buf, "PNG")
    return buf.getvalue()


# ---------------------------------------------------------------------------- geometry


def clamp_box(box: Box, w: float, h: float) -> tuple:
    """Order the corners and clamp them to the image ``[0, w] x [0, h]``."""
    x1, y1, x2, y2 = box
    x1, x2 = min(x1, x2), max(x1, x2)
    y1, y2 = min(y1, y2), max(y1, y2)
    return (min(max(x1, 0), w), min(max(y1, 0), h), min(max(x2, 0), w), min(max(y2, 0), h))


def box_area(box: Box) -> float:
    x1, y1, x2, y2 = box
    return max(0, x2 - x1) * max(0, y2 - y1)


def box_area_fraction(box: Box, w: float, h: float) -> float:
    """Area of the clamped box as a fraction of the image area."""
    if w <= 0 or h <= 0:
        raise ValueError(f"image size must be positive, got {w}x{h}")
    return box_area(clamp_box(box, w, h)) / float(w * h)


def is_empty_box(box: Box) -> bool:
    x1, y1, x2, y2 = box
    return x2 <= x1 or y2 <= y1


def expand_box(box: Box, frac: float, w: float, h: float) -> tuple:
    """Grow by ``frac`` of the box width/height on each side, then clamp to the image."""
    x1, y1, x2, y2 = box
    dx, dy = frac * (x2 - x1), frac * (y2 - y1)
    return clamp_box((x1 - dx, y1 - dy, x2 + dx, y2 + dy), w, h)


def scale_box(box: Box, sx: float, sy: float) -> tuple:
    x1, y1, x2, y2 = box
    return (x1 * sx, y1 * sy, x2 * sx, y2 * sy)


def relative_to_absolute(box: Box, w: float, h: float, scale: float = 1000) -> tuple:
    """Qwen3-VL style relative coordinates (0..``scale``) to pixels."""
    return scale_box(box, w / scale, h / scale)


def box_iou(a: Box, b: Box) -> float:
    inter = box_area((max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])))
    union = box_area(a) + box_area(b) - inter
    return inter / union if union > 0 else 0.0


def pixel_box(box: Box, w: int, h: int) -> tuple[int, int, int, int]:
    """Smallest integer box covering the clamped box (``x2``/``y2`` exclusive)."""
    x1, y1, x2, y2 = clamp_box(box, w, h)
    return (int(math.floor(x1)), int(math.floor(y1)), int(math.ceil(x2)), int(math.ceil(y2)))


# ---------------------------------------------------------------------------- crops, overlay


def micro_crop(img: Image.Image, box: Box, upscale: float = 2.0,
               resample: int = Image.Resampling.LANCZOS) -> Image.Image:
    """Clamp the box, crop it and upscale the crop (the paper: 2x Lanczos)."""
    pbox = pixel_box(box, img.width, img.height)
    if is_empty_box(pbox):
        raise ValueError(f"empty box {tuple(box)} for a {img.width}x{img.height} image")
    crop = img.crop(pbox)
    size = (max(1, round(crop.width * upscale)), max(1, round(crop.height * upscale)))
    return crop if size == crop.size else crop.resize(size, resample)


def draw_box_overlay(img: Image.Image, box: Box, width: int = OVERLAY_WIDTH,
                     color: tuple = OVERLAY_COLOR,
                     expand_frac: float = OVERLAY_EXPAND_FRAC) -> Image.Image:
    """A copy with a ``width``-px rectangle drawn inside the edges of the expanded box."""
    out = to_rgb(img).copy()
    x1, y1, x2, y2 = pixel_box(expand_box(box, expand_frac, img.width, img.height),
                               img.width, img.height)
    if x2 <= x1 or y2 <= y1:
        raise ValueError(f"empty box {tuple(box)} for a {img.width}x{img.height} image")
    ImageDraw.Draw(out).rectangle((x1, y1, x2 - 1, y2 - 1), outline=tuple(color), width=width)
    return out


def fit_pixels(img: Image.Image, min_pixels: int, max_pixels: int) -> Image.Image:
    """Resize keeping the aspect ratio so that ``min_pixels <= w * h <= max_pixels``.

    Returns the image itself when it already fits.
    """
    if min_pixels > max_pixels:
        raise ValueError(f"min_pixels {min_pixels} > max_pixels {max_pixels}")
    w, h = img.size
    pixels = w * h
    if pixels > max_pixels:
        s = math.sqrt(max_pixels / pixels)
        size = (max(1, math.floor(w * s)), max(1, math.floor(h * s)))
        return img.resize(size, Image.Resampling.LANCZOS)
    if pixels < min_pixels:
        s = math.sqrt(min_pixels / pixels)
        size = (math.ceil(w * s), math.ceil(h * s))
        if size[0] * size[1] > max_pixels:  # rounding up overshot a narrow window
            size = (math.floor(w * s), math.floor(h * s))
        return img.resize(size, Image.Resampling.BICUBIC)
    return img
