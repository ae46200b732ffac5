"""Model inference behind one interface; ``build_engine`` picks the backend from the config.

Backends are imported lazily, so ``import zwz_ray.engines`` never imports vllm, httpx or
a model.
"""

from __future__ import annotations

from zwz_ray.config import EngineConfig
from zwz_ray.engines.backends import build_engine
from zwz_ray.engines.base import (
    ChatRequest,
    ChatResult,
    Engine,
    EngineStats,
    Grammar,
    SamplingParams,
    as_pil,
    message_images,
    system_message,
    template_messages,
    user_message,
)
from zwz_ray.engines.structured import describe_schema, parse_json, with_schema_instruction

__all__ = [
    "ChatRequest",
    "ChatResult",
    "Engine",
    "EngineConfig",
    "EngineStats",
    "Grammar",
    "SamplingParams",
    "as_pil",
    "build_engine",
    "connect",
    "describe_schema",
    "message_images",
    "parse_json",
    "system_message",
    "template_messages",
    "user_message",
    "with_schema_instruction",
]


def connect(config: EngineConfig, served: dict | None = None) -> Engine:
    """The engine a stage uses for ``config``: a client of its Serve deployment when ``served`` (model key ->
    :class:`~zwz_ray.engines.deployments.DeploymentRef`) holds the model, else the model loaded here."""
    if served:
        from zwz_ray.engines.deployments import model_key

        ref = served.get(model_key(config))
        if ref is not None:
            from zwz_ray.engines.served import ServedEngine

            return ServedEngine(config, ref)
    return build_engine(config)
