"""Where an image path written in a benchmark file is read from.

* A relative path resolves against the benchmark's folder and may not leave it (``../x`` is an
  error recorded on that item, never a read outside the benchmark).
* An absolute path (the reference's JSON files carry the machine paths they were made on) is not
  read where it points: it is remapped under ``benchmark.image_root``, chroot-style
  (``/data/zb/img/1.jpg`` -> ``<image_root>/data/zb/img/1.jpg``), or with ``benchmark.image_prefix``
  stripped first (prefix ``/data/zb`` -> ``<image_root>/img/1.jpg``). Without an image_root it is an error.
* A URI (``s3://``, ``hf://``...) names its own place and is read as given; ``file://`` is a local path.
"""

from __future__ import annotations

import os
import posixpath
import re

_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")


class ImagePathError(ValueError):
    """An image path the benchmark may not read: it escapes its folder, or is absolute without an image_root."""


def _is_absolute(path: str) -> bool:
    return path.startswith(("/", "\\")) or bool(_WINDOWS_DRIVE.match(path))


def _inside(root: str, rel: str, original: str) -> str:
    clean = posixpath.normpath(rel.replace("\\", "/"))
    if clean == ".." or clean.startswith("../") or _is_absolute(clean):
        raise ImagePathError(f"image path {original!r} leaves {root or 'the benchmark folder'}; paths must stay inside it")
    if not root:
        return clean
    return root.rstrip("/") + "/" + clean if "://" in root else os.path.join(root, clean)


def resolve_image_path(path: str, base_dir: str, image_root: str = "", image_prefix: str = "/") -> str:
    """The path to read for an image path found in a benchmark file (see the module docstring)."""
    if path.startswith("file://"):  # a local file, whatever its spelling: the same rule as a local path
        path = path[len("file://"):] or "/"
    if "://" in path:
        return path
    if not _is_absolute(path):
        return _inside(base_dir, path, path)
    if not image_root:
        raise ImagePathError(f"absolute image path {path!r}: set benchmark.image_root to the folder that now holds "
                             "these images (and benchmark.image_prefix to the part of the path to drop)")
    norm = posixpath.normpath(_WINDOWS_DRIVE.sub("/", path).replace("\\", "/"))
    prefix = "/" + posixpath.normpath(image_prefix or "/").strip("/")
    if prefix != "/" and norm != prefix and not norm.startswith(prefix + "/"):
        raise ImagePathError(f"absolute image path {path!r} is not under benchmark.image_prefix {image_prefix!r}")
    return _inside(image_root, norm[len(prefix):].lstrip("/") if prefix != "/" else norm.lstrip("/"), path)
