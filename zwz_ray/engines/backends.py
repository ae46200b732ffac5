"""``build_engine``: the model named by a config, loaded in this process behind the backend it asks for.

Backends are imported lazily, so importing this module never imports vllm, httpx or a model.
"""

from __future__ import annotations

from zwz_ray.config import EngineConfig
from zwz_ray.engines.base import Engine


def build_engine(config: EngineConfig) -> Engine:
    """Load the model named by ``config`` behind the backend it asks for."""
    if config.backend == "hf":
        from zwz_ray.engines.hf import HFEngine

        return HFEngine(config)
    if config.backend == "vllm":
        from zwz_ray.engines.vllm import VLLMEngine

        return VLLMEngine(config)
    if config.backend == "openai":
        from zwz_ray.engines.openai import OpenAIEngine

        return OpenAIEngine(config)
    raise ValueError(f"unknown engine backend {config.backend!r}; use hf, vllm or openai")
