"""Logging set up once per process, the same way on the driver and in Ray workers."""

from __future__ import annotations

import logging
import os

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_configured = False


def setup_logging(level: str | int | None = None) -> None:
    """Configure the ``zwz_ray`` logger (idempotent). Level from ``ZWZ_LOG_LEVEL`` by default."""
    global _configured
    if _configured:
        return
    level = level or os.environ.get("ZWZ_LOG_LEVEL", "INFO")
    logger = logging.getLogger("zwz_ray")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(_FORMAT, datefmt="%H:%M:%S"))
        logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    _configured = True


def get_logger(name: str) -> logging.Logger:
    setup_logging()
    return logging.getLogger(name if name.startswith("zwz_ray") else f"zwz_ray.{name}")
