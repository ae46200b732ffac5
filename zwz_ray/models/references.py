"""Model references: what a reference names, where it resolves to, and the cache that holds builds.

A model reference is one of
  * ``tiny:<family>`` or ``tiny:<family>@<seed>``: a small random model generated offline
    (config + byte-level BPE tokenizer + image processor), cached on disk and then loaded
    exactly like a real checkpoint;
  * a local directory holding a saved checkpoint (a bare path or ``file://``; ``~`` is expanded);
  * a remote URI (``s3://``, ``gs://``, ...) copied once into the cache with fsspec;
  * anything else is a Hugging Face hub id handed to transformers unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from zwz_ray import uris
from zwz_ray.models.tiny import BUILDER_VERSION, TINY_FAMILIES, build

TINY_PREFIX = "tiny:"
VLM_FAMILIES: tuple[str, ...] = ("qwen2_5_vl", "qwen3_vl", "idefics3")


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
    if uris.is_remote(root):  # models are loaded from local files; remote checkpoints are copied into this cache
        raise ValueError(f"the model cache must be a local directory, not {root!r} (cache_dir or $ZWZ_CACHE_DIR)")
    return Path(uris.local_path(root))


def resolve_model(ref: str, cache_dir: str | None = None) -> str:
    """Turn a model reference into something ``from_pretrained`` accepts (usually a local dir)."""
    if is_tiny(ref):
        family, seed = parse_tiny(ref)
        target = cache_root(cache_dir) / f"{family}-s{seed}-v{BUILDER_VERSION}"
        return str(_build_once(target, lambda out: build(family, out, seed)))
    if uris.is_remote(ref):
        name = hashlib.sha1(ref.encode()).hexdigest()[:16]
        target = cache_root(cache_dir) / "remote" / f"{Path(ref.rstrip('/')).name}-{name}"
        return str(_build_once(target, lambda out: _download(ref, out)))
    local = uris.local_path(ref)
    if os.path.isdir(local) or ref.startswith(uris.FILE_SCHEME):
        return local
    return ref


def _build_once(target: Path, build_into: Callable[[Path], None]) -> Path:
    """Run ``build_into`` on a temp dir and rename it to ``target``; a file lock makes concurrent callers wait."""
    from filelock import FileLock

    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if target.is_dir():
            return target
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            build_into(tmp)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _download(uri: str, out: Path) -> None:
    """Copy a remote checkpoint directory into ``out`` with fsspec."""
    fs, path = uris.filesystem(uri)
    if not fs.exists(path):
        raise FileNotFoundError(f"remote model {uri!r} does not exist")
    fs.get(path.rstrip("/") + "/", str(out), recursive=True)


def from_pretrained(cls: Any, path: str, **kwargs: Any) -> Any:
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


def _config_dict(path: str) -> dict:
    config_file = Path(path) / "config.json"
    if config_file.is_file():
        return json.loads(config_file.read_text())
    from transformers import AutoConfig

    return from_pretrained(AutoConfig, path).to_dict()


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
