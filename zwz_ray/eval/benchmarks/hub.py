"""Where a hub benchmark is read from when offline: the local Hugging Face cache."""

from __future__ import annotations

import os

from zwz_ray.eval.loaders import BenchmarkError


def hub_local_copy(path: str) -> str:
    """``hf://datasets/ORG/NAME[/sub]`` -> the same files in the local Hugging Face cache when offline; else ``path``.

    Online the hub is read directly; with ``HF_HUB_OFFLINE=1`` the preset reads the snapshot that
    ``huggingface-cli download --repo-type dataset ORG/NAME`` left in the cache.
    """
    if not path.startswith("hf://datasets/") or os.environ.get("HF_HUB_OFFLINE", "").lower() not in ("1", "true", "yes"):
        return path
    from huggingface_hub import snapshot_download

    parts = path[len("hf://datasets/"):].strip("/").split("/")
    repo, sub = "/".join(parts[:2]), "/".join(parts[2:])
    repo = repo.split("@", 1)[0]
    try:
        local = snapshot_download(repo, repo_type="dataset", local_files_only=True, cache_dir=os.environ.get("HF_HUB_CACHE"))
    except Exception as exc:  # noqa: BLE001 - the hub client raises several types for "not cached"
        raise BenchmarkError(f"{path}: offline (HF_HUB_OFFLINE=1) and no local copy in the Hugging Face cache "
                             f"({type(exc).__name__}); run `huggingface-cli download --repo-type dataset {repo}` "
                             "or set benchmark.path to a local copy") from exc
    return os.path.join(local, sub) if sub else local
