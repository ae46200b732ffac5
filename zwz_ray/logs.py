"""Logging set up once per process, the same way on the driver and in Ray workers."""

from __future__ import annotations

import logging
import os
import sys

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
    _quiet_library_bars()
    _configured = True


def _quiet_library_bars() -> None:
    """No Hugging Face progress bars ("Loading weights", "Writing model shards") where stdout is not a
    terminal: every Ray worker (its stdout is a log file that Ray forwards to the driver, one line per
    redraw) and a piped driver. The environment variable covers a later import of transformers (it
    reads the setting once, at import); the calls cover an earlier one."""
    if stdout_is_terminal():
        return
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "huggingface_hub" in sys.modules:
        sys.modules["huggingface_hub"].utils.disable_progress_bars()
    if "transformers.utils.logging" in sys.modules:
        sys.modules["transformers.utils.logging"].disable_progress_bar()


def stdout_is_terminal() -> bool:
    """True when this process's stdout is a terminal (not a pipe, a file or a Ray worker's log)."""
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def get_logger(name: str) -> logging.Logger:
    setup_logging()
    return logging.getLogger(name if name.startswith("zwz_ray") else f"zwz_ray.{name}")
